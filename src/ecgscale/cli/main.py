"""The `ecgscale` program: registers each command group and turns `UserError` into one line."""

from __future__ import annotations

import sys

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

# Command-group modules under ecgscale.cli; each exposes `register(app: typer.Typer) -> None`.
_COMMAND_GROUPS: tuple[str, ...] = ()


def _register() -> None:
    """Attach every command group; each module exposes `register(app)`."""
    import importlib

    for name in _COMMAND_GROUPS:
        importlib.import_module(f"ecgscale.cli.{name}").register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; a `UserError` becomes one red line and exit status 2."""
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except UserError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("[red]aborted[/red]")
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
