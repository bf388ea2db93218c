"""Benchmarks: models x tasks -> linear probes and fine-tuning -> one AUROC table with intervals.

The protocol of Li et al. 2026's comparison of public ECG models: every model (an ecgscale run or
an external encoder, `ecgscale.evaluate.sources`) is trained on every task's training split under
each protocol, and scored by macro AUROC on the task's test split.

* `linear`: the logistic-regression probe on frozen embeddings (`ecgscale.evaluate.probe`).
* `head`: a linear head fine-tuned on the frozen encoder (`finetune(mode="head")`).
* `full`: encoder and head fine-tuned together (`finetune(mode="full")`).

With label `fractions` below 1, each protocol is repeated on `draws` seeded subsets of the training
labels (the probes' `fraction_subsets`): sample efficiency.

A cell is one model x task x protocol x fraction x draw. A finished cell is written atomically to
`<out>/cells/<id>.npz` (test labels and scores) and `<id>.json` (tidy result rows); a rerun skips
it, so an interrupted benchmark resumes where it stopped. The id hashes everything the result
depends on: the model's weights, the store's checksum, the task, the protocol and its settings.

The summary gives, per model x protocol x fraction, each task's macro AUROC with a percentile
bootstrap interval over test records, and the mean over tasks. The same resamples of a task's test
records serve every model, and tasks are resampled independently; the mean's interval comes from
the mean over tasks of each resample. Draws of one fraction are averaged within each resample.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ecgscale.data.store import Store
from ecgscale.errors import ConfigError, DataError
from ecgscale.evaluate import metrics as M
from ecgscale.evaluate.sources import ModelSource
from ecgscale.fileio import atomic_write, replace_durably

PROTOCOLS: tuple[str, ...] = ("linear", "head", "full")
SUMMARY_COLUMNS: tuple[str, ...] = (
    "model", "protocol", "fraction", "task", "auroc", "low", "high", "n_test", "draws",
)  # fmt: skip
MEAN_TASK = "mean"
"""`task` of the summary rows that average over tasks."""


class BenchmarkConfig(BaseModel):
    """What to benchmark and how.

    Attributes:
        models: model references, each `REF` or `NAME=REF` (a run folder, `ADAPTER:PATH` or
            `module:function`); the name labels tables and figures.
        tasks: task names, or `NAME@STORE` to pick a store (`ecgscale.evaluate.tasks.task_store`).
        stores: store folders by name.
        protocols: any of `PROTOCOLS`.
        fractions: label fractions in (0, 1]; draws: seeded subsets per fraction below 1.
        seed: seed of the label subsets, fine-tuning batches and the bootstrap.
        steps, lr, batch_size, eval_every, weight_decay: fine-tuning settings (`finetune`).
        n_boot: bootstrap resamples of the intervals; level: their coverage.
        device: where encoders run.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[str] = Field(min_length=1)
    tasks: list[str] = Field(min_length=1)
    stores: dict[str, Path] = Field(min_length=1)
    protocols: list[str] = Field(default_factory=lambda: ["linear", "full"], min_length=1)
    fractions: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    draws: int = Field(1, ge=1)
    seed: int = 0
    steps: int = Field(200, ge=1)
    lr: float | None = Field(None, gt=0)
    batch_size: int = Field(64, ge=1)
    eval_every: int = Field(0, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    n_boot: int = Field(1000, ge=10)
    level: float = Field(0.95, gt=0, lt=1)
    device: str = "cpu"

    @field_validator("protocols")
    @classmethod
    def _known_protocols(cls, value: list[str]) -> list[str]:
        unknown = [p for p in value if p not in PROTOCOLS]
        if unknown:
            raise ValueError(f"unknown protocols {unknown}; expected any of {list(PROTOCOLS)}")
        return value

    @field_validator("fractions")
    @classmethod
    def _fractions_in_range(cls, value: list[float]) -> list[float]:
        if any(not 0 < f <= 1 for f in value):
            raise ValueError(f"fractions {value}: expected values in (0, 1]")
        return value

    def named_models(self) -> dict[str, str]:
        """`{name: reference}`; a model without `NAME=` is named by its run folder's name, or
        by its reference when it is external."""
        named: dict[str, str] = {}
        for item in self.models:
            name, sep, ref = item.partition("=")
            name, ref = (name.strip(), ref.strip()) if sep else (item, item)
            if not sep and Path(item).is_dir():
                name = Path(item).resolve().name
            if not name or not ref or name in named:
                raise ConfigError(f"model {item!r}: expected REF or NAME=REF with a new NAME")
            named[name] = ref
        return named


@dataclass(frozen=True)
class Cell:
    """One model x task x protocol x fraction x draw."""

    model: str
    ref: str
    task: str  # as given (with its @STORE)
    task_name: str
    store: Store
    protocol: str
    fraction: float
    draw: int

    def key(self, config: BenchmarkConfig) -> str:
        settings: dict[str, Any] = {"seed": config.seed}
        if self.protocol != "linear":
            settings |= config.model_dump(
                include={"steps", "lr", "batch_size", "eval_every", "weight_decay"}
            )
        text = json.dumps(
            [
                ModelSource.of(self.ref).content_hash(), self.store.checksum, self.task_name,
                self.protocol, self.fraction, self.draw, settings,
            ],
            sort_keys=True,
        )  # fmt: skip
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


@dataclass(frozen=True)
class CellResult:
    """A finished cell: its tidy rows, test labels `(test, classes)` bool and scores."""

    cell: Cell
    rows: list[dict[str, Any]]
    truth: np.ndarray
    scores: np.ndarray
    seconds: float
    cached: bool


@dataclass(frozen=True)
class BenchmarkResult:
    """Everything a benchmark wrote: the tidy table, the summary and the files."""

    table: pd.DataFrame
    summary: pd.DataFrame
    out: Path
    cells: int
    computed: int
    seconds: float


def _indicators(kind: str, y: np.ndarray, classes: int) -> np.ndarray:
    """Test labels as `(records, classes)` bool (multi-class: one-hot)."""
    if kind == "multiclass":
        return np.eye(classes, dtype=bool)[np.asarray(y, np.int64)]
    return np.asarray(y).reshape(len(y), -1).astype(bool)


def _run_cell(cell: Cell, config: BenchmarkConfig, cache_dir: Path) -> CellResult:
    """Train and score one cell."""
    from ecgscale.evaluate.finetune import finetune, finetune_rows
    from ecgscale.evaluate.probe import fraction_subsets, linear_probe
    from ecgscale.evaluate.tasks import _with_challenge, result_rows, task_features

    start = time.perf_counter()
    if cell.protocol == "linear":
        definition, data, features = task_features(
            cell.ref, cell.task_name, cell.store, cache_dir=cache_dir, device=config.device
        )
        n_classes = len(data.classes) if data.kind == "multiclass" else None
        subsets = fraction_subsets(
            data.y, data.kind, data.train, fractions=[cell.fraction], draws=cell.draw + 1,
            seed=config.seed, n_classes=n_classes,
        )  # fmt: skip
        result = linear_probe(
            features, data.y, data.kind, subsets[min(cell.draw, len(subsets) - 1)][2],
            data.val, data.test, label_names=list(data.classes), n_classes=n_classes,
        )  # fmt: skip
        result = _with_challenge(result, definition, data, cell.store, None)
        rows = result_rows(
            cell.model, cell.task, "linear", result, fraction=cell.fraction, draw=cell.draw,
            seed=config.seed, extra={"c": result.c},
        )  # fmt: skip
    else:
        result = finetune(
            cell.ref, cell.task_name, cell.store, mode=cell.protocol, steps=config.steps,  # type: ignore[arg-type]
            lr=config.lr, batch_size=config.batch_size, weight_decay=config.weight_decay,
            seed=config.seed, eval_every=config.eval_every, cache_dir=cache_dir,
            device=config.device, fraction=cell.fraction, draw=cell.draw,
        )  # fmt: skip
        from ecgscale.tasks import get_task

        data = get_task(cell.task_name).load(cell.store)
        rows = [
            {**row, "task": cell.task, "protocol": cell.protocol, "fraction": cell.fraction,
             "draw": cell.draw}
            for row in finetune_rows(cell.model, result)
        ]  # fmt: skip
    truth = _indicators(data.kind, data.y[data.test], len(data.classes))
    scores = np.asarray(result.test_outputs, np.float64).reshape(truth.shape)
    return CellResult(cell, rows, truth, scores, time.perf_counter() - start, cached=False)


def _save_cell(path: Path, result: CellResult) -> None:
    """`<id>.npz` then `<id>.json` (the marker of a finished cell), each atomically."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    try:
        np.savez(tmp, truth=result.truth, scores=result.scores)
        replace_durably(tmp, path.with_suffix(".npz"))
    finally:
        tmp.unlink(missing_ok=True)
    record = {"rows": result.rows, "seconds": result.seconds}
    atomic_write(path.with_suffix(".json"), json.dumps(record, allow_nan=True))


def _load_cell(path: Path, cell: Cell) -> CellResult | None:
    """The finished cell at `path`, or None when absent or damaged (then it is recomputed)."""
    try:
        record = json.loads(path.with_suffix(".json").read_text())
        with np.load(path.with_suffix(".npz")) as arrays:
            truth, scores = arrays["truth"], arrays["scores"]
    except (OSError, ValueError, KeyError):
        return None
    rows = [{**row, "model": cell.model, "task": cell.task} for row in record["rows"]]
    return CellResult(cell, rows, truth, scores, float(record["seconds"]), cached=True)


def plan_cells(config: BenchmarkConfig) -> list[Cell]:
    """Every cell of the benchmark, models outermost; checks models, tasks and stores first."""
    from ecgscale.evaluate.tasks import task_store
    from ecgscale.tasks import get_task

    stores = {name: Store(path) for name, path in config.stores.items()}
    models = config.named_models()
    for ref in models.values():
        ModelSource.of(ref)  # a missing run or unknown adapter fails before any work
    tasks = [(task, *task_store(task, stores)) for task in config.tasks]
    for _, task_name, _ in tasks:
        if get_task(task_name).kind == "regression":
            raise ConfigError(f"task {task_name}: benchmarks score AUROC; expected a classifier")
    cells = []
    for name, ref in models.items():
        for label, task_name, store in tasks:
            for protocol in config.protocols:
                for fraction in config.fractions:
                    for draw in range(1 if fraction >= 1 else config.draws):
                        cells.append(
                            Cell(name, ref, label, task_name, store, protocol, fraction, draw)
                        )
    return cells


def run_benchmark(
    config: BenchmarkConfig,
    out: str | Path,
    *,
    on_cell: Callable[[CellResult, int, int], None] | None = None,
) -> BenchmarkResult:
    """Run (or resume) the benchmark into `out`: `cells/`, `benchmark.csv` (tidy rows),
    `summary.csv` (`SUMMARY_COLUMNS`), `benchmark.png` and, with several fractions,
    `sample_efficiency.png`. `on_cell(result, done, total)` is called after each cell."""
    from ecgscale.evaluate.tasks import write_table

    start = time.perf_counter()
    out = Path(out)
    cells = plan_cells(config)  # bad models, tasks or stores fail before anything is written
    cells_dir = out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    results: list[CellResult] = []
    for i, cell in enumerate(cells):
        path = cells_dir / cell.key(config)
        result = _load_cell(path, cell)
        if result is None:
            result = _run_cell(cell, config, out / "embeddings")
            _save_cell(path, result)
        results.append(result)
        if on_cell is not None:
            on_cell(result, i + 1, len(cells))
    table = write_table([row for r in results for row in r.rows], out / "benchmark.csv")
    summary = summarise(results, config)
    atomic_write(out / "summary.csv", summary.to_csv(index=False))
    from ecgscale.report.benchmark import save_figures

    save_figures(summary, out)
    return BenchmarkResult(
        table, summary, out, len(cells), sum(not r.cached for r in results),
        time.perf_counter() - start,
    )  # fmt: skip


def summarise(results: Sequence[CellResult], config: BenchmarkConfig) -> pd.DataFrame:
    """Per model x protocol x fraction: each task's macro AUROC (mean over draws) with its
    bootstrap interval, and the mean over tasks (see the module docstring)."""
    tasks = list(dict.fromkeys(r.cell.task for r in results))
    counts: dict[str, np.ndarray] = {}
    for t, task in enumerate(tasks):
        n = next(len(r.truth) for r in results if r.cell.task == task)
        counts[task] = M.bootstrap_counts(n, config.n_boot, np.random.default_rng((config.seed, t)))
    groups: dict[tuple[str, str, float], dict[str, list[CellResult]]] = {}
    for r in results:
        key = (r.cell.model, r.cell.protocol, r.cell.fraction)
        groups.setdefault(key, {}).setdefault(r.cell.task, []).append(r)
    q = ((1 - config.level) / 2, (1 + config.level) / 2)
    rows = []
    for (model, protocol, fraction), by_task in groups.items():
        per_task = []
        for task, items in by_task.items():
            n_test = {len(r.truth) for r in items} | {counts[task].shape[1]}
            if len(n_test) != 1:
                raise DataError(f"task {task}: test splits differ between models or draws")
            ones = np.ones((1, len(items[0].truth)))
            point = float(np.mean([M.weighted_auroc(r.truth, r.scores, ones)[0] for r in items]))
            boot = np.mean([M.weighted_auroc(r.truth, r.scores, counts[task]) for r in items], 0)
            per_task.append((point, boot))
            rows.append(
                _summary_row(
                    model, protocol, fraction, task, point, boot, q, n_test.pop(), len(items)
                )
            )
        if len(by_task) == len(tasks) and len(tasks) > 1:
            point = float(np.mean([p for p, _ in per_task]))
            boot = np.mean([b for _, b in per_task], axis=0)
            n_test = sum(len(items[0].truth) for items in by_task.values())
            draws = max(len(items) for items in by_task.values())
            rows.append(
                _summary_row(model, protocol, fraction, MEAN_TASK, point, boot, q, n_test, draws)
            )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def _summary_row(
    model: str, protocol: str, fraction: float, task: str, point: float, boot: np.ndarray,
    q: tuple[float, float], n_test: int, draws: int,
) -> dict[str, Any]:  # fmt: skip
    valid = boot[np.isfinite(boot)]
    low, high = np.quantile(valid, q) if valid.size else (np.nan, np.nan)
    return {
        "model": model, "protocol": protocol, "fraction": fraction, "task": task,
        "auroc": float(point), "low": float(low), "high": float(high), "n_test": int(n_test),
        "draws": int(draws),
    }  # fmt: skip
