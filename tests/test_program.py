"""The `ecgscale` program as a whole: `--version`, and a default shown for every option."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest
import typer

from ecgscale import __version__
from ecgscale.cli.main import _register, app, main


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"ecgscale {__version__}"


def _commands(command: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, f"{path} {name}")
    if not hasattr(command, "commands"):
        yield path, command


def test_every_option_shows_its_default() -> None:
    """Options whose default is None say what None means ([default: ...] or show_default)."""
    _register()
    silent = [
        f"{path} --{param.name}"
        for path, command in _commands(typer.main.get_command(app), "ecgscale")
        for param in command.params
        if param.param_type_name == "option"
        and param.default is None
        and not param.required
        and not isinstance(param.show_default, str)
        and "default" not in (param.help or "").lower()
        and "required" not in (param.help or "").lower()
    ]
    assert silent == []


def test_default_texts_in_help_strings_are_rendered() -> None:
    """A default written into a help string reaches the rendered help (rich once read
    "[default: none]" as markup and printed "(repeatable) .")."""
    from typer.testing import CliRunner

    _register()
    for args, text in (
        (["data", "prepare", "--help"], "(default: none)"),
        (["pretrain", "--help"], "(default: the size's)"),
        (["fit", "--help"], "(default: no file)"),
    ):
        shown = CliRunner().invoke(app, args, env={"COLUMNS": "220"}).output
        assert text in shown, args
        assert not re.search(r" \.(\s|$)", shown), args  # no text eaten before a full stop
