"""Figures of a benchmark summary (`ecgscale.evaluate.benchmark.summarise`), matplotlib Agg.

* `benchmark.png`: one panel per protocol at the largest label fraction; one row per task plus the
  mean over tasks, one marker per model with its 95 % bootstrap interval.
* `sample_efficiency.png` (only with several fractions): the mean AUROC over tasks (or the task,
  when there is one) against the label fraction, one line per model with its band.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ecgscale.fileio import replace_durably

_PANEL_IN = (5.2, 0.42)  # inches: panel width, height per task row


def _save(fig: plt.Figure, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    replace_durably(tmp, path)


def auroc_figure(summary: pd.DataFrame) -> plt.Figure:
    """AUROC per task and model, one panel per protocol (at the largest fraction)."""
    top = summary[summary["fraction"] == summary["fraction"].max()]
    protocols = list(dict.fromkeys(top["protocol"]))
    models = list(dict.fromkeys(top["model"]))
    tasks = list(dict.fromkeys(top["task"]))
    if "mean" in tasks:
        tasks = [t for t in tasks if t != "mean"] + ["mean"]
    height = max(2.4, _PANEL_IN[1] * len(tasks) * max(1, len(models)) ** 0.5 + 1.2)
    fig, axes = plt.subplots(
        1, len(protocols), figsize=(_PANEL_IN[0] * len(protocols), height), sharey=True,
        squeeze=False,
    )  # fmt: skip
    colours = plt.get_cmap("tab10")
    offsets = np.linspace(-0.3, 0.3, len(models)) if len(models) > 1 else np.zeros(1)
    for ax, protocol in zip(axes[0], protocols, strict=True):
        rows = top[top["protocol"] == protocol]
        for m, model in enumerate(models):
            sub = rows[rows["model"] == model].set_index("task").reindex(tasks)
            y = np.arange(len(tasks)) + offsets[m]
            err = np.vstack([sub["auroc"] - sub["low"], sub["high"] - sub["auroc"]])
            ax.errorbar(
                sub["auroc"], y, xerr=np.nan_to_num(err), fmt="o", ms=4, capsize=2,
                color=colours(m % 10), label=model,
            )  # fmt: skip
        ax.axvline(0.5, color="0.7", lw=0.8, ls=":")
        ax.set_title(protocol)
        ax.set_xlabel("test AUROC (macro)")
        ax.grid(axis="x", color="0.92")
    axes[0][0].set_yticks(
        np.arange(len(tasks)), [t.replace("mean", "mean over tasks") for t in tasks]
    )
    axes[0][0].invert_yaxis()
    _legend(fig, axes[0][0], len(models))
    return fig


def _legend(fig: plt.Figure, ax: plt.Axes, entries: int) -> None:
    """One legend for all panels, below them (never over the data)."""
    handles, labels = ax.get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.08 + 0.04 * ((entries - 1) // 4), 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=min(entries, 4), fontsize=8, frameon=False)


def efficiency_figure(summary: pd.DataFrame) -> plt.Figure:
    """Mean AUROC over tasks against the label fraction, one panel per protocol."""
    task = "mean" if (summary["task"] == "mean").any() else summary["task"].iloc[0]
    rows = summary[summary["task"] == task]
    protocols = list(dict.fromkeys(rows["protocol"]))
    fig, axes = plt.subplots(
        1, len(protocols), figsize=(_PANEL_IN[0] * len(protocols), 3.6), sharey=True, squeeze=False
    )
    colours = plt.get_cmap("tab10")
    for ax, protocol in zip(axes[0], protocols, strict=True):
        for m, model in enumerate(dict.fromkeys(rows["model"])):
            sub = rows[(rows["protocol"] == protocol) & (rows["model"] == model)]
            sub = sub.sort_values("fraction")
            ax.plot(sub["fraction"], sub["auroc"], "o-", ms=4, color=colours(m % 10), label=model)
            ax.fill_between(
                sub["fraction"], sub["low"], sub["high"], color=colours(m % 10), alpha=0.15
            )
        ax.set_xscale("log")
        fractions = sorted(rows["fraction"].unique())
        ax.xaxis.set_major_locator(FixedLocator(fractions))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda f, _: f"{f:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_title(protocol)
        ax.set_xlabel("fraction of training labels")
        ax.grid(color="0.92")
    axes[0][0].set_ylabel(f"test AUROC ({'mean over tasks' if task == 'mean' else task})")
    _legend(fig, axes[0][0], rows["model"].nunique())
    return fig


def save_figures(summary: pd.DataFrame, out: Path) -> list[Path]:
    """Write the benchmark figures into `out`; returns their paths."""
    paths = [out / "benchmark.png"]
    _save(auroc_figure(summary), paths[0])
    if summary["fraction"].nunique() > 1:
        paths.append(out / "sample_efficiency.png")
        _save(efficiency_figure(summary), paths[1])
    return paths
