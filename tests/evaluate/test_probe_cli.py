"""Task probes and the `ecgscale probe` / `ecgscale finetune` commands on the real data.

On PTB-XL (100 Hz), a 58K-parameter ResNet pre-trained for two epochs (SL on the rhythm statements)
gives better superdiagnostic and rhythm probes than the same architecture at random
initialisation; probing is deterministic; on the Challenge 2021 sample the challenge score is that
of the probe's thresholded test outputs against each record's raw SNOMED-CT codes; the commands
write one tidy table (one row per model x task x protocol x fraction x draw x metric).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ecgscale.cli.main import main
from ecgscale.data.prepare import prepare
from ecgscale.data.preprocess import PreprocessConfig
from ecgscale.evaluate.challenge2021 import (
    challenge_metrics,
    challenge_score,
    load_challenge_tables,
)
from ecgscale.evaluate.tasks import TABLE_COLUMNS, interval_table, probe_task
from ecgscale.tasks import get_task
from ecgscale.train import TrainConfig, pretrain
from ecgscale.train.checkpoint import load_tensors, save_tensors, with_prefix
from ecgscale.train.trainer import build_encoder, saved_config

GRID = [1e-3, 1e-2, 1e-1, 1.0, 10.0]
KEY = ["model", "task", "protocol", "fraction", "draw", "seed", "metric", "class"]


def _random_init(trained: Path, out: Path, seed: int = 0) -> Path:
    """A run directory holding the architecture of `trained` at its random initialisation."""
    _, meta = load_tensors(trained / "best.safetensors")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = build_encoder(*saved_config(meta))
    out.mkdir(parents=True)
    save_tensors(out / "best.safetensors", with_prefix("encoder", encoder.state_dict()), meta)
    return out


@pytest.fixture(scope="module")
def runs(ptbxl_100hz_store, tmp_path_factory) -> dict[str, Path]:
    """`pretrained`: SL on PTB-XL rhythm for two epochs; `random`: the same network untrained."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("probe_runs")
    config = TrainConfig(
        model="resnet",
        model_config={"width_multiplier": 0.125, "kernel_size": 9},
        objective="sl",
        label_set="rhythm",
        data=ptbxl_100hz_store.path,
        out=root / "pretrained",
        batch_size=32,
        lr=3e-3,
        epochs=2,
    )
    pretrain(config, progress=False)
    return {"pretrained": config.out, "random": _random_init(config.out, root / "random")}


@pytest.fixture(scope="module")
def cinc_store(shared_data: Path, tmp_path_factory):
    """The 134 Challenge 2021 sample records at 100 Hz x 1000 samples."""
    return prepare(
        "physionet2021",
        shared_data / "cinc2021",
        tmp_path_factory.mktemp("cinc") / "cinc2021",
        PreprocessConfig(fs=100, length=1000),
        scoring=shared_data / "physionet2021_scoring",
    )


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


@pytest.mark.parametrize("task", ["ptbxl_superdiagnostic", "ptbxl_rhythm"])
def test_pretrained_encoder_beats_random_init(runs, ptbxl_100hz_store, task: str) -> None:
    pre = probe_task(runs["pretrained"], task, ptbxl_100hz_store, c_grid=GRID)
    rnd = probe_task(runs["random"], task, ptbxl_100hz_store, c_grid=GRID)
    assert pre.n_test == rnd.n_test > 150
    assert pre.test_loss < 0.95 * rnd.test_loss
    assert pre.metrics["auroc"] > rnd.metrics["auroc"] + 0.02


def test_probing_is_deterministic(runs, ptbxl_100hz_store, tmp_path: Path) -> None:
    results = [
        probe_task(runs["pretrained"], "ptbxl_rhythm", ptbxl_100hz_store, c_grid=[0.01, 0.1],
                   cache_dir=tmp_path / name)
        for name in ("a", "b")
    ]  # fmt: skip
    assert results[0] == results[1]  # each from its own encoder pass
    np.testing.assert_array_equal(results[0].test_outputs, results[1].test_outputs)


def test_challenge_score_of_a_probe_on_cinc2021(
    runs, cinc_store, shared_data: Path, tmp_path: Path, capsys
) -> None:
    scoring = shared_data / "physionet2021_scoring"
    result = probe_task(runs["pretrained"], "physionet2021", cinc_store, c_grid=GRID)
    data = get_task("physionet2021").load(cinc_store)
    tables = load_challenge_tables(scoring)
    codes = cinc_store.meta["dx"].to_numpy()[data.rows[data.test]]
    labels = tables.encode_labels([c.split(",") for c in codes])
    assert labels.any(axis=0).sum() > 5  # the test records carry several scored classes
    decisions = result.test_outputs >= np.asarray(result.thresholds)
    outputs, scores = tables.encode_outputs(
        list(result.label_names), decisions, result.test_outputs
    )
    assert result.metrics["challenge"] == pytest.approx(challenge_score(tables, labels, outputs))
    official = challenge_metrics(tables, labels, outputs, scores).scores()
    assert {name: result.metrics[name] for name in official} == pytest.approx(official)

    out = tmp_path / "cinc.csv"
    code, _, _ = _cli(
        ["probe", "--checkpoint", str(runs["pretrained"]), "--task", "physionet2021",
         "--store", str(cinc_store.path), "--scoring", str(scoring), "--c-grid",
         ",".join(map(str, GRID)), "--out", str(out)],
        capsys,
    )  # fmt: skip
    assert code == 0
    table = pd.read_csv(out, keep_default_na=False)
    for name in official:
        row = table[(table.metric == name) & (table["class"] == "")]
        assert row.value.tolist() == pytest.approx([result.metrics[name]]), name


def test_probe_command_writes_one_tidy_table(
    runs, ptbxl_100hz_store, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "results" / "probe.csv"
    code, stdout, _ = _cli(
        ["probe", "--checkpoint", str(runs["pretrained"]), "--checkpoint", str(runs["random"]),
         "--task", "ptbxl_superdiagnostic", "--task", "ptbxl_age@ptb", "--store",
         f"ptb={ptbxl_100hz_store.path}", "--store", str(ptbxl_100hz_store.path),
         "--c-grid", ",".join(map(str, GRID)), "--out", str(out)],
        capsys,
    )  # fmt: skip
    assert code == 0 and f"wrote {out}" in " ".join(stdout.split())
    assert [p.name for p in out.parent.iterdir()] == ["probe.csv"]  # no temporary file left
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert not table.duplicated(KEY).any()
    assert set(table.model) == {str(runs["pretrained"]), str(runs["random"])}
    assert set(table.task) == {"ptbxl_superdiagnostic", "ptbxl_age@ptb"}
    loss = table[table.metric == "loss"].set_index(["model", "task"]).value
    for run in runs.values():
        for task, spec in (("ptbxl_superdiagnostic", "ptbxl_superdiagnostic"),
                           ("ptbxl_age", "ptbxl_age@ptb")):  # fmt: skip
            expected = probe_task(run, task, ptbxl_100hz_store, c_grid=GRID).test_loss
            assert loss[(str(run), spec)] == pytest.approx(expected, rel=1e-12)
    sup = table[(table.task == "ptbxl_superdiagnostic") & (table.metric == "auroc")]
    assert set(sup["class"]) == {"", "CD", "HYP", "MI", "NORM", "STTC"}
    assert {"mae", "r2", "c"} <= set(table[table.task == "ptbxl_age@ptb"].metric)

    # every metric with its bootstrap interval, per-class positives; printed as well
    wide = interval_table(table).set_index(["model", "task", "metric", "class"])
    for task, metrics in (("ptbxl_superdiagnostic", ("loss", "auroc", "auprc", "f1", "brier")),
                          ("ptbxl_age@ptb", ("loss", "mae", "mse", "r2"))):  # fmt: skip
        for metric in metrics:
            row = wide.loc[(str(runs["pretrained"]), task, metric, "")]
            assert row.lo <= row.value <= row.hi and row.lo < row.hi, (task, metric)
    data = get_task("ptbxl_superdiagnostic").load(ptbxl_100hz_store)
    n_pos = table[(table.metric == "n_pos") & (table.model == str(runs["pretrained"]))]
    n_pos = n_pos.set_index("class").value
    expected = dict(zip(data.classes, data.y[data.test].sum(axis=0), strict=True))
    assert n_pos.to_dict() == pytest.approx(expected)
    text = " ".join(stdout.split())
    assert re.search(r"AUROC 0\.\d{3} \[0\.\d{3}, [01]\.\d{3}\]", text)
    assert re.search(r"test loss \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", text)
    assert "95 % interval, 1000 bootstrap resamples" in text
    assert re.search(rf"NORM {int(expected['NORM'])} / {len(data.test)} 0\.\d{{3}} \[", text)


def test_probe_command_label_fractions(runs, ptbxl_100hz_store, tmp_path: Path, capsys) -> None:
    out = tmp_path / "fractions.parquet"
    code, _, _ = _cli(
        ["probe", "--checkpoint", str(runs["pretrained"]), "--task", "ptbxl_rhythm", "--store",
         str(ptbxl_100hz_store.path), "--fractions", "0.1,1", "--draws", "2", "--c-grid",
         "0.01,0.1,1", "--out", str(out)],
        capsys,
    )  # fmt: skip
    assert code == 0
    table = pd.read_parquet(out)
    n_train = table[table.metric == "n_train"].set_index(["fraction", "draw"]).value
    full = len(get_task("ptbxl_rhythm").load(ptbxl_100hz_store).train)
    assert n_train.to_dict() == {(0.1, 0): round(0.1 * full), (0.1, 1): round(0.1 * full),
                                 (1.0, 0): full}  # fmt: skip


def test_finetune_command(runs, ptbxl_100hz_store, tmp_path: Path, capsys) -> None:
    out = tmp_path / "finetune.csv"
    code, stdout, _ = _cli(
        ["finetune", "--checkpoint", str(runs["pretrained"]), "--task", "ptbxl_superdiagnostic",
         "--store", str(ptbxl_100hz_store.path), "--mode", "head", "--steps", "60",
         "--no-progress", "--out", str(out)],
        capsys,
    )  # fmt: skip
    assert code == 0 and "untrained" in stdout
    table = pd.read_csv(out, keep_default_na=False)
    assert set(table.protocol) == {"finetune_head"} and not table.duplicated(KEY).any()
    value = table[table["class"] == ""].set_index("metric").value
    assert value["loss"] < value["initial_loss"] and value["steps"] == 60
    assert 0.5 < value["auroc"] <= 1
    # the intervals come with the shared classification metrics
    assert value["auroc_lo"] <= value["auroc"] <= value["auroc_hi"]
    assert value["loss_lo"] <= value["loss"] <= value["loss_hi"] and value["n_boot"] == 1000
    assert set(table[table.metric == "n_pos"]["class"]) == {"CD", "HYP", "MI", "NORM", "STTC"}
    assert re.search(r"AUROC 0\.\d{3} \[0\.\d{3}, [01]\.\d{3}\]", " ".join(stdout.split()))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "ptbxl_rhythm@nope", "--store", "x={store}"], "no store named 'nope'"),
        (["--task", "physionet2021", "--store", "{store}"], "no stores of dataset"),
        (["--task", "ptbxl_rhythm", "--store", "a={store}", "--store", "a={store}"], "new, non"),
        (["--task", "ptbxl_rhythm", "--store", "{store}", "--fractions", "x"], "--fractions"),
        (["--task", "ptbxl_rhythm", "--store", "{store}", "--out", "r.txt"], ".csv or .parquet"),
    ],
)
def test_probe_command_errors_are_one_line(
    runs, ptbxl_100hz_store, capsys, args: list[str], message: str
) -> None:
    args = [a.format(store=ptbxl_100hz_store.path) for a in args]
    code, _, err = _cli(["probe", "--checkpoint", str(runs["random"]), *args], capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_help(capsys) -> None:
    for command in ("probe", "finetune"):
        code, out, _ = _cli([command, "--help"], capsys)
        assert code == 0 and "--checkpoint" in out
