"""Figures of a study report (matplotlib, Agg): each returns the figure and its caption.

All take the results table of `ecgscale.study.results.Results.table` (one row per run x task) and
the fits of `ecgscale.report.findings.StudyFits`. Conventions of every figure: log-log axes with
labelled ticks and units; families in panels of at most two columns (the page is 1,400 px wide);
fitted curves solid over the range of the data and dashed where extrapolated; shaded bands are 95 %
bootstrap bands of the fitted curve (percentiles of the curves of the bootstrap resamples). Captions
are written from `findings` quantities, the same objects as the report's tables.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

from ecgscale.models.flops import format_count
from ecgscale.report.findings import Quantity, StudyFits
from ecgscale.scaling import JointFit, optimal_allocation

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
PANEL_IN = (5.2, 3.3)  # inches per panel; at 110 dpi two panels are 1,144 px wide
EXTRAPOLATE = 3.0  # dashed curves reach this factor beyond the largest N or D
BAND = (2.5, 97.5)
TARGET_LABELS = {
    "id_loss": "ID loss (objective's test loss)",
    "ood_loss": "OOD loss (probe test BCE, nats, mean over tasks)",
}
AXIS_LABELS = {
    "n_params": "N (encoder parameters)",
    "n_samples": "D (training records)",
    "train_flops": "training compute C (FLOPs)",
}
EXPONENTS = {"n_params": "alpha", "n_samples": "beta"}
BAND_NOTE = (
    "Points: runs; lines: the joint fit L(N, D) = E + A N^-alpha + B D^-beta, solid over the data, "
    "dashed where extrapolated; shaded: its 95 % bootstrap band."
)


def per_run(table: pd.DataFrame, target: str) -> pd.DataFrame:
    """One row per run with the task-mean of `target`."""
    rows = table[table[target].notna()]
    cols = ["family", "size", "n_params", "n_samples", "train_flops", "data_fraction", "seed"]
    return (
        rows.groupby("run_id", sort=False)
        .agg(**{c: (c, "first") for c in cols}, **{target: (target, "mean")})
        .reset_index()
    )


def _families(runs: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(runs["family"]))


def _panels(count: int) -> tuple[Figure, list[plt.Axes]]:
    cols = min(2, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(PANEL_IN[0] * cols, PANEL_IN[1] * rows), squeeze=False
    )
    flat = list(axes.flat)
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def nice_ticks(lo: float, hi: float) -> list[float]:
    """Log-axis ticks within [lo, hi]: powers of ten, else 1-2-5, else 1-9 steps, so that at least
    two ticks are labelled even on a span of less than a factor of two."""
    lo, hi = min(lo, hi), max(lo, hi)
    for mantissas in ((1.0,), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)):
        ticks = [
            m * 10.0**k
            for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
            for m in mantissas
            if lo <= m * 10.0**k <= hi
        ]
        if len(ticks) >= 2 and len(ticks) <= 8:
            return ticks
    return list(np.geomspace(lo, hi, 3))


def _count_label(value: float, _: int = 0) -> str:
    return format_count(value)


def _loss_label(value: float, _: int = 0) -> str:
    return f"{value:.3g}"


def log_axes(ax: plt.Axes, x_counts: bool = True) -> None:
    """Log-log axes with ticks from `nice_ticks` (counts as 2K, 6.3M; losses to 3 digits)."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis, formatter, lim in (
        (ax.xaxis, _count_label if x_counts else _loss_label, ax.get_xlim()),
        (ax.yaxis, _loss_label, ax.get_ylim()),
    ):
        axis.set_major_locator(FixedLocator(nice_ticks(*lim)))
        axis.set_major_formatter(FuncFormatter(formatter))
        axis.set_minor_locator(NullLocator())
        axis.set_minor_formatter(NullFormatter())
    ax.tick_params(labelsize=8)
    ax.grid(True, which="major", lw=0.3, alpha=0.5)


def _joint_curves(fit: JointFit, n: np.ndarray, d: np.ndarray):
    """Fitted loss at (n, d) (broadcast) and its 95 % bootstrap band."""
    n, d = np.broadcast_arrays(np.asarray(n, float), np.asarray(d, float))
    mid = fit.predict(n, d)
    s = fit.samples[np.isfinite(fit.samples).all(axis=1)]
    if len(s) == 0:
        return mid, mid, mid
    with np.errstate(over="ignore", invalid="ignore"):
        curves = (
            s[:, 0, None]
            + s[:, 1, None] * n[None] ** -s[:, 3, None]
            + s[:, 2, None] * d[None] ** -s[:, 4, None]
        )
    lo, hi = np.nanpercentile(curves, BAND, axis=0)
    return mid, lo, hi


def _draw_fit(ax: plt.Axes, x: np.ndarray, inside: np.ndarray, curves, color: str) -> None:
    """Solid inside the data range, dashed outside; band over the whole grid."""
    mid, lo, hi = curves
    ax.fill_between(x, lo, hi, color=color, alpha=0.12, lw=0)
    ax.plot(x[inside], mid[inside], color=color, lw=1.2)
    ax.plot(x[x >= x[inside][-1]], mid[x >= x[inside][-1]], color=color, lw=1.0, ls="--")


def loss_vs_axis(
    table: pd.DataFrame,
    fits: StudyFits,
    target: str,
    axis: str,
    external: pd.DataFrame | None = None,
) -> tuple[Figure, str]:
    """Loss against N (`axis` "n_params", one curve per D) or D (one curve per N), per family.
    `external` (`ecgscale.study.external.external_points`) adds each external model's task-mean
    OOD loss at its N as a labelled star on every panel of the OOD loss against N."""
    kind = "id" if target == "id_loss" else "ood"
    runs = per_run(table, target)
    families = _families(runs)
    other = "n_samples" if axis == "n_params" else "n_params"
    fig, axes = _panels(len(families))
    for ax, family in zip(axes, families, strict=True):
        rows = runs[runs["family"] == family]
        fit = fits.fit(kind, family)
        lo_x, hi_x = rows[axis].min(), rows[axis].max()
        grid = np.geomspace(lo_x, hi_x * EXTRAPOLATE, 80)
        inside = grid <= hi_x * (1 + 1e-9)
        for k, (value, group) in enumerate(rows.groupby(other)):
            color = COLORS[k % len(COLORS)]
            name = "D" if other == "n_samples" else "N"
            ax.scatter(group[axis], group[target], color=color, s=14, zorder=3,
                       label=f"{name} = {format_count(value)}")  # fmt: skip
            if fit is not None:
                n, d = (grid, value) if axis == "n_params" else (value, grid)
                _draw_fit(ax, grid, inside, _joint_curves(fit, n, d), color)
        if (
            external is not None
            and not external.empty
            and (target, axis) == ("ood_loss", "n_params")
        ):
            _external_stars(ax, external)
        ax.set_title(family, fontsize=10)
        ax.set_xlabel(AXIS_LABELS[axis], fontsize=9)
        ax.set_ylabel(TARGET_LABELS[target], fontsize=8)
        log_axes(ax)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    caption = axis_reading(fits, kind, EXPONENTS[axis]) + " " + BAND_NOTE
    if external is not None and not external.empty and (target, axis) == ("ood_loss", "n_params"):
        caption += (
            " Stars: external models probed on the same tasks (task-mean OOD loss at their N)."
        )
    return fig, caption


def _external_stars(ax: plt.Axes, external: pd.DataFrame) -> None:
    """Each external model's task-mean OOD loss at its N, as a labelled black star."""
    points = external.groupby("name", sort=False).agg(
        n=("n_params", "first"), loss=("ood_loss", "mean")
    )
    ax.scatter(points["n"], points["loss"], marker="*", s=90, color="black", zorder=4)
    for name, row in points.iterrows():
        ax.annotate(str(name), (row["n"], row["loss"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)  # fmt: skip


def fastest(fits: StudyFits, kind: str, name: str) -> tuple[str, Quantity] | None:
    """The family whose identified exponent `name` ("alpha", "beta", "kappa") is largest."""
    values = {f: fits.exponent(kind, f, name) for f in (fits.id if kind == "id" else fits.ood)}
    known = {f: q for f, q in values.items() if q.identified}
    if not known:
        return None
    best = max(known, key=lambda f: known[f].estimate.value)
    return best, known[best]


def axis_reading(fits: StudyFits, kind: str, name: str) -> str:
    """Which family's loss falls fastest along N (alpha) or D (beta), from identified fits only;
    the others are named with the reason they are not identified."""
    families = list(fits.id if kind == "id" else fits.ood)
    label = "ID" if kind == "id" else "OOD"
    symbol = "N" if name == "alpha" else "D"
    best = fastest(fits, kind, name)
    missing = {f: fits.exponent(kind, f, name) for f in families}
    missing = {f: q for f, q in missing.items() if not q.identified}
    text = (
        f"{label} loss falls fastest with {symbol} for {best[0]} ({name} = {best[1].text()})."
        if best
        else f"No family's {label} {name} is identified from these runs."
    )
    if missing:
        text += " Not identified: " + "; ".join(f"{f} ({q.reason})" for f, q in missing.items())
        text += "."
    return text


def transfer_plot(table: pd.DataFrame, fits: StudyFits) -> tuple[Figure, str]:
    """Excess OOD loss against excess ID loss per family (log-log), with the loss-to-loss fit
    dL_OOD = K dL_ID^kappa, both excesses over the irreducible losses E of the scaling fits."""
    id_runs = per_run(table, "id_loss").set_index("run_id")
    ood_runs = per_run(table[table["task"] != "id"], "ood_loss").set_index("run_id")
    runs = id_runs.join(ood_runs[["ood_loss"]], how="inner")
    families = _families(runs.reset_index())
    fig, axes = _panels(len(families))
    parts = []
    for ax, family in zip(axes, families, strict=True):
        rows = runs[runs["family"] == family]
        transfer = fits.transfer(family)
        ax.set_title(family, fontsize=10)
        if transfer is None:
            ax.text(0.5, 0.5, "no loss-to-loss fit", ha="center", transform=ax.transAxes)
            continue
        e_id, e_ood = transfer.E_id.value, transfer.E_ood.value
        dx, dy = rows["id_loss"] - e_id, rows["ood_loss"] - e_ood
        ok = (dx > 0) & (dy > 0)
        ax.scatter(dx[ok], dy[ok], color=COLORS[0], s=14, zorder=3)
        grid = np.geomspace(dx[ok].min(), dx[ok].max(), 50)
        ax.plot(grid, transfer.K.value * grid**transfer.kappa.value, color="k", lw=1.2)
        ax.set_xlabel(f"excess ID loss L_ID - E_ID (E_ID = {e_id:.3g})", fontsize=8)
        ax.set_ylabel(f"excess OOD loss (E_OOD = {e_ood:.3g})", fontsize=8)
        log_axes(ax, x_counts=False)
        q = fits.exponent("ood", family, "kappa")
        parts.append(f"{family} kappa = {q.text()}")
    fig.tight_layout()
    reading = (
        "Loss-to-loss transfer on excess losses, dL_OOD = K (dL_ID)^kappa, with E_ID and E_OOD "
        "from the scaling fits of the same runs (line: the fit; kappa < 1: OOD loss improves more "
        "slowly than ID loss): " + "; ".join(parts) + "."
        if parts
        else "Too few runs per family to fit the loss-to-loss transfer."
    )
    return fig, reading


def compute_plot(table: pd.DataFrame, fits: StudyFits, target: str) -> tuple[Figure, str]:
    """Loss against training compute per family, with the compute-optimal frontier of each fit
    (solid up to the largest run's compute, dashed beyond)."""
    kind = "id" if target == "id_loss" else "ood"
    runs = per_run(table, target)
    fig, ax = plt.subplots(figsize=(PANEL_IN[0] * 1.3, PANEL_IN[1] * 1.3))
    parts = []
    for k, family in enumerate(_families(runs)):
        color = COLORS[k % len(COLORS)]
        rows = runs[runs["family"] == family]
        ax.scatter(rows["train_flops"], rows[target], color=color, s=14, label=family, zorder=3)
        group = (fits.id if kind == "id" else fits.ood).get(family)
        share = fits.data_share(kind, family)
        if group is None or group.compute is None or not share.identified:
            parts.append(f"{family}: data share {share.text(percent=True)}")
            continue
        top = rows["train_flops"].max()
        budgets = np.geomspace(rows["train_flops"].min(), top * 10, 60)
        n_opt, d_opt = optimal_allocation(group.fit, budgets, group.compute.flops)
        ok = np.isfinite(n_opt)
        inside = ok & (budgets <= top * (1 + 1e-9))
        loss = group.fit.predict(n_opt, d_opt)
        ax.plot(budgets[inside], loss[inside], color=color, lw=1.2)
        ax.plot(budgets[ok & (budgets >= top)], loss[ok & (budgets >= top)], color=color, ls="--")
        parts.append(f"{family}: data share {share.text(percent=True)}")
    ax.set_xlabel(AXIS_LABELS["train_flops"], fontsize=9)
    ax.set_ylabel(TARGET_LABELS[target], fontsize=9)
    log_axes(ax)
    ax.legend(fontsize=7)
    fig.tight_layout()
    reading = (
        "Lines: the compute-optimal frontier of each joint fit (solid up to the largest run's "
        "compute, dashed beyond), under the compute model measured from the runs. Share of each "
        "extra unit of log compute that should go to data, 95 % interval: " + "; ".join(parts) + "."
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
