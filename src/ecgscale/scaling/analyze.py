"""From a results table to answers: group runs, fit the law the group supports, derive the rest.

Per group (the distinct values of the `by` columns):

1. Rows without a value of the target are dropped; the target is averaged over the remaining tasks
   of each run, so one point is one run (add `task` to `by` for per-task fits).
2. The law: L(N, D) when both n_params and n_samples vary, else the one-axis law of the one that
   varies (or of the column `x`, e.g. n_labels, when given).
3. Saturation, and for a joint fit the compute-optimal allocation under the compute model measured
   from the group's runs (training FLOPs per record as a power law in N).
4. Loss-to-loss transfer per task and on task-mean losses, when the table has OOD losses: the
   irreducible losses come from scaling fits of id_loss and ood_loss of the same runs, bootstrapped
   on the same resamples (see `transfer`).

Across groups: exponent ratios between every pair of groups fitted with the same law.

A `FitCache` shared by several `fit_results` calls makes each distinct fit once: the ID and OOD
scaling fits that the transfer fits need are the groups' own fits of the same runs (same points,
same order, same seeded resamples), so they are reused rather than refitted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgscale.errors import DataError, UserError
from ecgscale.fileio import atomic_write
from ecgscale.scaling.compute import (
    ComputeOptimal,
    ExponentComparison,
    Saturation,
    compare_exponents,
    compute_optimal,
    fit_flops_model,
    saturation,
)
from ecgscale.scaling.fits import AxisFit, JointFit, fit_axis, fit_joint
from ecgscale.scaling.transfer import TransferFit, fit_transfer

MEAN_TASK = "mean over tasks"
_FLOPS_TOLERANCE = 0.25  # a measured compute model further than this from a power law gets a note


class FitCache:
    """Scaling fits by what determines them: target, x, the runs and their losses, the options.

    A fit made with the leave-largest-out check also answers a request without it (the check
    only adds diagnostics)."""

    def __init__(self) -> None:
        self._fits: dict[tuple[Any, ...], JointFit | AxisFit] = {}

    @staticmethod
    def _key(runs: pd.DataFrame, target: str, x: str | None, options: dict[str, Any]):
        opts = {k: repr(v) for k, v in sorted(options.items()) if k != "extrapolate"}
        return (
            target,
            x,
            tuple(runs["run_id"]),
            runs[target].to_numpy(np.float64).tobytes(),
            tuple(opts.items()),
        )

    def fit(
        self, runs: pd.DataFrame, target: str, x: str | None, **options: Any
    ) -> JointFit | AxisFit:
        """`_fit_law(runs, target, x, **options)`, made once per distinct request."""
        key = self._key(runs, target, x, options)
        extrapolate = options.get("extrapolate", True)
        for variant in (True,) if extrapolate else (False, True):
            if (*key, variant) in self._fits:
                return self._fits[(*key, variant)]
        fit = _fit_law(runs, target, x, **options)
        self._fits[(*key, extrapolate)] = fit
        return fit


@dataclass(frozen=True, eq=False)
class TaskTransfer:
    """The transfer fit of one task (or of task-mean losses, task == MEAN_TASK)."""

    task: str
    fit: TransferFit

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, **self.fit.to_dict()}


@dataclass(frozen=True, eq=False)
class GroupAnalysis:
    """Everything fitted for one group: `key` holds the values of the grouping columns."""

    key: tuple[tuple[str, str], ...]
    target: str
    n_runs: int
    fit: JointFit | AxisFit
    saturation: Saturation
    compute: ComputeOptimal | None
    transfer: tuple[TaskTransfer, ...]
    notes: tuple[str, ...]

    @property
    def label(self) -> str:
        """The group's values, e.g. "resnet/cmsc" ("all runs" without grouping columns)."""
        return _label(self.key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": dict(self.key),
            "label": self.label,
            "target": self.target,
            "n_runs": self.n_runs,
            "fit": self.fit.to_dict(),
            "saturation": self.saturation.to_dict(),
            "compute_optimal": None if self.compute is None else self.compute.to_dict(),
            "transfer": [t.to_dict() for t in self.transfer],
            "notes": list(self.notes),
        }


def _label(key: tuple[tuple[str, str], ...]) -> str:
    return "/".join(v for _, v in key) or "all runs"


def _require_columns(table: pd.DataFrame, names: Sequence[str], what: str) -> None:
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise DataError(
            f"{what}: no column {', '.join(missing)} in the results table; "
            f"available: {', '.join(map(str, table.columns))}"
        )


def _per_run(rows: pd.DataFrame, target: str, x: str | None) -> pd.DataFrame:
    """One row per run (sorted by run_id): run-level columns and the task-mean target."""
    run_cols = ["n_params", "n_samples", "train_flops"] + ([x] if x else [])
    if x and (rows.groupby("run_id")[x].nunique(dropna=False) > 1).any():
        raise DataError(f"column {x} differs between tasks of one run; expected one value per run")
    agg = rows.groupby("run_id", sort=True).agg(
        **{c: (c, "first") for c in run_cols}, **{target: (target, "mean")}
    )
    return agg.reset_index()


def _fit_law(runs: pd.DataFrame, target: str, x: str | None, **options: Any) -> JointFit | AxisFit:
    """The joint law when N and D both vary, else the one-axis law of what varies (or of x)."""
    loss = runs[target].to_numpy()
    if x is not None:
        return fit_axis(runs[x].to_numpy(), loss, axis=x, **options)
    n, d = runs["n_params"].to_numpy(), runs["n_samples"].to_numpy()
    vary_n, vary_d = np.unique(n).size > 1, np.unique(d).size > 1
    if vary_n and vary_d:
        return fit_joint(n, d, loss, **options)
    if vary_n or vary_d:
        return fit_axis(n if vary_n else d, loss, axis="N" if vary_n else "D", **options)
    raise UserError("n_params and n_samples take one value each; nothing to fit")


def _transfers(
    rows: pd.DataFrame, x: str | None, options: dict[str, Any], cache: FitCache
) -> tuple[list[TaskTransfer], list[str]]:
    """Per-task and task-mean transfer fits of the group's rows; skipped ones become notes."""
    paired = rows[rows["ood_loss"].notna()]
    out: list[TaskTransfer] = []
    notes: list[str] = []

    def one(name: str, runs: pd.DataFrame) -> None:
        quiet = {**options, "extrapolate": False}
        try:
            fit_id = cache.fit(runs, "id_loss", x, **quiet)
            fit_ood = cache.fit(runs, "ood_loss", x, **quiet)
            fit = fit_transfer(
                runs["id_loss"].to_numpy(),
                runs["ood_loss"].to_numpy(),
                e_id=fit_id,
                e_ood=fit_ood,
                **options,
            )
        except UserError as exc:
            notes.append(f"transfer ({name}) skipped: {exc}")
            return
        out.append(TaskTransfer(name, fit))

    tasks = sorted(paired["task"].unique())
    for task in tasks:
        task_rows = paired[paired["task"] == task]
        runs = _per_run(task_rows, "id_loss", x).merge(
            task_rows.groupby("run_id", sort=True)["ood_loss"].mean().reset_index(), on="run_id"
        )
        one(task, runs)
    if len(tasks) > 1:
        complete = paired.groupby("run_id")["task"].nunique() == len(tasks)
        full = paired[paired["run_id"].isin(complete[complete].index)]
        runs = _per_run(full, "id_loss", x).merge(
            full.groupby("run_id", sort=True)["ood_loss"].mean().reset_index(), on="run_id"
        )
        one(MEAN_TASK, runs)
    return out, notes


def analyze_group(
    key: tuple[tuple[str, str], ...],
    rows: pd.DataFrame,
    *,
    target: str,
    x: str | None = None,
    transfer: bool = True,
    cache: FitCache | None = None,
    **options: Any,
) -> GroupAnalysis:
    """Fit one group's rows (see the module docstring); options go to every fit (`FitOptions`).
    `cache`: reuse fits of earlier calls (`FitCache`)."""
    label = _label(key)
    rows = rows[rows[target].notna()]
    if rows.empty:
        raise UserError(f"group {label}: no rows with a value of {target}")
    runs = _per_run(rows, target, x)
    cache = cache if cache is not None else FitCache()
    try:
        fit = cache.fit(runs, target, x, **options)
    except UserError as exc:
        raise UserError(f"group {label} ({len(runs)} runs): {exc}") from exc
    notes: list[str] = []
    compute = None
    if isinstance(fit, JointFit):
        per_record = runs["train_flops"].to_numpy() / runs["n_samples"].to_numpy()
        flops = fit_flops_model(runs["n_params"].to_numpy(), per_record)
        if flops.max_rel_error > _FLOPS_TOLERANCE:
            notes.append(
                f"training FLOPs per record are up to {100 * flops.max_rel_error:.0f} % off a "
                "power law in N; the compute model C = c(N) D is approximate"
            )
        top = float(runs["train_flops"].max())
        compute = compute_optimal(fit, [top, 10 * top, 100 * top], flops=flops)
    transfers: list[TaskTransfer] = []
    if transfer and "ood_loss" in rows.columns and rows["ood_loss"].notna().any():
        transfers, skipped = _transfers(rows, x, options, cache)
        notes += skipped
    return GroupAnalysis(
        key=key,
        target=target,
        n_runs=len(runs),
        fit=fit,
        saturation=saturation(fit),
        compute=compute,
        transfer=tuple(transfers),
        notes=tuple(notes),
    )


def fit_results(
    table: pd.DataFrame,
    *,
    target: str = "ood_loss",
    by: Sequence[str] = ("family", "objective"),
    x: str | None = None,
    transfer: bool = True,
    progress: Callable[[str], None] | None = None,
    cache: FitCache | None = None,
    **options: Any,
) -> list[GroupAnalysis]:
    """Analyse every group of a validated results table (`table.load_results`).

    progress: called with each group's label before it is fitted (for a progress display).
    cache: share fits with other calls (`FitCache`); by default one cache for this call.
    """
    cache = cache if cache is not None else FitCache()
    _require_columns(table, [target], "--target")
    _require_columns(table, list(by), "--by")
    if x is not None:
        _require_columns(table, [x], "--x")
    if not pd.api.types.is_numeric_dtype(table[target]):
        raise DataError(f"--target: column {target} is not numeric")
    groups = [((), table)] if not by else table.groupby(list(by), sort=True, dropna=False)
    out = []
    for values, rows in groups:
        values = values if isinstance(values, tuple) else (values,)
        key = tuple(zip(by, map(str, values), strict=True))
        if progress is not None:
            progress(_label(key))
        out.append(
            analyze_group(key, rows, target=target, x=x, transfer=transfer, cache=cache, **options)
        )
    return out


def compare_groups(analyses: Sequence[GroupAnalysis]) -> list[ExponentComparison]:
    """Exponent ratios (with intervals) between every pair of groups fitted with the same law."""
    out: list[ExponentComparison] = []
    for i, first in enumerate(analyses):
        for second in analyses[i + 1 :]:
            a, b = first.fit, second.fit
            if isinstance(a, JointFit) and isinstance(b, JointFit):
                pairs = [("alpha", "parameters"), ("beta", "training records")]
            elif isinstance(a, AxisFit) and isinstance(b, AxisFit) and a.axis == b.axis:
                pairs = [
                    ("alpha", {"N": "parameters", "D": "training records"}.get(a.axis, a.axis))
                ]
            else:
                continue
            out += [
                compare_exponents(
                    a, b, param=p, label_x=first.label, label_y=second.label, resource=r
                )
                for p, r in pairs
            ]
    return out


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars become numbers, NaN and infinities become null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_json(payload: dict[str, Any], path: str | Path) -> Path:
    """Write `payload` as strict JSON (NaN -> null) atomically (`ecgscale.fileio`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")
    return path
