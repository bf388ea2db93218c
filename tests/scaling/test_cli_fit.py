"""`ecgscale fit` end to end on a synthetic results table and on a tiny study's results.sqlite:
tables, JSON, one-line errors."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ecgscale.cli import fit as fit_cli
from ecgscale.cli.main import main
from ecgscale.study.results import Results
from ecgscale.study.runner import run_study
from ecgscale.study.spec import load_spec

# Six one-step runs (three ResNet sizes x two seeds) on 200 synthetic records: about 5 s.
TINY_STUDY = {
    "name": "tiny",
    "out": "tiny",
    "stores": {"source": {"synth": {"records": 200, "fs": 100, "length": 1000}}},
    "pretrain_store": "source",
    "label_set": "code",
    "families": [
        {"name": "ResNet-SL", "model": "resnet", "objective": "sl", "sizes": [0, 1, 2]},
    ],
    "seeds": [0, 1],
    "budget": {"samples": 64},
}


def _results(path: Path, *, tiny_group: bool = False) -> Path:
    """resnet/cmsc: a 4 x 4 grid of N and D (joint law); resnet/supervised: N varies, D fixed
    (one-axis law). Two tasks with ID and OOD losses that follow a known transfer law."""
    rng = np.random.default_rng(0)
    rows = []
    grids = {
        "cmsc": [(n, d) for n in np.geomspace(1e5, 1e7, 4) for d in np.geomspace(1e4, 1e6, 4)],
        "supervised": [(n, 1e5) for n in np.geomspace(1e5, 1e7, 5)],
    }
    if tiny_group:
        grids["tiny"] = [(1e5, 1e4), (1e6, 1e4)]
    for objective, points in grids.items():
        for n, d in points:
            run = f"{objective}-{n:.0f}-{d:.0f}"
            id_base = 0.3 + 30 * n**-0.35 + 20 * d**-0.3
            for task, scale in (("af", 1.0), ("mi", 1.2)):
                id_loss = scale * id_base * np.exp(rng.normal(0, 0.003))
                ood_loss = (0.5 + 1.3 * (id_loss - 0.3 * scale) ** 0.8) * np.exp(
                    rng.normal(0, 0.003)
                )
                rows.append(
                    dict(
                        run_id=run, family="resnet", objective=objective, n_params=n,
                        n_samples=d, flops_per_record=2 * n, train_flops=30 * n * d, task=task,
                        id_loss=id_loss, ood_loss=ood_loss,
                    )
                )  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_fit_prints_tables_and_writes_json(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(fit_cli.console, "width", 250)
    table = _results(tmp_path / "results.csv")
    out = tmp_path / "fits" / "fits.json"
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(table), "--target", "ood_loss", "--by", "family,objective",
              "--n-boot", "100", "--out", str(out)])  # fmt: skip
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    assert "Scaling fits of ood_loss" in printed
    assert "L(N, D)" in printed and "L(N)" in printed
    assert "Compute-optimal allocation" in printed and "Loss-to-loss transfer" in printed
    assert f"wrote {out}" in printed

    payload = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert payload["by"] == ["family", "objective"] and payload["n_boot"] == 100
    groups = {g["label"]: g for g in payload["groups"]}
    assert set(groups) == {"resnet/cmsc", "resnet/supervised"}
    joint, axis = groups["resnet/cmsc"], groups["resnet/supervised"]
    assert joint["fit"]["kind"] == "joint" and joint["n_runs"] == 16
    assert set(joint["fit"]["params"]) == {"E", "A", "B", "alpha", "beta"}
    assert axis["fit"]["kind"] == "axis" and axis["fit"]["axis"] == "N"
    assert joint["compute_optimal"]["flops"]["coef"] == pytest.approx(30.0)
    assert axis["compute_optimal"] is None
    for group in (joint, axis):
        tasks = [t["task"] for t in group["transfer"]]
        assert tasks == ["af", "mi", "mean over tasks"]
        assert all(
            t["params"]["kappa"]["low"] < t["params"]["kappa"]["high"] for t in group["transfer"]
        )
    assert payload["comparisons"] == []  # a joint and a one-axis law are not compared
    assert not list(out.parent.glob(".*.tmp"))  # atomic write leaves no temporary file


def test_label_scaling_through_the_cli(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(fit_cli.console, "width", 250)
    # Tasks of frequent labels gain more from pre-training labels than tasks of tail labels.
    labels = np.geomspace(10, 1e4, 6)
    rows = []
    for i, n_labels in enumerate(labels):
        for task, group, alpha in (("af", "frequent", 0.5), ("rare", "tail", 0.2)):
            rows.append(
                dict(
                    run_id=f"r{i}", family="resnet", objective="supervised", n_params=1e6,
                    n_samples=1e5, flops_per_record=2e6, train_flops=6e11, task=task,
                    id_loss=0.3 + 2 * n_labels**-alpha, ood_loss=np.nan, n_labels=n_labels,
                    label_group=group,
                )
            )  # fmt: skip
    table = tmp_path / "labels.parquet"
    pd.DataFrame(rows).to_parquet(table)
    out = tmp_path / "labels.json"
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(table), "--target", "id_loss", "--by", "label_group", "--x", "n_labels",
              "--n-boot", "50", "--out", str(out)])  # fmt: skip
    assert exc.value.code == 0
    groups = {g["label"]: g["fit"] for g in json.loads(out.read_text())["groups"]}
    assert groups["frequent"]["axis"] == "n_labels"
    assert groups["frequent"]["params"]["alpha"]["value"] == pytest.approx(0.5, abs=0.01)
    assert groups["tail"]["params"]["alpha"]["value"] == pytest.approx(0.2, abs=0.01)
    assert "to match a 10x increase in n_labels of frequent, tail needs" in capsys.readouterr().out


def test_fit_says_how_many_rows_without_a_target_value_it_drops(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(fit_cli.console, "width", 250)
    table = pd.read_csv(_results(tmp_path / "results.csv"))
    gone = ((table["objective"] == "supervised") & (table["task"] == "mi")) | (table.index == 0)
    table.loc[gone, "ood_loss"] = np.nan
    path = tmp_path / "holes.csv"
    table.to_csv(path, index=False)
    out = tmp_path / "fits.json"
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(path), "--n-boot", "50", "--out", str(out)])
    assert exc.value.code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "dropped" in line]
    assert lines == ["dropped 6 of 42 rows without a value of ood_loss (rows per task: af 1, mi 5)"]
    groups = {g["label"]: g["n_runs"] for g in json.loads(out.read_text())["groups"]}
    assert groups == {"resnet/cmsc": 16, "resnet/supervised": 5}  # every run is still fitted
    with pytest.raises(SystemExit):
        main(["fit", str(path), "--target", "id_loss", "--n-boot", "50"])
    assert "dropped" not in capsys.readouterr().out


def test_fit_errors_are_one_line(tmp_path: Path, capsys) -> None:
    table = _results(tmp_path / "results.csv", tiny_group=True)
    cases = [
        ([str(tmp_path / "absent.csv")], "no such file"),
        (
            [str(table), "--by", "family,site"],
            "--by: no column site in the results table; available: run_id",
        ),
        ([str(table), "--target", "auc"], "--target: no column auc"),
        (
            [str(table), "--n-boot", "0"],
            "group resnet/tiny (2 runs): too few points to fit: N takes 2",
        ),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exc:
            main(["fit", *args])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert message in err.replace("\n", "")
        assert err.startswith("error:")


def test_fit_reads_a_studys_results_database(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(fit_cli.console, "width", 250)
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(TINY_STUDY))
    database = run_study(load_spec(spec_path), progress=False).path
    out = tmp_path / "fits.json"
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(database), "--target", "id_loss", "--by", "family", "--n-boot", "50",
              "--out", str(out)])  # fmt: skip
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    assert "Scaling fits of id_loss" in printed and "L(N)" in printed
    groups = json.loads(out.read_text())["groups"]
    assert [(g["label"], g["n_runs"]) for g in groups] == [("ResNet-SL", 6)]


def test_fit_rejects_a_database_that_is_not_a_studys(tmp_path: Path, capsys) -> None:
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE x (a)")
    garbage = tmp_path / "results.db"
    garbage.write_text("not a database")
    empty = Results(tmp_path / "empty" / "results.sqlite").path  # the schema, no runs
    cases = [
        (tmp_path / "absent.sqlite", "study results database", "no such file"),
        (other, str(other), "no runs and metrics tables; expected the results.sqlite of"),
        (garbage, str(garbage), "not an SQLite database"),
        (empty, str(empty), "no finished runs yet"),
    ]
    for path, where, message in cases:
        with pytest.raises(SystemExit) as exc:
            main(["fit", str(path)])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error:")
        assert where in err and message in err
    with sqlite3.connect(other) as db:  # read only: another database is left as it was
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("x",)]


def test_fit_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--help"])
    assert exc.value.code == 0
    assert "--target" in capsys.readouterr().out
