"""`ecgscale design sample|run|analyze`: design-space exploration (Jabareen et al. 2026)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ecgscale.errors import ConfigError

# Pipes and logs get whole tables rather than 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
design_app = typer.Typer(
    help="Sample a CNN design space, train the networks, explain performance with SHAP.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(design_app, name="design")


def _budgets(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--budgets {text!r}: expected numbers separated by commas") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"--budgets {text!r}: expected positive FLOPs per record")
    return values


@design_app.command("sample")
def sample_cmd(
    space: Annotated[
        Path | None, typer.Argument(help="Design-space YAML (default: Jabareen et al. 2026).")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Networks to sample.")] = 40,
    out: Annotated[Path, typer.Option(help="Folder for samples.csv, design.yaml.")] = Path(
        "runs/design"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the sampler.")] = 0,
    study: Annotated[
        Path | None,
        typer.Option(
            help="YAML with a `study:` section (store, labels, budget) (default: the "
            "space file's own)."
        ),
    ] = None,
) -> None:
    """Sample N networks within the space's FLOP bounds, stratified over FLOP decades."""
    from ecgscale.design.pipeline import sample_design

    sampled, written = sample_design(space, n, out, seed=seed, study_path=study)
    frame = sampled.frame()
    table = Table(title=f"{sampled.space.name}: {n} networks (seed {seed})")
    for column in ("stratum", "networks", "quota", "median N", "median FLOPs"):
        table.add_column(column, justify="left" if column == "stratum" else "right")
    for stratum in sampled.strata:
        label = stratum.label(sampled.space.stratify)
        part = frame[frame["stratum"] == label]
        table.add_row(
            label,
            str(len(part)),
            str(stratum.quota),
            f"{part['params'].median():.3g}" if len(part) else "-",
            f"{part['flops'].median():.3g}" if len(part) else "-",
        )
    console.print(table)
    console.print(
        f"{sampled.draws} prior draws: {sampled.out_of_bounds} outside the FLOP bounds, "
        f"{sampled.full} in full strata, {sampled.invalid} invalid; FLOPs counted at "
        f"{sampled.leads} x {sampled.length} samples"
    )
    for what, path in written.items():
        console.print(f"wrote {what}: [bold]{path}[/bold]")
    if "study" not in written:
        console.print("no study section: give --study to write a runnable design.yaml")


@design_app.command("run")
def run_cmd(
    spec: Annotated[Path, typer.Argument(help="design.yaml written by `design sample`.")],
) -> None:
    """Train and evaluate every sampled network and baseline (resumes unfinished runs)."""
    from ecgscale.design.pipeline import run_design

    results = run_design(spec)
    runs = results.runs()
    done = int((runs["status"] == "done").sum())
    console.print(f"{done} of {len(runs)} runs done; results in [bold]{results.path}[/bold]")


@design_app.command("analyze")
def analyze_cmd(
    results: Annotated[Path, typer.Argument(help="results.sqlite of a design study.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for figures and design.json (default: RESULTS folder/analysis)."),
    ] = None,
    samples: Annotated[
        Path | None, typer.Option(help="samples.csv (default: next to RESULTS).")
    ] = None,
    budgets: Annotated[
        str | None,
        typer.Option(
            help="Forward FLOPs per record to recommend networks for (default: 1e7,1e8,1e9)."
        ),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="Metric of task id (default: challenge2021 if recorded, else auroc)."),
    ] = None,
    surrogate: Annotated[str, typer.Option(help="gbr (gradient boosting) or rf.")] = "gbr",
    boot: Annotated[int, typer.Option(help="Bootstrap refits for the SHAP intervals.")] = 100,
    folds: Annotated[int, typer.Option(help="Cross-validation folds of the surrogate.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of CV, bootstrap and surrogates.")] = 0,
    front_tolerance: Annotated[
        float, typer.Option(help="Metric margin of the near front that the power laws are fit to.")
    ] = 0.01,
) -> None:
    """Surrogate + SHAP per design choice, Pareto front, scaling rules, per-budget networks."""
    from ecgscale.design.pipeline import analyze_design
    from ecgscale.design.report import write_section

    out = results.parent / "analysis" if out is None else out
    result = analyze_design(
        results,
        out,
        samples_path=samples,
        budgets=_budgets(budgets),
        metric=metric,
        surrogate=surrogate,
        seed=seed,
        n_boot=boot,
        folds=folds,
        front_tolerance=front_tolerance,
    )
    for group, analysis in result.analyses.items():
        s = analysis.score
        table = Table(
            title=f"{group}: {analysis.n} networks, {result.metric}; surrogate {surrogate} "
            f"{s.folds}-fold r = {s.pearson_r:.3f}, R² = {s.r2:.3f}"
        )
        for column in (
            "rank",
            "feature",
            "mean |SHAP|",
            "95 % interval",
            "rank interval",
            "direction",
            "permutation",
        ):
            table.add_column(column, justify="left" if column == "feature" else "right")
        for imp in sorted(analysis.importances, key=lambda i: i.rank):
            table.add_row(
                str(imp.rank),
                imp.feature,
                f"{imp.mean_abs_shap:.4f}",
                f"[{imp.low:.4f}, {imp.high:.4f}]",
                f"{imp.rank_low}-{imp.rank_high}",
                "-" if imp.direction is None else f"{imp.direction:+.2f}",
                f"{imp.permutation:.3f}",
            )
        console.print(table)
    rules = result.rules["all"]
    console.print(
        f"Pareto front: {len(rules.front)} networks; within {rules.tolerance:g}: "
        f"{len(rules.near_front)}"
    )
    for name, law in rules.laws.items():
        console.print(
            f"near-front law {name} = {law.coefficient:.3g} C^{law.exponent:.3f} "
            f"[{law.exponent_low:.3f}, {law.exponent_high:.3f}] (n = {law.n}, R² = {law.r2:.2f})"
        )
    table = Table(title="recommended networks per budget (forward FLOPs per record)")
    for column in (
        "budget",
        "FLOPs",
        "fill",
        "N",
        "depth",
        "stages",
        "width",
        "template",
        "predicted",
        "note",
    ):
        table.add_column(column, justify="right")
    for rec in rules.recommendations:
        table.add_row(
            f"{rec.budget:.3g}",
            f"{rec.flops:.3g}",
            f"{rec.fill:.2f}",
            f"{rec.params:.3g}",
            str(rec.config["depth"]),
            str(rec.stages),
            str(rec.final_width),
            rec.template,
            "-" if rec.predicted is None else f"{rec.predicted:.3f}",
            ("over budget! " if not rec.within_budget else "")
            + ("extrapolated" if rec.extrapolated else ""),
        )
    console.print(table)
    section = write_section(result.summary_path)
    console.print(
        f"wrote figures, {result.summary_path.name} and {section.name} to [bold]{out}[/bold]"
    )
