"""The `ecgscale` program: registers each command group and turns `UserError` into one line."""

from __future__ import annotations

import sys

import pydantic
import typer
from rich.console import Console

from ecgscale.errors import UserError

app = typer.Typer(
    name="ecgscale",
    help="Controlled scaling-law studies of ECG models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from ecgscale import __version__

        typer.echo(f"ecgscale {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Controlled scaling-law studies of ECG models."""


# Command-group modules under ecgscale.cli; each exposes `register(app: typer.Typer) -> None`.
_COMMAND_GROUPS: tuple[str, ...] = (
    "data",
    "tasks",
    "models",
    "pretrain",
    "fit",
    "study",
    "probe",
    "design",
)


def _register() -> None:
    """Attach every command group; each module exposes `register(app)`."""
    import importlib

    for name in _COMMAND_GROUPS:
        importlib.import_module(f"ecgscale.cli.{name}").register(app)


def validation_message(exc: pydantic.ValidationError) -> str:
    """One line from a pydantic error: the field path, the problem and the value given."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or exc.title
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg']} (got {err.get('input')!r}){more}"


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; a `UserError` or invalid configuration becomes one red line and
    exit status 2 (usage errors are reported by typer itself, also with status 2)."""
    _register()
    try:
        app(args=argv)
    except UserError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except pydantic.ValidationError as exc:
        err_console.print(
            f"[red]error:[/red] {validation_message(exc)}", highlight=False, soft_wrap=True
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
