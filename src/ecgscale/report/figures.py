"""Figures of a study report (matplotlib, Agg): each returns the figure and a one-sentence reading.

All take the results table of `ecgscale.study.results.Results.table` (one row per run x task) and
the fitted `GroupAnalysis` objects of `ecgscale.scaling.analyze.fit_results`, grouped by family.
Fitted curves are drawn at the median of the bootstrap, with a 90 % band from the bootstrap
samples.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from ecgscale.scaling import AxisFit, JointFit
from ecgscale.scaling.analyze import GroupAnalysis

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def per_run(table: pd.DataFrame, target: str) -> pd.DataFrame:
    """One row per run with the task-mean of `target`."""
    rows = table[table[target].notna()]
    cols = ["family", "size", "n_params", "n_samples", "train_flops", "data_fraction"]
    return (
        rows.groupby("run_id", sort=False)
        .agg(**{c: (c, "first") for c in cols}, **{target: (target, "mean")})
        .reset_index()
    )


def _axis_band(fit: AxisFit, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fitted loss along `x` and its 5-95 % bootstrap band."""
    s = fit.samples[np.isfinite(fit.samples).all(axis=1)]
    mid = fit.predict(x)
    if len(s) == 0:
        return mid, mid, mid
    curves = s[:, 0, None] + s[:, 1, None] * x[None] ** -s[:, 2, None]
    lo, hi = np.percentile(curves, [5, 95], axis=0)
    return mid, lo, hi


def _families(runs: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(runs["family"]))


def loss_vs_axis(
    table: pd.DataFrame, fits: dict[str, GroupAnalysis], target: str, axis: str
) -> tuple[Figure, str]:
    """Loss against N (`axis` "n_params", one curve per D) or D (one curve per N), per family."""
    runs = per_run(table, target)
    families = _families(runs)
    other = "n_samples" if axis == "n_params" else "n_params"
    fig, axes = plt.subplots(1, len(families), figsize=(4 * len(families), 3.4), squeeze=False)
    for ax, family in zip(axes[0], families, strict=True):
        rows = runs[runs["family"] == family]
        fit = fits[family].fit if family in fits else None
        grid = np.geomspace(rows[axis].min() / 1.5, rows[axis].max() * 3, 60)
        for k, (value, group) in enumerate(rows.groupby(other)):
            color = COLORS[k % len(COLORS)]
            label = f"{'D' if other == 'n_samples' else 'N'}={value:,.0f}"
            ax.scatter(group[axis], group[target], color=color, s=18, label=label, zorder=3)
            if isinstance(fit, JointFit):
                n, d = (grid, value) if axis == "n_params" else (value, grid)
                mid, lo, hi = _joint_band(fit, n, d)
                ax.plot(grid, mid, color=color, lw=1)
                ax.fill_between(grid, lo, hi, color=color, alpha=0.15, lw=0)
        if isinstance(fit, AxisFit) and fit.axis == ("N" if axis == "n_params" else "D"):
            mid, lo, hi = _axis_band(fit, grid)
            ax.plot(grid, mid, color="k", lw=1)
            ax.fill_between(grid, lo, hi, color="k", alpha=0.12, lw=0)
        _log_axes(ax)
        ax.set_title(family, fontsize=10)
        ax.set_xlabel("N (encoder parameters)" if axis == "n_params" else "D (training records)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(TARGET_NAMES.get(target, target))
    fig.tight_layout()
    return fig, _reading_axis(fits, target, "alpha" if axis == "n_params" else "beta")


def _log_axes(ax: plt.Axes) -> None:
    """Log-log axes with labelled major ticks only (minor labels overlap on short spans)."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(NullFormatter())


def _joint_band(fit: JointFit, n: np.ndarray | float, d: np.ndarray | float):
    """Fitted loss at (n, d) (broadcast) and its 5-95 % bootstrap band."""
    s = fit.samples[np.isfinite(fit.samples).all(axis=1)]
    n, d = np.broadcast_arrays(np.asarray(n, float), np.asarray(d, float))
    mid = fit.predict(n, d)
    if len(s) == 0:
        return mid, mid, mid
    curves = (
        s[:, 0, None]
        + s[:, 1, None] * n[None] ** -s[:, 3, None]
        + s[:, 2, None] * d[None] ** -s[:, 4, None]
    )
    lo, hi = np.percentile(curves, [5, 95], axis=0)
    return mid, lo, hi


def _exponent(fit: JointFit | AxisFit, which: str):
    if isinstance(fit, JointFit):
        return getattr(fit, which)
    axis = "N" if which == "alpha" else "D"
    return fit.alpha if fit.axis == axis else None


TARGET_NAMES = {"id_loss": "ID loss", "ood_loss": "OOD loss"}


def _identified(fit: JointFit | AxisFit, name: str) -> bool:
    """False when the fit warns that parameter `name` is at a bound or poorly identified."""
    return not any(w.startswith((f"{name} reaches", f"{name} is poorly")) for w in fit.warnings)


def _reading_axis(fits: dict[str, GroupAnalysis], target: str, which: str) -> str:
    values = {f: _exponent(g.fit, which) for f, g in fits.items()}
    values = {f: e for f, e in values.items() if e is not None}
    label = TARGET_NAMES.get(target, target)
    symbol = "N" if which == "alpha" else "D"
    if not values:
        return f"No family varies along this axis enough to fit {which}."
    supported = {f: e for f, e in values.items() if _identified(fits[f].fit, which)}
    if not supported:
        shown = "; ".join(
            f"{f} {e.value:.2f} [{e.low:.2f}, {e.high:.2f}]" for f, e in values.items()
        )
        return (
            f"{label} against {symbol}: no family's {which} is identifiable from these points "
            f"(see the warnings in the table); point estimates with 95 % intervals: {shown}."
        )
    best = max(supported, key=lambda f: supported[f].value)
    e = supported[best]
    text = (
        f"Among identifiable fits, {label} falls fastest with {symbol} for {best} "
        f"({which} = {e.value:.2f}, 95 % CI {e.low:.2f}-{e.high:.2f})"
    )
    sat = [f for f, g in fits.items() if g.saturation.saturated]
    if sat:
        text += (
            f"; {', '.join(sat)} {'is' if len(sat) == 1 else 'are'} saturated at the largest size"
        )
    return text + "."


def transfer_plot(table: pd.DataFrame, ood: dict[str, GroupAnalysis]) -> tuple[Figure, str]:
    """Task-mean OOD loss against ID loss per family, with the loss-to-loss fit."""
    id_runs = per_run(table, "id_loss").set_index("run_id")
    ood_runs = per_run(table[table["task"] != "id"], "ood_loss").set_index("run_id")
    runs = id_runs.join(ood_runs[["ood_loss"]], how="inner")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    parts = []
    for k, family in enumerate(_families(runs.reset_index())):
        color = COLORS[k % len(COLORS)]
        rows = runs[runs["family"] == family]
        ax.scatter(rows["id_loss"], rows["ood_loss"], color=color, s=18, label=family)
        transfer = next(
            (t.fit for t in ood.get(family, _Empty()).transfer if t.task == "mean over tasks"), None
        )
        if transfer is not None:
            grid = np.linspace(rows["id_loss"].min(), rows["id_loss"].max(), 50)
            grid = grid[grid > transfer.E_id.value]
            ax.plot(grid, transfer.predict(grid), color=color, lw=1)
            kappa = transfer.kappa
            note = "" if _identified(transfer, "kappa") else ", not identifiable"
            parts.append(
                f"{family} kappa = {kappa.value:.2f} ({kappa.low:.2f}-{kappa.high:.2f}{note})"
            )
    ax.set_xlabel("ID loss")
    ax.set_ylabel("OOD loss (mean over tasks)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    reading = (
        (
            "Loss-to-loss transfer L_OOD = E + K (L_ID - E_ID)^kappa: "
            + "; ".join(parts)
            + ". kappa < 1 means OOD loss improves more slowly than ID loss."
        )
        if parts
        else "Too few runs per family to fit the loss-to-loss transfer."
    )
    return fig, reading


class _Empty:
    transfer: tuple = ()


def compute_plot(table: pd.DataFrame, fits: dict[str, GroupAnalysis], target: str):
    """Loss against training compute per family, with the compute-optimal frontier of the fit."""
    runs = per_run(table, target)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    parts = []
    for k, family in enumerate(_families(runs)):
        color = COLORS[k % len(COLORS)]
        rows = runs[runs["family"] == family]
        ax.scatter(rows["train_flops"], rows[target], color=color, s=18, label=family)
        g = fits.get(family)
        if g is None or g.compute is None or not isinstance(g.fit, JointFit):
            continue
        flops = g.compute.flops
        budgets = np.geomspace(rows["train_flops"].min(), rows["train_flops"].max() * 10, 40)
        from ecgscale.scaling import optimal_allocation

        n_opt, d_opt = optimal_allocation(g.fit, budgets, flops)
        ok = np.isfinite(n_opt)
        ax.plot(budgets[ok], g.fit.predict(n_opt[ok], d_opt[ok]), color=color, lw=1, ls="--")
        a = g.compute.n_exponent
        parts.append(f"{family}: N* ~ C^{a.value:.2f} ({a.low:.2f}-{a.high:.2f})")
    _log_axes(ax)
    ax.set_xlabel("training compute (FLOPs)")
    ax.set_ylabel(TARGET_NAMES.get(target, target))
    ax.legend(fontsize=7)
    fig.tight_layout()
    reading = (
        ("Dashed: compute-optimal frontier of each joint fit; " + "; ".join(parts) + ".")
        if parts
        else "No family has a joint fit, so no compute-optimal frontier is drawn."
    )
    return fig, reading


LABEL_GROUP_STYLES = {"frequent": "o-", "tail": "s--"}
"""Label groups of `label_scaling_plot` and their line styles."""


def label_scaling_plot(labels: pd.DataFrame) -> tuple[Figure, str] | None:
    """Common-label-set ID loss of frequent and tail labels against the number of pre-training
    labels k, per family (mean over the family's runs at each k).

    `labels` is `ecgscale.study.results.Results.label_table` (one row per run x label group);
    None when it has no frequent or tail rows (no label-scaling runs).
    """
    rows = labels[labels["label_group"].isin(LABEL_GROUP_STYLES)]
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4))
    parts = []
    for k, family in enumerate(_families(rows)):
        color = COLORS[k % len(COLORS)]
        curves = {}
        for group, style in LABEL_GROUP_STYLES.items():
            members = rows[(rows["family"] == family) & (rows["label_group"] == group)]
            if members.empty:
                continue
            curve = members.groupby("n_labels")["id_loss"].mean()
            curves[group] = (curve, int(members["n_classes"].iloc[0]))
            ax.plot(curve.index, curve.to_numpy(), style, color=color, label=f"{family} {group}")
        parts.append(f"{family} {_label_curves_reading(curves)}")
    ks = np.unique(rows["n_labels"].to_numpy())
    ax.set_xscale("log")
    ax.set_xticks(ks, [f"{k:g}" for k in ks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("pre-training labels k (top-k most frequent classes, log scale)")
    ax.set_ylabel("common-set ID loss (test BCE per label, nats)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    reading = (
        "Linear-probe ID loss on one fixed label set, averaged over its frequent labels (those "
        "every run was trained on) and its tail labels, as the pre-training labels grow: "
        + "; ".join(parts)
        + "."
    )
    return fig, reading


def _label_curves_reading(curves: dict[str, tuple[pd.Series, int]]) -> str:
    """E.g. "frequent (2 labels) from 0.236 at k = 2 to 0.235 at k = 6 (-0.5 %), tail ..."
    from (loss per k, number of labels) of each group."""
    out = []
    for group, (curve, n) in curves.items():
        first, last = float(curve.iloc[0]), float(curve.iloc[-1])
        if len(curve) == 1:
            out.append(f"{group} ({n} labels) {first:.3f} at k = {curve.index[0]:g}")
            continue
        out.append(
            f"{group} ({n} labels) from {first:.3f} at k = {curve.index[0]:g} to {last:.3f} "
            f"at k = {curve.index[-1]:g} ({100 * (last / first - 1):+.1f} %)"
        )
    return ", ".join(out)
