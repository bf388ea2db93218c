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

Runners claim a run before executing it (`claim`: one atomic UPDATE that sets the run's `owner` and
a lease expiry `lease_until`), renew the leases of their runs while they execute (`renew`), and
record a result only while they hold the claim (`finish`, `mark_failed` with `owner`). So runners
started on one study at once split its runs, each executed once; the claim of a runner that died
lapses when its lease expires, at once when it ran on this host and its process is gone.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
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
    pretext_loss REAL,
    owner TEXT,
    lease_until REAL
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    task TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, task, metric)
);
"""

_LEASE_COLUMNS = {"owner": "TEXT", "lease_until": "REAL"}
"""Columns added since the first schema (added to an older database when it is opened)."""

LEASE_SECONDS = 120.0
"""How long a claim holds without renewal (s); runners renew every `LEASE_SECONDS / 6`."""

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


def new_owner() -> str:
    """A claimant id, `host:pid:token`: unique per call, and tells whether its process lives."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _gone(owner: str) -> bool:
    """Whether `owner` (a `new_owner` id) ran on this host in a process that no longer exists."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _use_wal(db: sqlite3.Connection, wait_s: float = 60.0) -> None:
    """Switch the file to write-ahead logging. Changing the journal mode can answer "database is
    locked" at once, without the busy timeout, while another runner opens the same new file; so
    retry for up to `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Results:
    """Handle on a study's `results.sqlite`; every method opens its own short transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db:
            _use_wal(db)
            db.executescript(_SCHEMA)
            with db:
                db.execute("BEGIN IMMEDIATE")  # one runner at a time adds missing columns
                have = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
                for name, kind in _LEASE_COLUMNS.items():
                    if name not in have:
                        db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")

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

    def claim(
        self, run_id: str, owner: str, since: float = 0.0, lease: float = LEASE_SECONDS
    ) -> bool:
        """Mark `run_id` running under `owner` for `lease` seconds when nobody else holds it;
        returns whether `owner` got it (and counted an attempt).

        Claimable: a planned run; a failed one when `owner` failed it or it failed before `since`
        (the claimant's start, so runs that a concurrent runner failed are not run again); a
        running one whose lease expired or whose owner's process is gone (`_gone`).
        """
        now = time.time()
        with closing(self._connect()) as db, db:
            holder = db.execute(
                "SELECT owner FROM runs WHERE run_id=? AND status='running'", (run_id,)
            ).fetchone()
            dead = holder[0] if holder and holder[0] and _gone(holder[0]) else None
            cursor = db.execute(  # `owner=:dead`: only if nobody claimed it since the SELECT
                "UPDATE runs SET status='running', owner=:owner, lease_until=:until, "
                "attempts=attempts+1, started=:now, error=NULL WHERE run_id=:run AND ("
                "status='planned' OR (status='failed' AND (owner=:owner OR finished<:since)) "
                "OR (status='running' AND (owner=:dead OR lease_until IS NULL "
                "OR lease_until<:now)))",
                {"owner": owner, "until": now + lease, "now": now, "run": run_id,
                 "since": since, "dead": dead},
            )  # fmt: skip
            return cursor.rowcount == 1

    def renew(self, owner: str, lease: float = LEASE_SECONDS) -> None:
        """Extend the lease of every run that `owner` is executing by `lease` seconds from now."""
        with closing(self._connect()) as db, db:
            db.execute(
                "UPDATE runs SET lease_until=? WHERE owner=? AND status='running'",
                (time.time() + lease, owner),
            )

    def release(self, owner: str, error: str) -> None:
        """Mark the runs that `owner` still holds as failed with `error` (a runner that stops
        before they finish, e.g. on Ctrl-C: they are claimable again at once)."""
        with closing(self._connect()) as db, db:
            db.execute(
                "UPDATE runs SET status='failed', error=?, finished=?, lease_until=NULL "
                "WHERE owner=? AND status='running'",
                (error, time.time(), owner),
            )

    def mark_failed(self, run_id: str, error: str, owner: str | None = None) -> bool:
        """Record that a run failed; with `owner`, only while `owner` holds its claim (returns
        whether it was recorded)."""
        mine, args = ("AND owner=? AND status='running'", (owner,)) if owner else ("", ())
        with closing(self._connect()) as db, db:
            cursor = db.execute(
                f"UPDATE runs SET status='failed', error=?, finished=?, lease_until=NULL "
                f"WHERE run_id=? {mine}",
                (error, time.time(), run_id, *args),
            )
            return cursor.rowcount == 1

    def finish(
        self,
        run_id: str,
        result: dict[str, Any],
        metrics: list[tuple[str, str, float]],
        owner: str | None = None,
    ) -> bool:
        """Record a finished run: its results and metric rows in one transaction; with `owner`,
        only while `owner` holds its claim (returns whether it was recorded)."""
        values = [result.get(c) for c in RUN_RESULT_COLUMNS]
        sets = ", ".join(f"{c}=?" for c in RUN_RESULT_COLUMNS)
        mine, args = ("AND owner=? AND status='running'", (owner,)) if owner else ("", ())
        with closing(self._connect()) as db, db:
            cursor = db.execute(
                f"UPDATE runs SET {sets}, status='done', finished=?, lease_until=NULL "
                f"WHERE run_id=? {mine}",
                (*values, time.time(), run_id, *args),
            )
            if cursor.rowcount != 1:
                return False
            db.execute("DELETE FROM metrics WHERE run_id=?", (run_id,))
            db.executemany(
                "INSERT INTO metrics (run_id, task, metric, value) VALUES (?,?,?,?)",
                [(run_id, t, m, None if v is None else float(v)) for t, m, v in metrics],
            )
            return True

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
