"""`ecgscale benchmark` on the real PTB-XL subset: three ecgscale runs and one external adapter
(ECGFounder's layout, random weights) x two tasks x linear probe and full fine-tuning, through the
CLI. The summary's AUROCs equal the probes' own, every interval holds its estimate, the mean row is
the mean of the tasks, the figures are written, and a rerun resumes (nothing recomputed; one
removed cell recomputed to the same numbers)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import torch

from ecgscale.cli.main import main
from ecgscale.evaluate.benchmark import BenchmarkConfig, run_benchmark
from ecgscale.models.external import get_adapter
from ecgscale.train import TrainConfig, pretrain

TASKS = ["ptbxl_superdiagnostic", "ptbxl_rhythm"]


@pytest.fixture(scope="module")
def models(ptbxl_100hz_store, tmp_path_factory) -> list[str]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("benchmark_models")
    refs = []
    for name, width, objective in (
        ("sl", 0.125, "sl"),
        ("wide", 0.25, "sl"),
        ("cmsc", 0.125, "cmsc"),
    ):
        extra = {"label_set": "superdiagnostic"} if objective == "sl" else {}
        config = TrainConfig(
            model="resnet", model_config={"width_multiplier": width, "kernel_size": 9},
            objective=objective, data=ptbxl_100hz_store.path, out=root / name, batch_size=32,
            samples=64, lr=3e-3, **extra,
        )  # fmt: skip
        pretrain(config, progress=False)
        refs.append(str(root / name))
    adapter = get_adapter("ecgfounder")
    small = dict(base_filters=8, filter_list=(8, 16, 16), m_blocks_list=(1, 2, 1), groups_width=4)
    adapter.save(adapter.random(seed=0, **small), root / "founder.pth")
    return [*refs, f"founder=ecgfounder:{root / 'founder.pth'}"]


def _cli(models: list[str], store: Path, out: Path, capsys) -> str:
    args = ["benchmark", "--store", str(store), "--out", str(out), "--protocol", "linear,full"]
    args += ["--steps", "3", "--batch-size", "16", "--n-boot", "200"]
    for model in models:
        args += ["--model", model]
    for task in TASKS:
        args += ["--task", task]
    assert _status(args) == 0
    return capsys.readouterr().out


def _status(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    return exit_.value.code


def test_benchmark_cli_table_figures_and_resume(models, ptbxl_100hz_store, tmp_path, capsys):
    out = tmp_path / "bench"
    printed = _cli(models, ptbxl_100hz_store.path, out, capsys)
    assert "16 of 16 cells computed" in printed
    summary = pd.read_csv(out / "summary.csv")
    table = pd.read_csv(out / "benchmark.csv")
    assert set(summary["model"]) == {"sl", "wide", "cmsc", "founder"}
    assert len(summary) == 4 * 2 * (len(TASKS) + 1)
    assert (summary["low"] <= summary["auroc"]).all() and (
        summary["auroc"] <= summary["high"]
    ).all()
    assert (summary["high"] - summary["low"] > 0.01).all()  # real intervals, not points
    # Each task's AUROC is the probe's / fine-tuning's own macro AUROC.
    macro = table[(table["metric"] == "auroc") & table["class"].isna()]
    for _, row in summary[summary["task"] != "mean"].iterrows():
        own = macro[
            (macro["model"] == row["model"]) & (macro["task"] == row["task"])
            & (macro["protocol"] == row["protocol"])
        ]["value"]  # fmt: skip
        assert own.item() == pytest.approx(row["auroc"], abs=1e-9)
    means = summary[summary["task"] == "mean"].set_index(["model", "protocol"])["auroc"]
    per_task = summary[summary["task"] != "mean"].groupby(["model", "protocol"])["auroc"].mean()
    pd.testing.assert_series_equal(means.sort_index(), per_task.sort_index(), check_names=False)
    assert mpimg.imread(out / "benchmark.png").shape[1] > 300
    assert re.search(r"founder\s+│\s+full", printed)
    # Resume: nothing recomputed; a removed cell is recomputed to the same numbers.
    assert "0 of 16 cells computed" in _cli(models, ptbxl_100hz_store.path, out, capsys)
    victim = sorted((out / "cells").glob("*.json"))[5]
    victim.unlink()
    assert "1 of 16 cells computed" in _cli(models, ptbxl_100hz_store.path, out, capsys)
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), summary)


def test_label_fractions_give_a_sample_efficiency_figure(models, ptbxl_100hz_store, tmp_path):
    config = BenchmarkConfig(
        models=models[:1] + models[-1:], tasks=TASKS[:1], stores={"ptbxl": ptbxl_100hz_store.path},
        protocols=["linear"], fractions=[0.1, 1.0], draws=2, n_boot=100,
    )  # fmt: skip
    result = run_benchmark(config, tmp_path / "eff")
    assert result.cells == 2 * (2 + 1)
    assert set(result.summary["draws"]) == {1, 2}
    assert (tmp_path / "eff" / "sample_efficiency.png").is_file()
    full = result.summary[result.summary["fraction"] == 1.0]["auroc"].to_numpy()
    tenth = result.summary[result.summary["fraction"] == 0.1]["auroc"].to_numpy()
    assert np.all(np.isfinite(full)) and np.all(np.isfinite(tenth))


def test_bad_benchmark_options_are_one_line(models, ptbxl_100hz_store, tmp_path, capsys):
    base = ["benchmark", "--store", str(ptbxl_100hz_store.path), "--task", TASKS[0]]
    assert _status([*base, "--model", models[0], "--protocol", "linear,zero-shot"]) == 2
    assert _status([*base, "--model", str(tmp_path / "no-run")]) == 2
    out = tmp_path / "regression"
    regression = ["--model", models[0], "--task", "ptbxl_age", "--out", str(out)]
    assert _status([*base, *regression]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "zero-shot" in err[0] and "no-run" in err[1]
    assert "ptbxl_age: benchmarks score AUROC" in err[2]
    assert not (tmp_path / "benchmark").exists()
    assert not out.exists()  # refused before anything was written
