"""The sampler: seeded, within FLOP bounds, stratified; the study it writes runs with the study
runner's own spec and planner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ecgscale.design.pipeline import check_optimizers, sample_design
from ecgscale.design.sampler import sample_space
from ecgscale.design.space import load_space, parse_space
from ecgscale.errors import ConfigError
from ecgscale.models.anynet import anynet
from ecgscale.models.flops import build_on_meta, forward_flops
from ecgscale.study.planner import plan
from ecgscale.study.spec import load_spec

SYNTH_STUDY = {
    "stores": {"syn": {"synth": {"records": 200, "fs": 100, "length": 500, "seed": 0}}},
    "pretrain_store": "syn",
    "label_set": "code",
    "budget": {"samples": 64},
    "baselines": {"models": ["xresnet1d"], "per_model": 1, "lr": 0.002},
}


@pytest.fixture(scope="module")
def default_sample():
    space, _ = load_space()
    return sample_space(space, 36, seed=7)


def test_same_seed_same_networks_other_seed_others(default_sample) -> None:
    space = default_sample.space
    again = sample_space(space, 36, seed=7).frame()
    pd.testing.assert_frame_equal(default_sample.frame(), again)
    other = sample_space(space, 36, seed=8).frame()
    assert not other["config"].equals(again["config"])


def test_networks_fill_every_stratum_within_the_bounds(default_sample) -> None:
    frame = default_sample.frame()
    space = default_sample.space
    assert frame["flops"].between(space.flops.min, space.flops.max).all()
    # 3 decades x 3 optimisers, 4 networks each, each in its own decade
    assert len(default_sample.strata) == 9
    counts = frame.groupby(["stratum"]).size()
    assert (counts == 4).all() and len(counts) == 9
    decade = np.floor(np.log10(frame["flops"]))
    assert (frame.groupby(decade).size() == 12).all()
    for label, part in frame.groupby("stratum"):
        assert (part["optimizer"] == label.split("optimizer=")[1]).all()
    assert (frame["w_0"] >= frame["w_init"]).all()
    assert default_sample.draws == len(frame) + default_sample.out_of_bounds + default_sample.full


@pytest.mark.parametrize("row", [0, 17, 35])
def test_recorded_size_is_the_built_networks(default_sample, row: int) -> None:
    sample = default_sample.samples[row]
    model = build_on_meta(anynet, sample.config)
    assert sum(p.numel() for p in model.parameters()) == sample.params
    assert forward_flops(model, 12, default_sample.length) == pytest.approx(sample.flops, rel=0.01)
    assert model.embed_dim == sample.final_width


def test_unreachable_stratum_is_named() -> None:
    space = parse_space(
        {
            "name": "tiny",
            "flops": {"min": 1e6, "max": 1e12},
            "parameters": {"depth": {"type": "int", "low": 1, "high": 2}},
            "fixed": {"w_0": 8, "w_init": 8, "w_a": 1},
        }
    )
    with pytest.raises(ConfigError, match=r"200 draws did not fill \[1e\+06, 1e\+07\): 0 of 1"):
        sample_space(space, 6, seed=0, max_draws=200)


def test_written_study_is_a_runnable_spec(tmp_path: Path) -> None:
    space_path = tmp_path / "space.yaml"
    data = yaml.safe_load(Path("examples/design_space.yaml").read_text())
    data["flops"] = {"min": 1e5, "max": 1e7}
    data["study"] = SYNTH_STUDY
    space_path.write_text(yaml.safe_dump(data, sort_keys=False))
    sampled, written = sample_design(space_path, 3, tmp_path / "out", seed=1)
    assert sampled.length == 500  # FLOPs counted at the store's records, not the space's input
    spec = load_spec(written["study"])
    assert spec.out == (tmp_path / "out").resolve()
    runs = plan(spec)
    frame = pd.read_csv(written["samples"])
    sampled_runs = [r for r in runs if r.family == "adamw"]
    assert [r.size for r in sampled_runs] == frame["name"].tolist()
    for run, (_, row) in zip(sampled_runs, frame.iterrows(), strict=True):
        assert run.config["lr"] == pytest.approx(row["lr"])  # each network keeps its sampled lr
        assert run.config["model_config"]["depth"] == row["depth"]
    baselines = [r for r in runs if r.family == "baseline-xresnet1d"]
    assert len(baselines) == 1 and baselines[0].config["lr"] == 0.002


def test_run_refuses_optimisers_the_trainer_lacks() -> None:
    samples = pd.DataFrame({"optimizer": ["adamw", "sgdm", "lion"]})
    check_optimizers(samples.iloc[:2], Path("space.yaml"))  # both trainable
    with pytest.raises(ConfigError, match="lion sampled, but the trainer implements only"):
        check_optimizers(samples, Path("space.yaml"))
