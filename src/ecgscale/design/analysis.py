"""Explain a design study: a surrogate of performance, TreeSHAP per design choice, cross-checks.

Features are the sampled parameters (those that vary) plus the derived size: N (`params`),
forward FLOPs per record (`flops`), `stages` and `final_width`, as in Jabareen et al. Encoding:
booleans 0/1, `null` (an inactive parameter, or SE off) 0, text (the optimiser) an integer code in
sorted order. A gradient-boosted (`gbr`, default) or random-forest (`rf`) regressor predicts the
primary metric; its predictive accuracy is the Pearson r and R^2 of out-of-fold predictions
(k-fold, seeded). TreeSHAP (`shap.TreeExplainer`) attributes each prediction to the features; a
feature's importance is its mean |SHAP|, with percentile intervals (of the value and of its rank)
from refitting the surrogate on bootstrap resamples of the runs; its direction is the Spearman
correlation of its values with its SHAP values. Permutation importance on the held-out folds
cross-checks the ranking (Spearman correlation of the two rankings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from ecgscale.design.evaluate import AUROC_METRIC, CHALLENGE_METRIC
from ecgscale.design.sampler import DERIVED, forward_size, read_samples
from ecgscale.errors import UserError

Surrogate = Literal["gbr", "rf"]
TARGET = "perf"
_NOT_FEATURES = ("name", "stratum", "config", "length", "leads", "batch_size")


# ---------------------------------------------------------------------------------------------
# The table: one row per finished run, sampled networks and baselines.


def design_table(
    results_path: str | Path, samples_path: str | Path | None = None, metric: str | None = None
) -> tuple[pd.DataFrame, str]:
    """Finished runs of a design study joined with their samples; returns the table and the
    metric used (`challenge2021` where recorded, else `auroc`, of task `id`, unless `metric`).

    Columns: name, family, kind ("sampled" or "baseline"), model, optimizer, perf, params, flops
    (forward per record), stages, final_width and every sampled parameter (NaN for baselines).
    """
    from ecgscale.study.results import Results

    results_path = Path(results_path)
    if not results_path.is_file():
        raise UserError(f"{results_path}: no results store (written by `ecgscale design run`)")
    samples_path = results_path.parent / "samples.csv" if samples_path is None else samples_path
    samples = read_samples(samples_path)
    results = Results(results_path)
    runs = results.runs()
    runs = runs[runs["status"] == "done"]
    metrics = results.metrics()
    metrics = metrics[metrics["task"] == "id"]
    if metric is None:
        metric = CHALLENGE_METRIC if (metrics["metric"] == CHALLENGE_METRIC).any() else AUROC_METRIC
    values = metrics[metrics["metric"] == metric].set_index("run_id")["value"]
    if values.empty:
        raise UserError(f"{results_path}: no finished run has metric {metric!r} of task id")
    runs = runs.assign(perf=runs["run_id"].map(values)).dropna(subset=["perf"])
    sampled = runs[runs["size"].isin(samples["name"])]
    table = sampled[["size", "family", "model", "perf", "run_id"]].rename(columns={"size": "name"})
    table = table.merge(samples.drop(columns=["optimizer"], errors="ignore"), on="name")
    table = table.assign(kind="sampled", optimizer=table["family"])
    baselines = runs[~runs["size"].isin(samples["name"])]
    if not baselines.empty:
        table = pd.concat([table, _baseline_rows(baselines, samples)], ignore_index=True)
    return table.reset_index(drop=True), metric


def _baseline_rows(runs: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """Baseline runs with their forward FLOPs at the sampled networks' input shape."""
    length, leads = int(samples["length"].iloc[0]), int(samples["leads"].iloc[0])
    rows = []
    for _, run in runs.iterrows():
        config = json.loads(run["config"])
        size = forward_size(run["model"], config["model_config"], leads, length)
        rows.append(
            {
                "name": run["size"],
                "family": run["family"],
                "model": run["model"],
                "perf": run["perf"],
                "run_id": run["run_id"],
                "params": size.params,
                "flops": size.flops,
                "final_width": size.embed_dim,
                "kind": "baseline",
                "optimizer": "adamw",
            }
        )
    return pd.DataFrame(rows)


def feature_columns(table: pd.DataFrame) -> list[str]:
    """Sampled parameters that vary across the sampled runs, then the derived size columns."""
    sampled = table[table["kind"] == "sampled"] if "kind" in table else table
    skip = {*_NOT_FEATURES, *DERIVED, TARGET, "family", "model", "run_id", "kind"}
    params = [c for c in sampled.columns if c not in skip and sampled[c].nunique(dropna=False) > 1]
    return [*params, *DERIVED]


def encode_features(
    table: pd.DataFrame, features: list[str], codes: dict[str, dict[str, float]] | None = None
) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """Numeric float64 matrix of `features` (module docstring: bool 0/1, null 0, text codes) and
    the codes of text features (pass them back to encode new rows the same way)."""
    codes = dict(codes or {})
    out = {}
    for name in features:
        col = table[name]
        present = col.dropna()
        if name in codes or not pd.to_numeric(present, errors="coerce").notna().all():
            if name not in codes and present.isin([True, False]).all():
                col = col.map({True: 1.0, False: 0.0})
            else:
                if name not in codes:
                    levels = sorted(present.astype(str).unique())
                    codes[name] = {v: float(k) for k, v in enumerate(levels)}
                col = col.map(lambda v, c=codes[name]: c.get(str(v), np.nan) if pd.notna(v) else v)
        out[name] = pd.to_numeric(col, errors="coerce").astype(np.float64).fillna(0.0)
    return pd.DataFrame(out, index=table.index), codes


# ---------------------------------------------------------------------------------------------
# Surrogate, SHAP, permutation importance.


def make_surrogate(kind: Surrogate, seed: int):
    """An unfitted scikit-learn regressor of the given kind (fixed hyper-parameters, seeded)."""
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

    if kind == "gbr":
        return GradientBoostingRegressor(
            n_estimators=100, learning_rate=0.1, max_depth=3, subsample=0.8, random_state=seed
        )
    if kind == "rf":
        return RandomForestRegressor(n_estimators=200, min_samples_leaf=2, random_state=seed)
    raise UserError(f"surrogate {kind!r}: expected gbr or rf")


@dataclass(frozen=True)
class SurrogateScore:
    """Out-of-fold predictive accuracy of the surrogate."""

    pearson_r: float
    r2: float
    folds: int
    n: int
    predicted: list[float] = field(repr=False)
    observed: list[float] = field(repr=False)


@dataclass(frozen=True)
class Importance:
    """One feature's role.

    Attributes:
        mean_abs_shap: mean |SHAP| of the surrogate fitted on all runs; `low`, `high` its 95 %
            bootstrap interval; `rank` (1 = most important) with its bootstrap interval.
        direction: Spearman correlation of the feature's values with its SHAP values (> 0: larger
            values predict better performance); None for a constant feature.
        levels: mean SHAP per distinct value (features with at most 8 values).
        permutation, permutation_sd: held-out permutation importance (drop of R^2), mean and SD
            over folds.
    """

    feature: str
    mean_abs_shap: float
    low: float
    high: float
    rank: int
    rank_low: int
    rank_high: int
    direction: float | None
    levels: dict[str, float]
    permutation: float
    permutation_sd: float


@dataclass(frozen=True)
class ShapAnalysis:
    """The analysis of one group of runs (all, or one optimiser)."""

    group: str
    n: int
    surrogate: str
    features: list[str]
    score: SurrogateScore
    importances: list[Importance]
    rank_agreement: float
    shap_values: np.ndarray = field(repr=False)
    data: pd.DataFrame = field(repr=False)
    model: Any = field(repr=False)
    codes: dict[str, dict[str, float]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)

    def out_of_fold(self) -> dict[str, float]:
        """Cross-validated (out-of-fold) prediction of each run, by run name."""
        return dict(zip(self.names, self.score.predicted, strict=True))

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        """Surrogate predictions for new rows holding this group's feature columns."""
        x, _ = encode_features(rows, self.features, self.codes)
        return self.model.predict(x)

    def ranking(self) -> list[str]:
        return [imp.feature for imp in sorted(self.importances, key=lambda i: i.rank)]

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (no per-run arrays but the CV predictions)."""
        return {
            "group": self.group,
            "n": self.n,
            "surrogate": self.surrogate,
            "features": self.features,
            "cv": {
                "pearson_r": self.score.pearson_r,
                "r2": self.score.r2,
                "folds": self.score.folds,
                "n": self.score.n,
            },
            "rank_agreement_shap_vs_permutation": self.rank_agreement,
            "ranking": [imp.__dict__ for imp in sorted(self.importances, key=lambda i: i.rank)],
        }


def _r2(y: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """R^2 of the last axis of `predicted` against `y`."""
    return 1 - np.sum((y - predicted) ** 2, axis=-1) / np.sum((y - y.mean()) ** 2)


def permutation_drop(
    model: Any, x: pd.DataFrame, y: np.ndarray, rng: np.random.Generator, repeats: int = 10
) -> np.ndarray:
    """Drop in R^2 when each feature's column is shuffled, mean over `repeats` shuffles
    `(features,)`; all shuffled copies are predicted in one call."""
    base = x.to_numpy(np.float64)
    n, k = base.shape
    copies = np.repeat(base[None, None], k, axis=0).repeat(repeats, axis=1)  # (k, r, n, k)
    for j in range(k):
        for r in range(repeats):
            copies[j, r, :, j] = base[rng.permutation(n), j]
    predicted = model.predict(pd.DataFrame(copies.reshape(-1, k), columns=x.columns))
    shuffled = _r2(y, predicted.reshape(k, repeats, n)).mean(axis=1)
    return _r2(y, model.predict(x)) - shuffled


def cross_validate(
    x: pd.DataFrame, y: np.ndarray, kind: Surrogate, seed: int, folds: int
) -> tuple[SurrogateScore, np.ndarray]:
    """Out-of-fold Pearson r and R^2; also the permutation importance `(folds, features)` of each
    fold's model on its held-out fold (`permutation_drop`)."""
    from sklearn.model_selection import KFold

    k = min(folds, len(y))
    predicted = np.empty(len(y))
    perm = np.zeros((k, x.shape[1]))
    rng = np.random.default_rng(seed)
    for i, (train, test) in enumerate(KFold(k, shuffle=True, random_state=seed).split(x)):
        model = make_surrogate(kind, seed).fit(x.iloc[train], y[train])
        predicted[test] = model.predict(x.iloc[test])
        if len(test) > 1:
            perm[i] = permutation_drop(model, x.iloc[test], y[test], rng)
    r = float(stats.pearsonr(predicted, y).statistic) if np.std(predicted) > 0 else float("nan")
    score = SurrogateScore(r, float(_r2(y, predicted)), k, len(y), predicted.tolist(), y.tolist())
    return score, perm


def tree_shap(model: Any, x: pd.DataFrame) -> np.ndarray:
    """`(runs, features)` TreeSHAP values of a fitted tree ensemble."""
    import shap

    return np.asarray(shap.TreeExplainer(model).shap_values(x.to_numpy()), dtype=np.float64)


def _ranks(values: np.ndarray) -> np.ndarray:
    """1 = largest, per row."""
    return np.argsort(np.argsort(-values, axis=-1, kind="stable"), axis=-1) + 1


def analyze_runs(
    table: pd.DataFrame,
    features: list[str] | None = None,
    *,
    group: str = "all",
    surrogate: Surrogate = "gbr",
    seed: int = 0,
    folds: int = 5,
    n_boot: int = 100,
) -> ShapAnalysis:
    """Surrogate, cross-validation, TreeSHAP with bootstrap intervals and permutation importance
    of the sampled runs of `table` (column `perf` is the target)."""
    runs = table[table["kind"] == "sampled"] if "kind" in table else table
    features = feature_columns(runs) if features is None else features
    if len(runs) < 10:
        raise UserError(f"group {group}: {len(runs)} finished sampled runs; expected at least 10")
    x, codes = encode_features(runs, features)
    x = x.reset_index(drop=True)
    y = runs[TARGET].to_numpy(np.float64)
    score, perm = cross_validate(x, y, surrogate, seed, folds)
    model = make_surrogate(surrogate, seed).fit(x, y)
    phi = tree_shap(model, x)
    importance = np.abs(phi).mean(axis=0)
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, len(features)))
    for b in range(n_boot):
        idx = rng.integers(len(y), size=len(y))
        fitted = make_surrogate(surrogate, seed + 1 + b).fit(x.iloc[idx], y[idx])
        boot[b] = np.abs(tree_shap(fitted, x.iloc[idx])).mean(axis=0)
    rank = _ranks(importance)
    boot_rank = _ranks(boot) if n_boot else rank[None, :]
    perm_mean, perm_sd = perm.mean(axis=0), perm.std(axis=0)
    importances = []
    for j, name in enumerate(features):
        values = x[name].to_numpy()
        direction = None
        if np.ptp(values) > 0 and np.ptp(phi[:, j]) > 0:
            direction = float(stats.spearmanr(values, phi[:, j]).statistic)
        distinct = np.unique(values)
        levels = (
            {f"{v:g}": float(phi[values == v, j].mean()) for v in distinct}
            if len(distinct) <= 8
            else {}
        )
        low, high = np.percentile(boot[:, j], [2.5, 97.5]) if n_boot else (np.nan, np.nan)
        r_low, r_high = np.percentile(boot_rank[:, j], [2.5, 97.5])
        importances.append(
            Importance(
                feature=name,
                mean_abs_shap=float(importance[j]),
                low=float(low),
                high=float(high),
                rank=int(rank[j]),
                rank_low=int(np.floor(r_low)),
                rank_high=int(np.ceil(r_high)),
                direction=direction,
                levels=levels,
                permutation=float(perm_mean[j]),
                permutation_sd=float(perm_sd[j]),
            )
        )
    agreement = float(stats.spearmanr(importance, perm_mean).statistic)
    return ShapAnalysis(
        group,
        len(y),
        surrogate,
        features,
        score,
        importances,
        agreement,
        phi,
        x.assign(perf=y),
        model,
        codes,
        runs["name"].astype(str).tolist() if "name" in runs else [],
    )


def analyze_groups(
    table: pd.DataFrame, *, min_runs: int = 20, **options: Any
) -> dict[str, ShapAnalysis]:
    """`all` sampled runs, plus one analysis per optimiser with at least `min_runs` runs when the
    study has several optimisers (the optimiser is then also a feature of `all`)."""
    sampled = table[table["kind"] == "sampled"]
    analyses = {"all": analyze_runs(table, feature_columns(sampled), group="all", **options)}
    groups = sorted(sampled["optimizer"].unique())
    if len(groups) > 1:
        for name in groups:
            part = sampled[sampled["optimizer"] == name]
            if len(part) >= min_runs:
                analyses[name] = analyze_runs(part, feature_columns(part), group=name, **options)
    return analyses


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib, Agg).


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_beeswarm(analysis: ShapAnalysis, path: Path) -> Path:
    """SHAP beeswarm: one row per feature (most important on top), colour = feature value."""
    import shap

    plt = pyplot()
    explanation = shap.Explanation(
        values=analysis.shap_values,
        data=analysis.data[analysis.features].to_numpy(),
        feature_names=analysis.features,
    )
    plt.figure()
    shap.plots.beeswarm(explanation, max_display=len(analysis.features), show=False)
    plt.title(f"SHAP values ({analysis.group}, n = {analysis.n})")
    plt.gcf().savefig(path, dpi=120, bbox_inches="tight")
    plt.close("all")
    return path


def plot_ranking(analysis: ShapAnalysis, path: Path) -> Path:
    """Mean |SHAP| with bootstrap intervals next to permutation importance."""
    plt = pyplot()
    imps = sorted(analysis.importances, key=lambda i: i.rank, reverse=True)
    names = [i.feature for i in imps]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 0.35 * len(imps) + 1.5), sharey=True)
    y = np.arange(len(imps))
    mean = np.array([i.mean_abs_shap for i in imps])
    err = np.array([[i.mean_abs_shap - i.low, i.high - i.mean_abs_shap] for i in imps]).T
    colours = ["tab:green" if (i.direction or 0) > 0 else "tab:red" for i in imps]
    a.barh(y, mean, xerr=np.clip(err, 0, None), color=colours, capsize=2)
    a.set_yticks(y, names)
    a.set_xlabel("mean |SHAP| (95 % bootstrap interval)\ngreen: larger value better")
    b.barh(y, [i.permutation for i in imps], xerr=[i.permutation_sd for i in imps], color="grey")
    b.set_xlabel("held-out permutation importance (R² drop)")
    fig.suptitle(
        f"{analysis.group}: ranking (Spearman with permutation {analysis.rank_agreement:.2f})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_marginals(analysis: ShapAnalysis, path: Path) -> Path:
    """Marginal effect of each choice: its SHAP value against its value, one panel per feature."""
    plt = pyplot()
    names = analysis.ranking()
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        j = analysis.features.index(name)
        values = analysis.data[name].to_numpy()
        ax.scatter(values, analysis.shap_values[:, j], s=12, alpha=0.7)
        if name in ("params", "flops") and values.min() > 0:
            ax.set_xscale("log")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("SHAP", fontsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(f"marginal effects ({analysis.group})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_surrogate(analysis: ShapAnalysis, path: Path) -> Path:
    """Out-of-fold predicted against observed performance."""
    plt = pyplot()
    s = analysis.score
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.scatter(s.observed, s.predicted, s=14)
    lo, hi = min(s.observed + s.predicted), max(s.observed + s.predicted)
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("observed")
    ax.set_ylabel(f"{s.folds}-fold out-of-fold prediction")
    ax.set_title(f"{analysis.group}: r = {s.pearson_r:.2f}, R² = {s.r2:.2f} (n = {s.n})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
