"""`ecgscale benchmark`: models x tasks -> linear probes and fine-tuning -> an AUROC table.

The logic is `ecgscale.evaluate.benchmark.run_benchmark`; this module parses options, prints
progress and the summary table.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from ecgscale.cli.probe import StoresOption, TasksOption, _floats, _stores

if TYPE_CHECKING:
    import pandas as pd

    from ecgscale.evaluate.benchmark import CellResult

console = Console()


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark_cmd)


def summary_table(summary: pd.DataFrame) -> Table:
    """One row per model x protocol x fraction, one column per task (AUROC [low, high])."""
    tasks = list(dict.fromkeys(summary["task"]))
    if "mean" in tasks:
        tasks = [t for t in tasks if t != "mean"] + ["mean"]
    table = Table(title="test AUROC (95 % bootstrap interval)")
    for column in ("model", "protocol", "fraction", *tasks):
        table.add_column(column, no_wrap=True)
    for (model, protocol, fraction), rows in summary.groupby(
        ["model", "protocol", "fraction"], sort=False
    ):
        cells = rows.set_index("task")
        values = [
            f"{cells.at[t, 'auroc']:.3f} ({cells.at[t, 'low']:.3f}-{cells.at[t, 'high']:.3f})"
            if t in cells.index
            else "-"
            for t in tasks
        ]
        table.add_row(str(model), str(protocol), f"{fraction:g}", *values)
    return table


def benchmark_cmd(
    model: Annotated[
        list[str],
        typer.Option(
            help="Model: run folder, ADAPTER:PATH or module:function, optionally NAME=REF "
            "(repeatable)."
        ),
    ],
    task: TasksOption,
    store: StoresOption,
    out: Annotated[Path, typer.Option(help="Output folder (resumed when it exists).")] = Path(
        "benchmark"
    ),
    protocol: Annotated[
        str, typer.Option(help="Comma-separated protocols: linear, head, full.")
    ] = "linear,full",
    fractions: Annotated[
        str, typer.Option(help="Label fractions, e.g. 0.1,0.3,1 (sample efficiency).")
    ] = "1",
    draws: Annotated[int, typer.Option(help="Seeded label subsets per fraction below 1.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of subsets, fine-tuning and bootstrap.")] = 0,
    steps: Annotated[int, typer.Option(help="Fine-tuning optimizer steps.")] = 200,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate (default 1e-3 full, 1e-2 head).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Fine-tuning records per step.")] = 64,
    eval_every: Annotated[
        int, typer.Option(help="Steps between validation checks; report the best (0: last).")
    ] = 0,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples of the intervals.")] = 1000,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
) -> None:
    """Benchmark models on tasks: linear probes and fine-tuning (optionally on label fractions),
    scored by test AUROC with bootstrap intervals and the mean over tasks; writes benchmark.csv,
    summary.csv and figures into OUT, and resumes an interrupted benchmark."""
    from ecgscale.evaluate.benchmark import BenchmarkConfig, run_benchmark

    config = BenchmarkConfig(
        models=model,
        tasks=task,
        stores={name: opened.path for name, opened in _stores(store).items()},
        protocols=[p.strip() for p in protocol.split(",") if p.strip()],
        fractions=_floats(fractions, "--fractions") or [1.0],
        draws=draws,
        seed=seed,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        eval_every=eval_every,
        n_boot=n_boot,
        device=device,
    )

    def report(result: CellResult, done: int, total: int) -> None:
        cell = result.cell
        auroc = next(
            (r["value"] for r in result.rows if r["metric"] == "auroc" and not r["class"]), None
        )
        how = "cached" if result.cached else f"{result.seconds:.1f} s"
        shown = "-" if auroc is None else f"{auroc:.3f}"
        console.print(
            f"[{done}/{total}] {cell.model} {cell.task} {cell.protocol} fraction "
            f"{cell.fraction:g} draw {cell.draw}: AUROC {shown} ({how})",
            highlight=False,
        )

    result = run_benchmark(config, out, on_cell=report)
    table = summary_table(result.summary)
    wide = console if console.is_terminal else Console(width=max(console.width, 200))
    wide.print(table)
    console.print(
        f"wrote [bold]{out}[/bold]: benchmark.csv, summary.csv, figures "
        f"({result.computed} of {result.cells} cells computed, {result.seconds:.1f} s)"
    )
