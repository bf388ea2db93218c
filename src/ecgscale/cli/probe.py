"""`ecgscale probe` and `ecgscale finetune`: evaluate runs on named tasks, write a tidy table.

The logic is `ecgscale.evaluate.tasks.probe_table` and `ecgscale.evaluate.finetune.finetune`; the
table has one row per model x task x protocol x fraction x draw x metric (columns
`ecgscale.evaluate.tasks.TABLE_COLUMNS`) and is written atomically (`.csv` or `.parquet`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from ecgscale.errors import ConfigError

if TYPE_CHECKING:
    from ecgscale.data.store import Store
    from ecgscale.evaluate.probe import ProbeResult

console = Console()


def register(app: typer.Typer) -> None:
    app.command("probe")(probe_cmd)
    app.command("finetune")(finetune_cmd)


def _floats(text: str | None, flag: str) -> list[float] | None:
    """Comma-separated numbers, e.g. `0.01,0.1,1`."""
    if text is None:
        return None
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated numbers") from None
    if not values:
        raise ConfigError(f"{flag} {text!r}: expected at least one number")
    return values


def _stores(items: list[str]) -> dict[str, Store]:
    """`NAME=DIR` or `DIR` (named by its dataset) -> opened stores by name."""
    from ecgscale.data.store import Store

    stores: dict[str, Store] = {}
    for item in items:
        name, sep, path = item.partition("=")
        store = Store(path if sep else item)
        name = name.strip() if sep else str(store.manifest.get("name"))
        if not name or name in stores:
            raise ConfigError(f"--store {item!r}: expected NAME=DIR with a new, non-empty NAME")
        stores[name] = store
    return stores


def _summary(metrics: dict[str, Any]) -> str:
    shown = ("auroc", "challenge", "accuracy", "r2", "mae")
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in shown if metrics.get(k) is not None)


def probe_cmd(
    checkpoint: Annotated[
        list[str],
        typer.Option(
            help="Run directory, or external model ADAPTER:PATH / module:function (repeatable)."
        ),
    ],
    task: Annotated[
        list[str], typer.Option(help="Task name, or NAME@STORE to pick a store (repeatable).")
    ],
    store: Annotated[
        list[str],
        typer.Option(help="Store as NAME=DIR, or DIR named by its dataset (repeatable)."),
    ],
    out: Annotated[Path, typer.Option(help="Results table (.csv or .parquet).")] = Path(
        "probe_results.csv"
    ),
    fractions: Annotated[
        str | None,
        typer.Option(help="Label fractions, e.g. 0.01,0.1,1 (default: one full probe)."),
    ] = None,
    draws: Annotated[int, typer.Option(help="Draws per label fraction below 1.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the label-fraction draws.")] = 0,
    c_grid: Annotated[
        str | None,
        typer.Option(
            help="Inverse L2 strengths, e.g. 0.001,0.01,1 [default: 1e-4-10, 11 log steps]."
        ),
    ] = None,
    scoring: Annotated[
        Path | None,
        typer.Option(help="Challenge 2021 tables folder (default: the store's, else packaged)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Records per encoder batch.")] = 256,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N (embedding pass).")] = "cpu",
    cache_dir: Annotated[
        Path | None, typer.Option(help="Embedding cache (default: RUN_DIR/embeddings).")
    ] = None,
) -> None:
    """Linear probes of frozen encoders on tasks (optionally on fractions of the training labels);
    one tidy table of test loss and metrics per model x task."""
    from ecgscale.evaluate.probe import DEFAULT_C_GRID
    from ecgscale.evaluate.tasks import probe_table, table_path, write_table

    table_path(out)

    def report(model: str, name: str, result: ProbeResult) -> None:
        summary = _summary(dict(result.metrics))
        console.print(
            f"{model} {name}: test loss {result.test_loss:.4f}"
            + (f", {summary}" if summary else "")
            + f" (C {result.c:g}, {result.n_train} training records)",
            highlight=False,
        )

    rows = probe_table(
        checkpoint,
        task,
        _stores(store),
        fractions=_floats(fractions, "--fractions"),
        draws=draws,
        seed=seed,
        c_grid=_floats(c_grid, "--c-grid") or DEFAULT_C_GRID,
        batch_size=batch_size,
        scoring=scoring,
        cache_dir=cache_dir,
        device=device,
        on_result=report,
    )
    write_table(rows, out)
    console.print(f"wrote [bold]{out}[/bold] ({len(rows)} rows)")


def finetune_cmd(
    checkpoint: Annotated[
        str,
        typer.Option(help="Run directory, or external model ADAPTER:PATH / module:function."),
    ],
    task: Annotated[str, typer.Option(help="Task name.")],
    store: Annotated[Path, typer.Option(help="Store directory of the task's dataset.")],
    mode: Annotated[
        str, typer.Option(help="full: encoder and head; head: frozen encoder, head only.")
    ] = "full",
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 200,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate (default 1e-3 full, 1e-2 head).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Records per step.")] = 64,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.01,
    seed: Annotated[int, typer.Option(help="Seed of batches and dropout.")] = 0,
    eval_every: Annotated[
        int, typer.Option(help="Steps between validation checks; report the best (0: last).")
    ] = 0,
    scoring: Annotated[
        Path | None,
        typer.Option(help="Challenge 2021 tables folder (default: the store's, else packaged)."),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    out: Annotated[Path, typer.Option(help="Results table (.csv or .parquet).")] = Path(
        "finetune_results.csv"
    ),
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    run_out: Annotated[
        Path | None,
        typer.Option(help="Save the fine-tuned encoder and head here as a run (default: not)."),
    ] = None,
) -> None:
    """Fine-tune a run on a task (whole encoder, or a head on the frozen encoder) for a number of
    steps; writes test loss and metrics, with the untrained head's loss, as a tidy table."""
    from ecgscale.data.store import Store
    from ecgscale.evaluate.finetune import MODES, finetune, finetune_rows
    from ecgscale.evaluate.tasks import table_path, write_table

    table_path(out)
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    result = finetune(
        checkpoint,
        task,
        Store(store),
        mode=mode,  # type: ignore[arg-type]
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        seed=seed,
        eval_every=eval_every,
        scoring=scoring,
        device=device,
        progress=progress,
        run_out=run_out,
    )
    summary = _summary(dict(result.metrics))
    console.print(
        f"{checkpoint} {task} ({mode}, {result.steps} steps, reported step {result.best_step}): "
        f"test loss {result.initial_test_loss:.4f} untrained -> {result.test_loss:.4f}"
        + (f", {summary}" if summary else "")
        + f" ({result.seconds:.1f} s)",
        highlight=False,
    )
    rows = finetune_rows(str(checkpoint), result)
    write_table(rows, out)
    console.print(f"wrote [bold]{out}[/bold] ({len(rows)} rows)")
    if run_out is not None:
        console.print(f"saved the fine-tuned model as a run in [bold]{run_out}[/bold]")
