"""The `ecgscale` program: registers each command group and turns `UserError` into one line."""

from __future__ import annotations

import functools
import sys
from typing import NoReturn

import pydantic
import typer
from rich.console import Console
from rich.markup import escape

from ecgscale.errors import UserError, validation_message

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
    "benchmark",
    "design",
)


@functools.cache
def _register() -> None:
    """Attach every command group once (`main` may run many times in one process); each module
    exposes `register(app)`."""
    import importlib

    for name in _COMMAND_GROUPS:
        importlib.import_module(f"ecgscale.cli.{name}").register(app)


def usage_message(exc: typer.TyperException) -> str:
    """One line from a usage error (a bad option value, an unknown command): the command, the
    problem and where its help is."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return message
    return f"{ctx.command_path}: {message} (see {ctx.command_path} --help)"


def _fail(message: str, status: int = 2) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(status)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; a `UserError`, an invalid configuration or a usage error (a bad
    option value) becomes one red line and exit status 2."""
    _register()
    try:
        status = app(args=argv, prog_name="ecgscale", standalone_mode=False)
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # as typer does: the help is printed
            sys.exit(exc.exit_code)
        _fail(usage_message(exc), exc.exit_code)
    except typer.Abort:
        _fail("aborted", 1)
    except UserError as exc:
        _fail(str(exc))
    except pydantic.ValidationError as exc:
        _fail(validation_message(exc))
    # Outside standalone mode click returns an exit status (typer.Exit, Ctrl-C) or a command's
    # return value, which is None for every command.
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
