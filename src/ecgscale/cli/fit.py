"""`ecgscale fit`: scaling-law fits of a results table, printed as tables and written as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ecgscale.scaling.analyze import GroupAnalysis, compare_groups, fit_results, write_json
from ecgscale.scaling.fits import Estimate, JointFit
from ecgscale.scaling.table import load_results, missing_by_task

console = Console()


def _est(e: Estimate) -> str:
    return f"{e.value:.4g} [{e.low:.3g}, {e.high:.3g}]"


def _fits_table(analyses: list[GroupAnalysis], target: str) -> Table:
    table = Table(title=f"Scaling fits of {target} (95 % bootstrap intervals)")
    names = (
        "group",
        "law",
        "runs",
        "E",
        "A",
        "alpha",
        "B",
        "beta",
        "RMSE log",
        "R2",
        "LLO",
        "sat.",
    )
    for name in names:
        table.add_column(name, overflow="fold")
    for g in analyses:
        f = g.fit
        joint = isinstance(f, JointFit)
        law = "L(N, D)" if joint else f"L({f.axis})"
        b, beta = (_est(f.B), _est(f.beta)) if joint else ("", "")
        llo = ", ".join(f"{e.axis} {100 * e.max_rel_error:.1f}%" for e in f.extrapolation) or "-"
        table.add_row(
            g.label,
            law,
            str(g.n_runs),
            _est(f.E),
            _est(f.A),
            _est(f.alpha),
            b,
            beta,
            f"{f.rmse_log:.4f}",
            f"{f.r2_log:.3f}",
            llo,
            "yes" if g.saturation.saturated else "no",
        )
    table.caption = (
        "LLO: largest error predicting the points at the largest N / D from a refit without them. "
        "sat.: the predicted loss at the largest N (and D) is within the interval of E."
    )
    return table


def _derived_table(analyses: list[GroupAnalysis]) -> Table | None:
    rows = [g for g in analyses if g.compute is not None]
    if not rows:
        return None
    table = Table(title="Compute-optimal allocation (C = c(N) D, c measured from the runs)")
    names = ("group", "N* ~ C^a", "D* ~ C^b (data share)", "N*, D* at the largest C")
    for name in names:
        table.add_column(name, overflow="fold")
    for g in rows:
        c = g.compute
        table.add_row(
            g.label,
            _est(c.n_exponent),
            _est(c.d_exponent),
            f"{c.n_opt[0].value:.3g}, {c.d_opt[0].value:.3g}",
        )
    return table


def _transfer_table(analyses: list[GroupAnalysis]) -> Table | None:
    if not any(g.transfer for g in analyses):
        return None
    table = Table(title="Loss-to-loss transfer L_OOD = E_ood + K (L_ID - E_id)^kappa")
    for name in ("group", "task", "kappa", "K", "E_id", "E_ood"):
        table.add_column(name, overflow="fold")
    for g in analyses:
        for t in g.transfer:
            f = t.fit
            table.add_row(g.label, t.task, _est(f.kappa), _est(f.K), _est(f.E_id), _est(f.E_ood))
    return table


def register(app: typer.Typer) -> None:
    """Attach `ecgscale fit` to the program."""

    @app.command("fit")
    def fit(
        results: Annotated[
            Path,
            typer.Argument(
                help="Results table (.csv or .parquet, one row per run x task) or a study's "
                "results.sqlite."
            ),
        ],
        target: Annotated[str, typer.Option(help="Loss column to fit.")] = "ood_loss",
        by: Annotated[
            str, typer.Option(help="Comma-separated grouping columns; '' fits all runs together.")
        ] = "family,objective",
        x: Annotated[
            str | None,
            typer.Option(
                help="Fit the loss against this column alone (e.g. n_labels) (default: N and D)."
            ),
        ] = None,
        out: Annotated[
            Path | None,
            typer.Option(
                help="Write every fit, interval and diagnostic as JSON (default: no file)."
            ),
        ] = None,
        n_boot: Annotated[int, typer.Option(help="Bootstrap resamples per fit.")] = 4000,
        seed: Annotated[int, typer.Option(help="Seed of the bootstrap resampling.")] = 0,
        transfer: Annotated[
            bool, typer.Option(help="Fit loss-to-loss transfer when OOD losses exist.")
        ] = True,
    ) -> None:
        """Fit scaling laws per group of a results table: joint L(N, D) where N and D both vary,
        else the law of the axis that varies; intervals, diagnostics, compute-optimal allocation,
        saturation, transfer and exponent ratios between groups."""
        table = load_results(results)
        columns = [c.strip() for c in by.split(",") if c.strip()]
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bar:
            task = bar.add_task("fitting", total=None)
            analyses = fit_results(
                table,
                target=target,
                by=columns,
                x=x,
                transfer=transfer,
                n_boot=n_boot,
                seed=seed,
                progress=lambda label: bar.update(task, description=f"fitting {label}"),
            )
            comparisons = compare_groups(analyses)
        missing = missing_by_task(table, target)
        if missing:
            tasks = ", ".join(f"{task} {n}" for task, n in missing.items())
            console.print(
                f"dropped {sum(missing.values())} of {len(table)} rows without a value of "
                f"{target} (rows per task: {tasks})",
                highlight=False,
            )
        console.print(_fits_table(analyses, target))
        for extra in (_derived_table(analyses), _transfer_table(analyses)):
            if extra is not None:
                console.print(extra)
        for c in comparisons:
            console.print(f"{c.param}: {c.statement}", highlight=False)
        for g in analyses:
            for line in (*g.fit.warnings, *g.notes):
                console.print(f"[yellow]warning[/yellow] {g.label}: {line}", highlight=False)
        if out is not None:
            payload = {
                "results": str(results),
                "target": target,
                "by": columns,
                "x": x,
                "n_boot": n_boot,
                "seed": seed,
                "groups": [g.to_dict() for g in analyses],
                "comparisons": [c.to_dict() for c in comparisons],
            }
            console.print(f"wrote {write_json(payload, out)}")
