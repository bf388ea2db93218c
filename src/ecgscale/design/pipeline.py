"""The three steps of a design study, as the CLI runs them.

1. `sample_design(space, n, out)`: sample the space, write `samples.csv`, `space.yaml` and (when
   the space file or `study` gives a `study:` section) the runnable study `design.yaml`;
2. `run_design(design.yaml)`: train and evaluate every network and baseline with the study runner
   (same executors, same SQLite store `results.sqlite`), then add the challenge score for
   PhysioNet-format data;
3. `analyze_design(results.sqlite, out)`: surrogate + SHAP per group, rules, figures and
   `design.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ecgscale.design.analysis import (
    ShapAnalysis,
    analyze_groups,
    design_table,
    plot_beeswarm,
    plot_marginals,
    plot_ranking,
    plot_surrogate,
)
from ecgscale.design.rules import Rules, derive_rules, plot_laws, plot_pareto
from ecgscale.design.sampler import (
    SAMPLES_FILE,
    SampleSet,
    StudyBase,
    parse_study_base,
    read_samples,
    sample_space,
    store_length,
    write_design,
)
from ecgscale.design.space import load_space
from ecgscale.errors import ConfigError, UserError
from ecgscale.scaling.analyze import write_json

SUMMARY_FILE = "design.json"
DEFAULT_BUDGETS: tuple[float, ...] = (1e7, 1e8, 1e9)
"""Forward FLOPs per record for which networks are recommended unless told otherwise."""
TRAINABLE_OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd", "sgdm")
"""Optimisers `ecgscale.train` implements today (TrainConfig has no optimiser choice yet)."""


def _study_base(section: dict[str, Any] | None, base_dir: Path, source: str) -> StudyBase | None:
    return None if section is None else parse_study_base(section, base_dir, source)


def sample_design(
    space_path: str | Path | None,
    n: int,
    out: str | Path,
    *,
    seed: int = 0,
    study_path: str | Path | None = None,
) -> tuple[SampleSet, dict[str, Path]]:
    """Sample `n` networks of a space (None: the packaged default) into `out`.

    The study comes from `study_path` (a YAML mapping of a `study:` section) or else from the
    space file's own `study:` section; without either, only the samples are written. FLOPs are
    counted at the pre-training store's record length when a study is given.
    """
    space, path = load_space(space_path)
    base = _study_base(space.study, path.parent, str(path))
    if study_path is not None:
        study_path = Path(study_path)
        if not study_path.is_file():
            raise UserError(f"{study_path}: no such study file")
        data = yaml.safe_load(study_path.read_text())
        if not isinstance(data, dict):
            raise ConfigError(f"{study_path}: expected a mapping of study settings")
        base = parse_study_base(data.get("study", data), study_path.parent, str(study_path))
    length = store_length(base) if base is not None else None
    sampled = sample_space(space, n, seed=seed, length=length)
    return sampled, write_design(sampled, out, path, base)


def check_optimizers(samples: pd.DataFrame, source: Path) -> None:
    """Refuse networks whose optimiser the trainer cannot run (rather than train them with
    another optimiser under its name)."""
    wanted = set(samples["optimizer"].dropna()) if "optimizer" in samples else set()
    missing = sorted(wanted - set(TRAINABLE_OPTIMIZERS))
    if missing:
        raise ConfigError(
            f"{source}: optimiser(s) {', '.join(missing)} sampled, but the trainer implements "
            f"only {', '.join(TRAINABLE_OPTIMIZERS)}"
        )


def run_design(spec_path: str | Path, *, progress: bool = True):
    """Train and evaluate the design study `spec_path` (a `design.yaml`); returns its Results."""
    from ecgscale.design.evaluate import add_challenge_scores
    from ecgscale.study.runner import prepare_stores, run_study
    from ecgscale.study.spec import load_spec

    spec_path = Path(spec_path)
    spec = load_spec(spec_path)
    check_optimizers(read_samples(spec_path.parent / SAMPLES_FILE), spec_path)
    results = run_study(spec, progress=progress)
    stores = prepare_stores(spec, progress=False)
    add_challenge_scores(spec, stores[spec.pretrain_store], results)
    return results


@dataclass(frozen=True)
class DesignResult:
    """Everything `analyze_design` produced: the table, analyses, rules, files."""

    metric: str
    table: pd.DataFrame
    analyses: dict[str, ShapAnalysis]
    rules: dict[str, Rules]
    figures: dict[str, Path]
    summary_path: Path

    def summary(self) -> dict[str, Any]:
        sampled = self.table[self.table["kind"] == "sampled"]
        baselines = self.table[self.table["kind"] == "baseline"]
        return {
            "metric": self.metric,
            "runs": len(sampled),
            "flops_range": [float(sampled["flops"].min()), float(sampled["flops"].max())],
            "perf_range": [float(sampled["perf"].min()), float(sampled["perf"].max())],
            "baselines": baselines[["family", "name", "params", "flops", "perf"]].to_dict(
                "records"
            ),
            "analyses": {k: v.summary() for k, v in self.analyses.items()},
            "rules": {k: v.summary() for k, v in self.rules.items()},
            "figures": {k: p.name for k, p in self.figures.items()},
        }


def analyze_design(
    results_path: str | Path,
    out: str | Path,
    *,
    samples_path: str | Path | None = None,
    budgets: list[float] | None = None,
    metric: str | None = None,
    surrogate: str = "gbr",
    seed: int = 0,
    n_boot: int = 100,
    folds: int = 5,
    front_tolerance: float = 0.01,
) -> DesignResult:
    """Analyse a finished design study: figures (PNG) and `design.json` in `out`.

    `front_tolerance` (in units of the metric) selects the near-front networks the power laws are
    fitted to (`ecgscale.design.rules`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table, metric = design_table(results_path, samples_path, metric)
    analyses = analyze_groups(table, surrogate=surrogate, seed=seed, n_boot=n_boot, folds=folds)
    budgets = budgets or list(DEFAULT_BUDGETS)
    rules = {}
    figures: dict[str, Path] = {}
    for group, analysis in analyses.items():
        part = table if group == "all" else table[table["optimizer"] == group]
        rules[group] = derive_rules(part, budgets, analysis, group, front_tolerance)
        figures[f"beeswarm_{group}"] = plot_beeswarm(analysis, out / f"shap_beeswarm_{group}.png")
        figures[f"ranking_{group}"] = plot_ranking(analysis, out / f"shap_ranking_{group}.png")
        figures[f"marginals_{group}"] = plot_marginals(analysis, out / f"marginals_{group}.png")
        figures[f"surrogate_{group}"] = plot_surrogate(analysis, out / f"surrogate_{group}.png")
    figures["pareto"] = plot_pareto(table, rules["all"], metric, out / "pareto.png")
    figures["laws"] = plot_laws(table, rules["all"], out / "scaling_rules.png")
    table.to_csv(out / "design_table.csv", index=False)
    result = DesignResult(metric, table, analyses, rules, figures, out / SUMMARY_FILE)
    write_json(result.summary(), result.summary_path)  # strict JSON (NaN -> null), atomic
    return result
