"""The primary metric: the PhysioNet 2021 challenge score matches classes by name (not by
position), thresholds on validation, scores the whole test fold; a real run on real challenge
records is scored into the results store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecgscale.design.evaluate import (
    CHALLENGE_METRIC,
    add_challenge_scores,
    challenge_from_probabilities,
    challenge_tables_of,
    run_challenge_score,
)
from ecgscale.errors import DataError
from ecgscale.evaluate.challenge2021 import challenge_score, load_challenge_tables
from ecgscale.evaluate.metrics import tune_thresholds


@pytest.fixture(scope="module")
def tables(shared_data: Path):
    return load_challenge_tables(shared_data / "physionet2021_scoring")


def _scores(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < 0.2).astype(np.uint8)
    p = np.clip(0.6 * y + 0.5 * rng.random((n, k)), 0, 1)
    return y, p


def test_score_follows_class_names_not_column_positions(tables) -> None:
    classes = list(tables.names)
    y_val, p_val = _scores(300, len(classes), 0)
    y_test, p_test = _scores(200, len(classes), 1)
    score = challenge_from_probabilities(tables, classes, y_val, p_val, y_test, p_test)
    # the same as thresholding by hand and scoring in table order
    decisions = p_test >= tune_thresholds(y_val, p_val)[None, :]
    assert score == pytest.approx(challenge_score(tables, y_test > 0, decisions))
    order = np.random.default_rng(2).permutation(len(classes))
    shuffled = [classes[j] for j in order]
    same = challenge_from_probabilities(
        tables, shuffled, y_val[:, order], p_val[:, order], y_test[:, order], p_test[:, order]
    )
    assert same == pytest.approx(score, abs=1e-12)
    # outputs in another order than their names (the published code's mismatch) score otherwise
    wrong = challenge_from_probabilities(
        tables, classes, y_val, p_val[:, order], y_test, p_test[:, order]
    )
    assert wrong < score - 0.1
    perfect = challenge_from_probabilities(tables, classes, y_val, y_val, y_test, y_test)
    assert perfect == pytest.approx(1.0)


def test_unscored_class_is_refused(tables) -> None:
    y, p = _scores(20, 2, 0)
    with pytest.raises(DataError, match="'12345' is not scored"):
        challenge_from_probabilities(tables, [tables.names[0], "12345"], y, p, y, p)


def test_real_run_is_scored_into_the_results_store(shared_data: Path, tmp_path: Path) -> None:
    from ecgscale.data.prepare import prepare
    from ecgscale.data.preprocess import PreprocessConfig
    from ecgscale.study.planner import plan
    from ecgscale.study.results import Results
    from ecgscale.study.spec import parse_spec
    from ecgscale.train import pretrain
    from ecgscale.train.config import TrainConfig

    store = prepare(
        "physionet2021",
        shared_data / "cinc2021",
        tmp_path / "cinc",
        PreprocessConfig(fs=100, length=1000),
        scoring=shared_data / "physionet2021_scoring",
    )
    assert challenge_tables_of(store, "snomed") is None  # only the scored label set is scored
    spec = parse_spec(
        {
            "name": "t",
            "out": str(tmp_path / "study"),
            "stores": {"c": {"path": str(store.path)}},
            "pretrain_store": "c",
            "label_set": "scored",
            "families": [
                {
                    "name": "adamw",
                    "model": "anynet",
                    "objective": "sl",
                    "configs": {"net000": {"depth": 1, "w_init": 8, "w_0": 8, "w_a": 1}},
                }
            ],
            "budget": {"samples": 32},
        }
    )
    (run,) = plan(spec)
    config = TrainConfig(
        model="anynet",
        model_config=run.config["model_config"],
        objective="sl",
        data=store.path,
        label_set="scored",
        samples=32,
        batch_size=16,
        out=spec.out / "runs" / run.run_id,
    )
    pretrain(config, progress=False)
    results = Results(spec.out / "results.sqlite")
    results.add_planned([run])
    results.finish(run.run_id, {"n_params": 1}, [("id", "auroc", 0.5)])
    assert add_challenge_scores(spec, store.path, results) == 1
    metrics = results.metrics().set_index("metric")["value"]
    expected = run_challenge_score(config.out, store, challenge_tables_of(store, "scored"))
    assert metrics[CHALLENGE_METRIC] == pytest.approx(expected)
    assert metrics["auroc"] == 0.5 and results.runs()["n_params"].iloc[0] == 1  # kept
    assert add_challenge_scores(spec, store.path, results) == 0  # recorded once
