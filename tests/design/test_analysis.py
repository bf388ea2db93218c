"""The analysis recovers planted effects: a results table whose performance is built from known
design effects plus noise, over networks sampled from the default (Jabareen) space."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecgscale.design.analysis import analyze_groups, analyze_runs, encode_features
from ecgscale.design.sampler import sample_space
from ecgscale.design.space import load_space

SE_EFFECT = 0.02  # squeeze-and-excitation on
STAGES_EFFECT = -0.1  # more than 4 stages
SGDM_DEPTH_EFFECT = -0.02  # deep networks (> 12 blocks) with SGD + momentum only
NOISE = 0.005


@pytest.fixture(scope="module")
def planted() -> pd.DataFrame:
    space, _ = load_space()
    frame = sample_space(space, 180, seed=11).frame()
    rng = np.random.default_rng(5)
    perf = (
        0.6
        + SE_EFFECT * frame["se_ratio"].notna()
        + STAGES_EFFECT * (frame["stages"] > 4)
        + SGDM_DEPTH_EFFECT * ((frame["optimizer"] == "sgdm") & (frame["depth"] > 12))
        + rng.normal(0, NOISE, len(frame))
    )
    return frame.assign(perf=perf, kind="sampled")


@pytest.fixture(scope="module")
def analyses(planted: pd.DataFrame):
    return analyze_groups(planted, n_boot=10, seed=0, min_runs=40)


def _by_feature(analysis):
    return {imp.feature: imp for imp in analysis.importances}


def test_planted_ranking_and_directions_are_recovered(analyses) -> None:
    overall = analyses["all"]
    assert set(analyses) == {"all", "adamw", "sgd", "sgdm"}
    assert overall.ranking()[:2] == ["stages", "se_ratio"]
    imp = _by_feature(overall)
    assert imp["stages"].direction < 0 and imp["se_ratio"].direction > 0
    assert imp["stages"].rank_high == 1  # first in every bootstrap refit
    # per-level mean SHAP: the planted step at 4 stages and the SE gain
    stages = {int(k): v for k, v in imp["stages"].levels.items()}
    assert (
        max(v for k, v in stages.items() if k > 4)
        < -0.05
        < 0
        < min(v for k, v in stages.items() if k <= 4)
    )
    se = imp["se_ratio"].levels
    assert se["0.25"] - se["0"] == pytest.approx(SE_EFFECT, abs=0.006)
    # the cross-check agrees on what matters
    permutation = sorted(overall.importances, key=lambda i: -i.permutation)
    assert {p.feature for p in permutation[:2]} == {"stages", "se_ratio"}
    assert overall.score.r2 > 0.8 and overall.score.pearson_r > 0.9


def test_per_optimiser_analyses_find_their_own_effect(analyses) -> None:
    sgdm, adamw = _by_feature(analyses["sgdm"]), _by_feature(analyses["adamw"])
    assert sgdm["depth"].rank <= 3 and sgdm["depth"].direction < 0
    assert adamw["depth"].rank > 3
    assert analyses["sgdm"].ranking()[0] == "stages"


def test_noise_is_not_explained(planted: pd.DataFrame) -> None:
    noise = planted.assign(perf=np.random.default_rng(1).normal(0.6, 0.01, len(planted)))
    analysis = analyze_runs(noise, n_boot=0, seed=0)
    assert analysis.score.r2 < 0.1


def test_features_are_encoded_and_reused(planted: pd.DataFrame) -> None:
    x, codes = encode_features(planted, ["optimizer", "se_ratio", "depth"])
    assert codes == {"optimizer": {"adamw": 0.0, "sgd": 1.0, "sgdm": 2.0}}
    assert set(x["se_ratio"]) == {0.0, 0.25}  # SE off (null) is a ratio of 0
    one = planted.iloc[[0]].assign(optimizer="sgdm")
    again, _ = encode_features(one, ["optimizer"], codes)
    assert again["optimizer"].iloc[0] == 2.0  # a new row gets the table's code, not its own
