"""Scaling rules from a design study: the Pareto front, depth and width against FLOPs, budgets.

* Pareto front: runs that no other run beats on both axes (fewer or equal forward FLOPs per record
  and higher or equal performance, one strictly).
* Power laws along the front: y = a C^b for depth, final width and N against forward FLOPs C,
  fitted by least squares in log-log (float64) over the sampled networks on the near front (within
  `tolerance` of the front, by default 0.01: with short budgets and small test folds the exact
  front holds a handful of networks), with a 95 % t-interval of the exponent.
* A recommended network for a budget B (forward FLOPs per record): among the near-front networks
  within B, the one the surrogate predicts best out of fold (the best observed one without a
  surrogate; a single test score is noisy) is the template (its categorical choices, w_m, width
  ratios and learning rate); its depth is set by the depth law at B (clipped to the depths
  sampled), then its widths (w_init, w_0, w_a scaled by one factor) are raised as far as the
  budget allows. The network is built and its
  forward FLOPs are measured with `ecgscale.models.flops.forward_flops` to check the budget;
  the surrogate predicts its performance, flagged as an extrapolation outside the sampled FLOPs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ecgscale.design.analysis import ShapAnalysis
from ecgscale.errors import ConfigError

# Width scale factors tried when fitting a template to a budget (geometric, 1/64 .. 64).
_SCALES = np.geomspace(1 / 64, 64, 481)


def pareto_front(flops: np.ndarray, perf: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """Boolean mask of the runs on the front (fewest FLOPs, highest performance).

    With `tolerance` > 0, the runs within `tolerance` of the front: no run with at most their
    FLOPs performs better by more than `tolerance` (the "near front", for fits on noisy data).
    """
    flops, perf = np.asarray(flops, np.float64), np.asarray(perf, np.float64)
    order = np.lexsort((-perf, flops))
    mask = np.zeros(len(flops), dtype=bool)
    best, best_flops = -np.inf, np.nan
    for i in order:
        tie = perf[i] == best and flops[i] == best_flops  # identical runs are both on the front
        if perf[i] > best or tie or (tolerance > 0 and perf[i] >= best - tolerance):
            mask[i] = True
        if perf[i] > best:
            best, best_flops = perf[i], flops[i]
    return mask


@dataclass(frozen=True)
class PowerLaw:
    """y = coefficient * C^exponent fitted in log-log over `n` front points."""

    quantity: str
    coefficient: float
    exponent: float
    exponent_low: float
    exponent_high: float
    r2: float
    n: int

    def __call__(self, flops: float) -> float:
        return self.coefficient * flops**self.exponent


def fit_power_law(quantity: str, flops: np.ndarray, y: np.ndarray) -> PowerLaw | None:
    """Least-squares fit of log y on log C; None with fewer than 3 points or constant C."""
    x, v = np.log(np.asarray(flops, np.float64)), np.log(np.asarray(y, np.float64))
    if len(x) < 3 or np.ptp(x) == 0:
        return None
    fit = stats.linregress(x, v)
    t = stats.t.ppf(0.975, len(x) - 2)
    return PowerLaw(
        quantity,
        float(math.exp(fit.intercept)),
        float(fit.slope),
        float(fit.slope - t * fit.stderr),
        float(fit.slope + t * fit.stderr),
        float(fit.rvalue**2),
        len(x),
    )


@dataclass(frozen=True)
class Recommendation:
    """A network for one budget (module docstring).

    Attributes:
        budget: forward FLOPs per record allowed.
        template: name of the near-front network it is derived from.
        config: its AnyNet options; `optimizer`, `lr`: the template's training choices.
        flops: measured forward FLOPs per record of the built network; `params`: its N.
        within_budget: flops <= budget; `fill`: flops / budget.
        depth_rule: the depth law's value at the budget (None without a fit).
        width_rule: the final-width law's value at the budget; `final_width` the network's.
        predicted: surrogate prediction of its performance; `extrapolated`: budget outside the
            sampled FLOPs.
    """

    budget: float
    template: str
    config: dict[str, Any]
    optimizer: str
    lr: float | None
    flops: int
    params: int
    within_budget: bool
    fill: float
    stages: int
    final_width: int
    depth_rule: float | None
    width_rule: float | None
    predicted: float | None
    extrapolated: bool


@dataclass(frozen=True)
class Rules:
    """The front of a group of runs and what follows from it."""

    group: str
    front: list[str]
    near_front: list[str]
    tolerance: float
    laws: dict[str, PowerLaw]
    recommendations: list[Recommendation]

    def summary(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "front": self.front,
            "near_front": self.near_front,
            "tolerance": self.tolerance,
            "laws": {k: v.__dict__ for k, v in self.laws.items()},
            "recommendations": [r.__dict__ for r in self.recommendations],
        }


def _scaled(template: dict[str, Any], depth: int, scale: float) -> dict[str, Any]:
    config = dict(template)
    config["depth"] = depth
    config["w_init"] = max(8, round(template["w_init"] * scale))
    config["w_0"] = max(config["w_init"], round(template["w_0"] * scale))
    config["w_a"] = round(template["w_a"] * scale, 2)
    return config


def fit_to_budget(
    template: dict[str, Any], depth: int, budget: float, length: int
) -> dict[str, Any]:
    """`template` at `depth` with the widest width scale whose analytic forward FLOPs per record
    stay within `budget`; fewer blocks when even the narrowest scale does not fit."""
    from ecgscale.models.anynet import anynet_complexity

    for d in range(depth, 0, -1):
        best, best_flops = None, -1
        for scale in _SCALES:
            config = _scaled(template, d, float(scale))
            flops = anynet_complexity(length, **config).flops
            if best_flops < flops <= budget:
                best, best_flops = config, flops
        if best is not None:
            return best
    raise ConfigError(f"budget {budget:.3g} FLOPs per record: no network of the template fits")


def recommend(
    table: pd.DataFrame,
    budget: float,
    laws: dict[str, PowerLaw],
    analysis: ShapAnalysis | None = None,
    tolerance: float = 0.0,
) -> Recommendation:
    """The recommended network for `budget` from the sampled runs of `table` (module docstring)."""
    from ecgscale.models.anynet import anynet, anynet_complexity
    from ecgscale.models.base import count_parameters
    from ecgscale.models.flops import build_on_meta, forward_flops

    runs = table[table["kind"] == "sampled"].reset_index(drop=True)
    near = runs[pareto_front(runs["flops"], runs["perf"], tolerance)].sort_values("flops")
    within = near[near["flops"] <= budget]
    if within.empty:
        within = near.iloc[:1]
    score = within["perf"]
    if analysis is not None and analysis.names:
        score = within["name"].map(analysis.out_of_fold())
    template_row = within.loc[score.idxmax()]
    template = json.loads(template_row["config"])
    depth_law = laws.get("depth")
    depth_rule = depth_law(budget) if depth_law else None
    depth = round(depth_rule) if depth_rule else int(template["depth"])
    depth = int(min(max(depth, runs["depth"].min()), runs["depth"].max()))
    length, leads = int(runs["length"].iloc[0]), int(runs["leads"].iloc[0])
    config = fit_to_budget(template, depth, budget, length)
    model = build_on_meta(anynet, config)
    flops = forward_flops(model, leads, length)
    size = anynet_complexity(length, **config)
    predicted = None
    if analysis is not None:
        row = {k: template_row.get(k) for k in analysis.features}
        row |= {k: v for k, v in config.items() if k in analysis.features}
        row |= {
            "params": size.params,
            "flops": size.flops,
            "stages": size.stages,
            "final_width": size.embed_dim,
        }
        predicted = float(analysis.predict(pd.DataFrame([row]))[0])
    width_law = laws.get("final_width")
    lr = template_row.get("lr")
    return Recommendation(
        budget=float(budget),
        template=str(template_row["name"]),
        config=config,
        optimizer=str(template_row["optimizer"]),
        lr=None if pd.isna(lr) else float(lr),
        flops=int(flops),
        params=count_parameters(model),
        within_budget=bool(flops <= budget),
        fill=float(flops / budget),
        stages=size.stages,
        final_width=size.embed_dim,
        depth_rule=depth_rule,
        width_rule=width_law(budget) if width_law else None,
        predicted=predicted,
        extrapolated=bool(not runs["flops"].min() <= budget <= runs["flops"].max()),
    )


def derive_rules(
    table: pd.DataFrame,
    budgets: list[float],
    analysis: ShapAnalysis | None = None,
    group: str = "all",
    tolerance: float = 0.01,
) -> Rules:
    """Front, power laws (depth, final width, N against FLOPs, fitted on the near front) and one
    recommendation per budget for the sampled runs of `table`."""
    runs = table[table["kind"] == "sampled"].reset_index(drop=True)
    front = runs[pareto_front(runs["flops"], runs["perf"])].sort_values("flops")
    near = runs[pareto_front(runs["flops"], runs["perf"], tolerance)].sort_values("flops")
    laws = {}
    for quantity in ("depth", "final_width", "params"):
        law = fit_power_law(quantity, near["flops"].to_numpy(), near[quantity].to_numpy())
        if law is not None:
            laws[quantity] = law
    recommendations = [recommend(runs, b, laws, analysis, tolerance) for b in budgets]
    return Rules(
        group, front["name"].tolist(), near["name"].tolist(), tolerance, laws, recommendations
    )


def plot_pareto(table: pd.DataFrame, rules: Rules, metric: str, path) -> Any:
    """Performance against forward FLOPs: sampled networks by optimiser, their front, baselines,
    and the recommended networks' budgets."""
    from ecgscale.design.analysis import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sampled = table[table["kind"] == "sampled"]
    for name, part in sampled.groupby("optimizer"):
        ax.scatter(part["flops"], part["perf"], s=16, alpha=0.6, label=f"sampled ({name})")
    indexed = sampled.set_index("name")
    front = indexed.loc[rules.front]
    x = [*front["flops"], sampled["flops"].max()]
    y = [*front["perf"], front["perf"].iloc[-1]]
    ax.step(x, y, where="post", color="k", lw=1.2, label="Pareto front")
    near = indexed.loc[[n for n in rules.near_front if n not in rules.front]]
    ax.scatter(
        near["flops"],
        near["perf"],
        s=30,
        facecolor="none",
        edgecolor="k",
        label=f"within {rules.tolerance:g} of the front",
    )
    markers = iter("s^DvP*X")
    for family, part in table[table["kind"] == "baseline"].groupby("family"):
        ax.scatter(
            part["flops"], part["perf"], marker=next(markers), s=60, edgecolor="k", label=family
        )
    for rec in rules.recommendations:
        ax.axvline(rec.budget, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("forward FLOPs per record")
    ax.set_ylabel(metric + " (test fold)")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("design study: performance against compute")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_laws(table: pd.DataFrame, rules: Rules, path) -> Any:
    """Depth and final width of the near-front networks against FLOPs, with their power laws."""
    from ecgscale.design.analysis import pyplot

    plt = pyplot()
    sampled = table[table["kind"] == "sampled"].set_index("name")
    front = sampled.loc[rules.near_front]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, quantity in zip(axes, ("depth", "final_width"), strict=True):
        ax.scatter(sampled["flops"], sampled[quantity], s=10, color="lightgrey", label="all")
        ax.scatter(
            front["flops"],
            front[quantity],
            s=24,
            color="k",
            label=f"near front ({rules.tolerance:g})",
        )
        law = rules.laws.get(quantity)
        if law is not None:
            c = np.geomspace(sampled["flops"].min(), sampled["flops"].max(), 50)
            ax.plot(
                c,
                law(c),
                "r-",
                label=f"{law.coefficient:.3g} C^{law.exponent:.2f} "
                f"[{law.exponent_low:.2f}, {law.exponent_high:.2f}]",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("forward FLOPs per record")
        ax.set_ylabel(quantity)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
