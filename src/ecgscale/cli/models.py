"""`ecgscale models`: the registered encoder families and the size and compute of their ladders."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.progress import track
from rich.table import Table

from ecgscale.errors import ConfigError
from ecgscale.models.flops import FLOP_CONVENTION, format_count, model_size
from ecgscale.models.registry import get_spec, ladder, list_models, resolve_model

# Pipes and logs get the whole table rather than 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
models_app = typer.Typer(
    help="Encoder families: list them, show their size ladders.", no_args_is_help=True
)


def _summary(name: str) -> str:
    doc = sys.modules[get_spec(name).factory.__module__].__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


@models_app.command("list")
def list_command(
    pattern: str = typer.Argument(
        "*", metavar="PATTERN", help="Shell-style pattern of model names, e.g. 'resnet*'."
    ),
    sizes: bool = typer.Option(
        False, "--sizes", help="Also list the ladder sizes of each family (resnet-200K, ...)."
    ),
) -> None:
    """List the registered models matching PATTERN with their input kind and default input
    shape; with --sizes, also the names of their ladder sizes, which every command that takes a
    model accepts (`ecgscale.list_models(pattern, sizes=...)`)."""
    names = list_models(pattern, sizes=sizes)
    if not names:
        raise ConfigError(
            f"no registered model matches {pattern!r}"
            + ("" if sizes else " (ladder sizes such as resnet-200K need --sizes)")
            + "; `ecgscale models list` shows them all"
        )  # fmt: skip
    families = set(list_models())
    table = Table(title="registered models" + (f" matching {pattern}" if pattern != "*" else ""))
    for column in ("model", "input", "fs (Hz)", "samples", "description"):
        table.add_column(column, no_wrap=column != "description")
    targets: dict[str, int] = {}
    for name in names:
        family = name if name in families else resolve_family(name)
        spec = get_spec(family)
        if name in families:
            description = _summary(name)
        else:
            if family not in targets:
                targets.update({p.name: p.target_params for p in ladder(family)})
            description = f"{family} at about {format_count(targets[name])} parameters"
        table.add_row(
            name, spec.input_kind, f"{spec.default_fs:g}", str(spec.default_length), description
        )
    console.print(table)


@models_app.command("ladder")
def ladder_command(
    family: str = typer.Argument(..., help="A registered model (see `ecgscale models list`)."),
    fs: float = typer.Option(None, "--fs", help="Sampling rate in Hz (default: the family's)."),
    length: int = typer.Option(None, "--length", help="Samples per lead (default: the family's)."),
    leads: int = typer.Option(12, "--leads", help="Leads per record."),
    classes: int = typer.Option(
        0, "--classes", help="Also show a linear head's parameters for this many classes."
    ),
) -> None:
    """Print N, FLOPs per record and embedding size of every point of FAMILY's size ladder."""
    spec = get_spec(family)
    fs = spec.default_fs if fs is None else fs
    length = spec.default_length if length is None else length
    points = ladder(family)
    fixed = {k: v for k, v in points[0].config.items() if all(p.config.get(k) == v for p in points)}
    table = Table(
        title=f"{family} ladder at {leads} x {length} samples ({fs:g} Hz)",
        caption=f"N = encoder parameters; FLOPs per record: {FLOP_CONVENTION}"
        + (f"\nall points: {_format_config(fixed)}" if fixed else ""),
    )
    columns = ["point", "target N", "N", "N / target", "embed", "fwd FLOPs", "train FLOPs"]
    columns += ["head params"] if classes > 0 else []
    for column in [*columns, "config"]:
        table.add_column(
            column,
            justify="left" if column in ("point", "config") else "right",
            no_wrap=column != "config",
        )
    for point in track(points, description=f"measuring {family}", console=console, transient=True):
        size = model_size(
            family, point.config, fs=fs, length=length, leads=leads, num_classes=classes
        )
        row = [
            point.name,
            format_count(point.target_params),
            f"{size.params:,}",
            f"{size.params / point.target_params:.3f}",
            str(size.embed_dim),
            format_count(size.forward_flops),
            format_count(size.train_flops),
        ]
        row += [f"{size.head_params:,}"] if classes > 0 else []
        varying = {k: v for k, v in point.config.items() if k not in fixed}
        table.add_row(*row, _format_config(varying))
    console.print(table)


def resolve_family(name: str) -> str:
    """The family of a ladder size name ("resnet-200K" -> "resnet")."""
    return resolve_model(name)[0]


def _format_config(config: dict) -> str:
    return ", ".join(
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items()
    )


def register(app: typer.Typer) -> None:
    """Attach the `models` command group."""
    app.add_typer(models_app, name="models")
