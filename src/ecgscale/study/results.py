"""The results store: an embedded SQLite database (WAL mode) holding every run of a study.

Tables:
    runs     one row per run: id, family, size, model, objective, status (planned, running, done,
             failed), attempts, error, timings, N (n_params), D (n_samples), FLOPs per record,
             training FLOPs, ID loss, pretext loss, the run's configuration (JSON)
    metrics  one row per run x task x metric (value); label-scaling runs also have task
             `COMMON_TASK` with `loss_<group>` and `n_classes_<group>` per label group (all,
             frequent, tail) of the study's common label set

A finished run's metrics and its "done" status are written in one transaction, so a study killed at
any moment never holds half a run and never counts a run twice; resuming re-runs exactly the runs
that are not "done".
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgscale.study.planner import Run

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    size TEXT NOT NULL,
    model TEXT NOT NULL,
    objective TEXT NOT NULL,
    data_fraction REAL NOT NULL,
    label_top_k INTEGER,
    seed INTEGER NOT NULL,
    target_params INTEGER NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'planned',
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    started REAL,
    finished REAL,
    train_seconds REAL,
    eval_seconds REAL,
    n_params INTEGER,
    n_samples INTEGER,
    samples_seen INTEGER,
    flops_per_record REAL,
    train_flops REAL,
    id_loss REAL,
    pretext_loss REAL
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    task TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, task, metric)
);
"""

COMMON_TASK = "id_common"
"""Task of the common-label-set losses of label-scaling runs (`id_eval.evaluate_common`)."""

_TABLE_RUN_COLUMNS = (
    "run_id",
    "family",
    "size",
    "model",
    "objective",
    "data_fraction",
    "label_top_k",
    "seed",
    "n_params",
    "n_samples",
    "samples_seen",
    "flops_per_record",
    "train_flops",
)
"""Run-level columns of the exported tables (`Results.table`, `Results.label_table`)."""

RUN_RESULT_COLUMNS = (
    "train_seconds",
    "eval_seconds",
    "n_params",
    "n_samples",
    "samples_seen",
    "flops_per_record",
    "train_flops",
    "id_loss",
    "pretext_loss",
)


class Results:
    """Handle on a study's `results.sqlite`; every method opens its own short transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level="DEFERRED")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def add_planned(self, runs: Iterable[Run]) -> None:
        """Insert runs not yet known (existing rows, finished or not, are kept)."""
        rows = [
            (
                r.run_id,
                r.family,
                r.size,
                r.model,
                r.objective,
                r.config["data_fraction"],
                r.config["label_top_k"],
                r.config["seed"],
                r.target_params,
                json.dumps(r.config, sort_keys=True),
            )
            for r in runs
        ]
        with closing(self._connect()) as db, db:
            db.executemany(
                "INSERT OR IGNORE INTO runs (run_id, family, size, model, objective, data_fraction,"
                " label_top_k, seed, target_params, config) VALUES (?,?,?,?,?,?,?,?,?,?)",
                rows,
            )

    def status(self) -> dict[str, str]:
        """run_id -> status."""
        with closing(self._connect()) as db:
            return dict(db.execute("SELECT run_id, status FROM runs").fetchall())

    def mark_running(self, run_id: str) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "UPDATE runs SET status='running', attempts=attempts+1, started=?, error=NULL "
                "WHERE run_id=?",
                (time.time(), run_id),
            )

    def mark_failed(self, run_id: str, error: str) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "UPDATE runs SET status='failed', error=?, finished=? WHERE run_id=?",
                (error, time.time(), run_id),
            )

    def finish(self, run_id: str, result: dict[str, Any], metrics: list[tuple[str, str, float]]):
        """Record a finished run: its results and metric rows in one transaction."""
        values = [result.get(c) for c in RUN_RESULT_COLUMNS]
        sets = ", ".join(f"{c}=?" for c in RUN_RESULT_COLUMNS)
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM metrics WHERE run_id=?", (run_id,))
            db.executemany(
                "INSERT INTO metrics (run_id, task, metric, value) VALUES (?,?,?,?)",
                [(run_id, t, m, None if v is None else float(v)) for t, m, v in metrics],
            )
            db.execute(
                f"UPDATE runs SET {sets}, status='done', finished=? WHERE run_id=?",
                (*values, time.time(), run_id),
            )

    def runs(self) -> pd.DataFrame:
        """The runs table."""
        with closing(self._connect()) as db:
            return pd.read_sql_query("SELECT * FROM runs ORDER BY rowid", db)

    def metrics(self) -> pd.DataFrame:
        """The metrics table (long format: run_id, task, metric, value)."""
        with closing(self._connect()) as db:
            return pd.read_sql_query("SELECT * FROM metrics ORDER BY run_id, task, metric", db)

    def _done(self) -> pd.DataFrame:
        runs = self.runs()
        return runs[runs["status"] == "done"]

    def table(self) -> pd.DataFrame:
        """Finished runs in the scaling-fit schema: one row per run x OOD task, with `id_loss`,
        `ood_loss` (the probe's test loss) and the run's N, D and FLOPs."""
        metrics = self.metrics()
        loss = metrics[(metrics["metric"] == "loss") & (metrics["task"] != "id")]
        loss = loss.rename(columns={"value": "ood_loss"})[["run_id", "task", "ood_loss"]]
        keep = [*_TABLE_RUN_COLUMNS, "id_loss", "pretext_loss"]
        table = self._done()[keep].merge(loss, on="run_id", how="left")
        table["task"] = table["task"].fillna("id")
        return table.reset_index(drop=True)

    def label_table(self) -> pd.DataFrame:
        """Finished label-scaling runs on the common label set, in the scaling-fit schema: one row
        per run x label group (all, frequent, tail) with task `id_common/<group>`, `label_group`,
        `id_loss` (the probe's test BCE per class, averaged over the group's classes; nats),
        `n_labels` (the run's top-k), `n_classes` (classes in the group) and no `ood_loss`.
        Empty when no run has common-set losses. Fit with
        `ecgscale fit --target id_loss --by label_group --x n_labels`."""
        metrics = self.metrics()
        common = metrics[metrics["task"] == COMMON_TASK]
        what = common["metric"].str.extract(r"^(loss|n_classes)_(\w+)$")
        common = common.assign(quantity=what[0], label_group=what[1]).dropna(subset="quantity")
        wide = common.pivot(index=["run_id", "label_group"], columns="quantity", values="value")
        wide = wide.reindex(columns=["loss", "n_classes"]).rename(columns={"loss": "id_loss"})
        wide = wide.reset_index()
        table = self._done()[list(_TABLE_RUN_COLUMNS)].merge(wide, on="run_id", how="inner")
        table["task"] = COMMON_TASK + "/" + table["label_group"]
        table["n_labels"] = table["label_top_k"].astype(float)
        table["ood_loss"] = np.nan
        return table.reset_index(drop=True)
