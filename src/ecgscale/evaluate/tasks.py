"""Probing runs on named tasks: embeddings of the task's store, then a linear probe; tidy results.

`probe_task` is what a study runs for every OOD task; `probe_task_fractions` repeats it on
fractions of the training labels; `probe_table` does every (run, task) pair and returns the tidy
table that `ecgscale probe` writes: one row per model x task x protocol x fraction x draw x metric
(per-class metrics carry the class name).

Every metric but `ece` comes with a percentile bootstrap interval over the test records (1000
resamples, 95 %, seed 0 by default; `ecgscale.evaluate.metrics.Bootstrap`): the ends are rows of
their own, `<metric>_lo` and `<metric>_hi` (`loss_lo`, `auroc_hi`, ...; per class with the class
name), with `<metric>_defined` (the fraction of resamples where the metric was defined) where that
is below 1, and `n_boot`, `ci_level` once per result. Per-class rows also give `n_pos`, the test
positives of each class (next to the task-level `n_test`). Rows keep the table long and its
columns fixed, so readers that select metrics by name are unaffected; `interval_table` turns the
ends into `lo`, `hi` and `defined` columns beside each value.

Tasks that list the `challenge` metric (the PhysioNet/CinC 2021 tasks) also get every score of the
official evaluation (`challenge2021.challenge_metrics`): `challenge` (the Challenge metric),
`challenge_auroc`, `challenge_auprc`, `challenge_accuracy` and `challenge_f_measure`, of the
probe's test probabilities and thresholded outputs (`score >= threshold`, thresholds tuned for F1 on
the validation split), against every scored class of each test record - classes the task left out
for lack of training positives included (outputs 0), as the official scorer counts them. The
task's own `auroc`, `auprc`, `f1` are macros over the classes it kept.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import torch

from ecgscale.data.store import Store
from ecgscale.errors import ConfigError
from ecgscale.evaluate.challenge2021 import (
    ChallengeMetrics,
    ChallengeTables,
    challenge_metrics,
    load_challenge_tables,
)
from ecgscale.evaluate.embeddings import embed
from ecgscale.evaluate.metrics import DEFAULT_BOOTSTRAP, Bootstrap
from ecgscale.evaluate.probe import (
    DEFAULT_C_GRID,
    FractionResult,
    ProbeResult,
    label_fraction_probes,
    linear_probe,
)
from ecgscale.tasks import Task, TaskData, get_task

TABLE_COLUMNS: tuple[str, ...] = (
    "model", "task", "protocol", "fraction", "draw", "seed", "metric", "class", "value",
)  # fmt: skip
"""Columns of the tidy results table; `class` is empty for task-level metrics."""


# ----------------------------------------------------------------------------------------------
# Challenge 2021 score


def challenge_tables(store: Store, scoring: str | Path | None = None) -> ChallengeTables:
    """The Challenge 2021 tables in `scoring`, else in the folder the store was labelled with
    (its manifest's provenance), else the official tables packaged with ecgscale."""
    folder = scoring if scoring is not None else store.manifest["provenance"].get("scoring")
    return load_challenge_tables(folder)


def task_challenge_metrics(
    task: Task,
    data: TaskData,
    store: Store,
    positions: np.ndarray,
    decisions: np.ndarray,
    scores: np.ndarray,
    scoring: str | Path | None = None,
    bootstrap: Bootstrap | None = DEFAULT_BOOTSTRAP,
) -> ChallengeMetrics:
    """Official Challenge 2021 scores of `(len(positions), classes)` 0/1 decisions and
    probabilities over the task's classes, with their bootstrap intervals over the records
    (None: without).

    `positions` index `data.rows`. Labels are every class of the task's label set (not only the
    classes the task kept), mapped onto the scored classes of the tables.
    """
    if task.labels is None:
        raise ConfigError(f"task {task.name}: the challenge metric needs a label-set task")
    tables = challenge_tables(store, scoring)
    vocabulary = store.label_sets[task.labels]
    truth = store.labels(task.labels)[data.rows[positions]].astype(np.float64)
    labels = (truth @ tables.column_map(vocabulary)) > 0
    binary, scalar = tables.encode_outputs(list(data.classes), np.asarray(decisions), scores)
    return challenge_metrics(tables, labels, binary, scalar, bootstrap)


def _with_challenge(
    result: ProbeResult,
    task: Task,
    data: TaskData,
    store: Store,
    scoring: str | Path | None,
    bootstrap: Bootstrap | None = DEFAULT_BOOTSTRAP,
) -> ProbeResult:
    """`result` with the official scores (`challenge`, `challenge_auroc`, ...) when the task lists
    the challenge metric (with their intervals, on the probe's resamples)."""
    if "challenge" not in task.metrics:
        return result
    decisions = result.test_outputs >= np.asarray(result.thresholds)
    scores = task_challenge_metrics(
        task, data, store, data.test, decisions, result.test_outputs, scoring, bootstrap
    ).scores()
    metrics = MappingProxyType({**result.metrics, **scores})
    return dataclasses.replace(result, metrics=metrics)


# ----------------------------------------------------------------------------------------------
# Probes of one run on one task


def task_features(
    run_dir: str | Path,
    task: str,
    store: Store,
    *,
    which: str = "best",
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Task, TaskData, np.ndarray]:
    """The task, its targets and splits on `store`, and the run's embeddings of its records
    `(len(data), embed_dim)` (from the embedding cache)."""
    definition = get_task(task)
    data = definition.load(store)
    features = embed(
        run_dir, store, which=which, batch_size=batch_size, cache_dir=cache_dir, device=device
    )
    return definition, data, np.asarray(features[data.rows])


def probe_task(
    run_dir: str | Path,
    task: str,
    store: Store,
    *,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    batch_size: int = 256,
    which: str = "best",
    scoring: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    bootstrap: Bootstrap | None = DEFAULT_BOOTSTRAP,
) -> ProbeResult:
    """Linear probe of the run's frozen encoder on `task` over `store` (train/val/test splits of
    the task); the test loss is the OOD loss of scaling studies. `scoring` is the Challenge 2021
    tables folder for tasks with the challenge metric (default: the store's). `bootstrap`: the
    metrics' intervals over test records (`linear_probe`; None: none)."""
    definition, data, features = task_features(
        run_dir, task, store, which=which, batch_size=batch_size, cache_dir=cache_dir, device=device
    )
    result = linear_probe(
        features,
        data.y,
        data.kind,
        data.train,
        data.val,
        data.test,
        c_grid=c_grid,
        label_names=list(data.classes),
        n_classes=len(data.classes) if data.kind == "multiclass" else None,
        bootstrap=bootstrap,
    )
    return _with_challenge(result, definition, data, store, scoring, bootstrap)


def probe_task_fractions(
    run_dir: str | Path,
    task: str,
    store: Store,
    *,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    draws: int = 3,
    seed: int = 0,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    batch_size: int = 256,
    which: str = "best",
    scoring: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    bootstrap: Bootstrap | None = DEFAULT_BOOTSTRAP,
) -> tuple[FractionResult, ...]:
    """`probe_task` on `fractions` of the task's training labels, `draws` seeded draws each
    (see `ecgscale.evaluate.probe.label_fraction_probes`); one embedding pass for all."""
    definition, data, features = task_features(
        run_dir, task, store, which=which, batch_size=batch_size, cache_dir=cache_dir, device=device
    )
    results = label_fraction_probes(
        features,
        data.y,
        data.kind,
        data.train,
        data.val,
        data.test,
        fractions=fractions,
        draws=draws,
        seed=seed,
        c_grid=c_grid,
        label_names=list(data.classes),
        n_classes=len(data.classes) if data.kind == "multiclass" else None,
        bootstrap=bootstrap,
    )
    return tuple(
        FractionResult(
            r.fraction,
            r.draw,
            _with_challenge(r.result, definition, data, store, scoring, bootstrap),
        )
        for r in results
    )


# ----------------------------------------------------------------------------------------------
# Tidy results


def result_rows(
    model: str,
    task: str,
    protocol: str,
    result: Any,
    *,
    fraction: float = 1.0,
    draw: int = 0,
    seed: int = 0,
    extra: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Tidy rows of one result (a `ProbeResult` or a `FinetuneResult`): `loss` (the test loss),
    `val_loss`, `n_train`, `n_test`, every task metric with its interval ends (`<metric>_lo`,
    `<metric>_hi`, module docstring), `extra` values, and per-class metrics (with their ends and
    `n_pos`) with their class name. Undefined metrics (None) are left out."""
    base = {"model": model, "task": task, "protocol": protocol, "fraction": float(fraction)}
    base.update(draw=int(draw), seed=int(seed))
    values: dict[str, float | None] = {
        "loss": result.test_loss,
        "val_loss": result.val_loss,
        "n_train": float(result.n_train),
        "n_test": float(result.n_test),
        **dict(result.metrics),
        **dict(extra or {}),
    }
    rows = [{**base, "metric": k, "class": "", "value": float(v)} for k, v in values.items()]
    for metric, per_class in result.per_class.items():
        for name, value in zip(result.label_names, per_class, strict=True):
            if value is not None:
                rows.append({**base, "metric": metric, "class": name, "value": float(value)})
    return [row for row in rows if np.isfinite(row["value"])]


def interval_table(table: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The tidy table with each metric's interval beside it: the `<metric>_lo`, `<metric>_hi`
    and `<metric>_defined` rows become columns `lo`, `hi` and `defined` (1.0 where every
    resample was defined; NaN for metrics without an interval, such as `n_test`) of the
    `<metric>` row with the same model, task, protocol, fraction, draw, seed and class."""
    table = pd.DataFrame(table)
    keys = [c for c in TABLE_COLUMNS if c not in ("metric", "value")]
    parts = table["metric"].astype(str).str.extract(r"^(?P<base>.+)_(?P<end>lo|hi|defined)$")
    bound = parts["base"].notna() & parts["base"].isin(table["metric"])
    ends = table[bound].assign(metric=parts["base"][bound], end=parts["end"][bound])
    wide = ends.pivot_table(index=[*keys, "metric"], columns="end", values="value", aggfunc="first")
    wide = wide.reindex(columns=["lo", "hi", "defined"]).reset_index()
    out = table[~bound].merge(wide, on=[*keys, "metric"], how="left", sort=False)
    out.columns.name = None
    out["defined"] = out["defined"].where(out["defined"].notna() | out["lo"].isna(), 1.0)
    return out


def table_path(path: str | Path) -> Path:
    """`path` checked to name a `.csv` or `.parquet` results file (check before long work)."""
    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise ConfigError(f"{path}: expected a .csv or .parquet results file")
    return path


def write_table(rows: Sequence[Mapping[str, Any]], path: str | Path) -> pd.DataFrame:
    """Write tidy rows to `path` (`.csv`, or `.parquet`) atomically; returns the table."""
    path = table_path(path)
    table = pd.DataFrame(list(rows), columns=list(TABLE_COLUMNS))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if path.suffix == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return table


def task_store(task: str, stores: Mapping[str, Store]) -> tuple[str, Store]:
    """The store a task is probed on, from named stores.

    `task` is `NAME` or `NAME@STORE`: `@STORE` picks the store of that name; otherwise the store
    named as the task's dataset, else the one store whose manifest names that dataset. Returns
    the task name and its store.
    """
    name, _, alias = task.partition("@")
    if alias:
        if alias not in stores:
            raise ConfigError(f"task {task}: no store named {alias!r} (have: {', '.join(stores)})")
        return name, stores[alias]
    dataset = get_task(name).dataset
    if dataset in stores:
        return name, stores[dataset]
    matches = [s for s in stores.values() if s.manifest.get("name") == dataset]
    if len(matches) != 1:
        what = "no" if not matches else f"{len(matches)}"
        raise ConfigError(
            f"task {name}: {what} stores of dataset {dataset!r} given; pass --store "
            f"{dataset}=DIR, or name the store as {name}@STORE"
        )
    return name, matches[0]


def probe_table(
    run_dirs: Sequence[str | Path],
    tasks: Sequence[str],
    stores: Mapping[str, Store],
    *,
    fractions: Sequence[float] | None = None,
    draws: int = 3,
    seed: int = 0,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    batch_size: int = 256,
    scoring: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    on_result: Callable[[str, str, ProbeResult], None] | None = None,
    bootstrap: Bootstrap | None = DEFAULT_BOOTSTRAP,
) -> list[dict[str, Any]]:
    """Tidy rows of probing every run on every task (`NAME` or `NAME@STORE`, see `task_store`).

    The `task` column holds the task as given (with its `@STORE`). Without `fractions`: one
    probe per pair (protocol `probe`). With `fractions`: label-fraction
    probes (protocol `probe`, one row set per fraction and draw; `fraction` 1 is the full probe).
    `on_result(model, task, result)` is called after each probe (for progress output).
    `bootstrap`: the metrics' intervals over test records (None: none).
    """
    resolved = [(task, *task_store(task, stores)) for task in tasks]
    options: dict[str, Any] = dict(
        c_grid=c_grid, batch_size=batch_size, scoring=scoring, cache_dir=cache_dir, device=device,
        bootstrap=bootstrap,
    )  # fmt: skip
    rows: list[dict[str, Any]] = []
    for run_dir in run_dirs:
        model = str(run_dir)
        for label, name, store in resolved:
            if fractions is None:
                found = [FractionResult(1.0, 0, probe_task(run_dir, name, store, **options))]
            else:
                found = list(
                    probe_task_fractions(
                        run_dir, name, store, fractions=fractions, draws=draws, seed=seed,
                        **options,
                    )
                )  # fmt: skip
            for item in found:
                extra = {"c": item.result.c}
                rows += result_rows(
                    model, label, "probe", item.result, fraction=item.fraction, draw=item.draw,
                    seed=seed, extra=extra,
                )  # fmt: skip
                if on_result is not None:
                    on_result(model, label, item.result)
    return rows
