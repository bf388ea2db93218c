"""`ecgscale probe` and `ecgscale finetune`: evaluate runs on named tasks, write a tidy table.

The logic is `ecgscale.evaluate.tasks.probe_table` and `ecgscale.evaluate.finetune.finetune`; the
table has one row per model x task x protocol x fraction x draw x metric (columns
`ecgscale.evaluate.tasks.TABLE_COLUMNS`) and is written atomically (`.csv` or `.parquet`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from ecgscale.errors import ConfigError

if TYPE_CHECKING:
    from ecgscale.data.store import Store
    from ecgscale.evaluate.metrics import Bootstrap
    from ecgscale.evaluate.probe import ProbeResult

console = Console()

TasksOption = Annotated[
    list[str], typer.Option(help="Task name, or NAME@STORE to pick a store (repeatable).")
]
StoresOption = Annotated[
    list[str], typer.Option(help="Store as NAME=DIR, or DIR named by its dataset (repeatable).")
]
"""The `--task` and `--store` options of `probe` and `benchmark` (parsed by `_stores`)."""


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


SHOWN = ("auroc", "auprc", "f1", "challenge", "accuracy", "r2", "mae")
"""Task-level metrics shown in the one-line summary of a result (all are in the table)."""
LABELS = {"auroc": "AUROC", "auprc": "AUPRC", "f1": "F1", "r2": "R2", "mae": "MAE"}


def _value(metrics: Mapping[str, Any], name: str, estimate: float | None = None) -> str:
    """`0.912 [0.887, 0.934]`, or the value alone without an interval; `*` marks an interval
    that rests on fewer than `MIN_DEFINED` of the resamples."""
    from ecgscale.evaluate.metrics import MIN_DEFINED

    value = metrics.get(name) if estimate is None else estimate
    if value is None:
        return "-"
    lo, hi = metrics.get(f"{name}_lo"), metrics.get(f"{name}_hi")
    text = f"{value:.3f}" if lo is None or hi is None else f"{value:.3f} [{lo:.3f}, {hi:.3f}]"
    defined = metrics.get(f"{name}_defined")
    return text + ("*" if defined is not None and defined < MIN_DEFINED else "")


def _summary(metrics: Mapping[str, Any], test_loss: float) -> str:
    """`test loss 0.231 [0.219, 0.244], AUROC 0.912 [0.887, 0.934], ...`."""
    parts = [f"test loss {_value(metrics, 'loss', test_loss)}"]
    parts += [
        f"{LABELS.get(k, k)} {_value(metrics, k)}" for k in SHOWN if metrics.get(k) is not None
    ]
    return ", ".join(parts)


def _level(metrics: Mapping[str, Any]) -> str:
    if metrics.get("n_boot") is None:
        return ""
    level = 100 * float(metrics.get("ci_level", 0.95))
    return f"; [{level:g} % interval, {int(metrics['n_boot'])} bootstrap resamples of test records]"


def _class_table(result: Any) -> list[str]:
    """Per-class lines of a result: class, `n_pos / n`, AUROC, AUPRC and F1 with their intervals
    (`*`: from fewer than `MIN_DEFINED` of the resamples); none without per-class metrics
    (regression)."""
    from ecgscale.evaluate.metrics import MIN_DEFINED

    per_class = dict(result.per_class)
    if "auroc" not in per_class:
        return []
    names = ("auroc", "auprc", "f1")
    rows = [["class", "n_pos / n", *(LABELS[name] for name in names)]]
    flagged = False
    for j, label in enumerate(result.label_names):
        row = {k: v[j] for k, v in per_class.items()}
        n_pos = row.get("n_pos")
        count = "-" if n_pos is None else f"{int(n_pos)} / {result.n_test}"
        rows.append([str(label), count, *(_value(row, name) for name in names)])
        flagged |= any((row.get(f"{n}_defined") or 1.0) < MIN_DEFINED for n in names)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    if flagged:
        lines.append(
            f"* interval from fewer than {MIN_DEFINED:.0%} of the resamples (the others had no "
            "positive or no negative of the class)"
        )
    return lines


def _print_line(text: str) -> None:
    """One line as it is: no markup, no highlighting, no wrapping (intervals hold brackets)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _print_result(head: str, result: Any, per_class: bool, tail: str = "") -> None:
    metrics = dict(result.metrics)
    _print_line(f"{head}{_summary(metrics, result.test_loss)}{tail}{_level(metrics)}")
    for line in _class_table(result) if per_class else []:
        _print_line("  " + line)


def _bootstrap(n_boot: int, level: float) -> Bootstrap | None:
    from ecgscale.evaluate.metrics import Bootstrap

    if n_boot < 0:
        raise ConfigError(f"--n-boot {n_boot}: expected 0 (no intervals) or more resamples")
    if not 0 < level < 1:
        raise ConfigError(f"--ci-level {level}: expected a coverage between 0 and 1, e.g. 0.95")
    return Bootstrap(n_boot=n_boot, level=level) if n_boot else None


N_BOOT_HELP = "Bootstrap resamples of the test records for metric intervals (0: none)."
LEVEL_HELP = "Coverage of the intervals."


def probe_cmd(
    checkpoint: Annotated[
        list[str],
        typer.Option(
            help="Run directory, or external model ADAPTER:PATH / module:function (repeatable)."
        ),
    ],
    task: TasksOption,
    store: StoresOption,
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
            help="Inverse L2 strengths, e.g. 0.001,0.01,1 (default: 1e-4-10, 11 log steps)."
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
    n_boot: Annotated[int, typer.Option(help=N_BOOT_HELP)] = 1000,
    ci_level: Annotated[float, typer.Option(help=LEVEL_HELP)] = 0.95,
    per_class: Annotated[
        bool | None,
        typer.Option(
            "--per-class/--no-per-class",
            help="Print a per-class table of each result (default: only without --fractions).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Linear probes of frozen encoders on tasks (optionally on fractions of the training labels);
    one tidy table of test loss and metrics per model x task, each metric with its bootstrap
    interval over test records (rows `<metric>_lo`, `<metric>_hi`) and per-class `n_pos`."""
    from ecgscale.evaluate.probe import DEFAULT_C_GRID
    from ecgscale.evaluate.tasks import probe_table, table_path, write_table

    table_path(out)
    bootstrap = _bootstrap(n_boot, ci_level)
    show_classes = fractions is None if per_class is None else per_class

    def report(model: str, name: str, result: ProbeResult) -> None:
        tail = f" (C {result.c:g}, {result.n_train} training records)"
        _print_result(f"{model} {name}: ", result, show_classes, tail)

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
        bootstrap=bootstrap,
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
    per_class: Annotated[
        bool, typer.Option("--per-class/--no-per-class", help="Print a per-class table.")
    ] = True,
) -> None:
    """Fine-tune a run on a task (whole encoder, or a head on the frozen encoder) for a number of
    steps; writes test loss and metrics (with 95 % bootstrap intervals over test records, 1000
    resamples), with the untrained head's loss, as a tidy table."""
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
    head = (
        f"{checkpoint} {task} ({mode}, {result.steps} steps, reported step {result.best_step}): "
        f"untrained test loss {result.initial_test_loss:.4f} -> "
    )
    _print_result(head, result, per_class, f" ({result.seconds:.1f} s)")
    rows = finetune_rows(str(checkpoint), result)
    write_table(rows, out)
    console.print(f"wrote [bold]{out}[/bold] ({len(rows)} rows)")
    if run_out is not None:
        console.print(f"saved the fine-tuned model as a run in [bold]{run_out}[/bold]")
