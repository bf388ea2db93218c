"""`ecgscale models list [PATTERN] [--sizes]|ladder` print the registry and the ladder table."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from ecgscale.cli.models import register
from ecgscale.models.registry import ladder, list_models


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("noop")(lambda: None)  # a second command keeps `models` a group
    register(app)
    return app


def test_models_list_names_every_model() -> None:
    result = CliRunner().invoke(_app(), ["models", "list"])
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in list_models())


def test_models_list_filters_by_pattern_and_lists_ladder_sizes() -> None:
    result = CliRunner().invoke(_app(), ["models", "list", "resnet*", "--sizes"])
    assert result.exit_code == 0, result.output
    rows = [line.split("│")[1].strip() for line in result.output.splitlines() if "│" in line]
    assert rows == list_models("resnet*", sizes=True)
    assert rows[0] == "resnet" and "resnet-200K" in rows and "xresnet1d" not in rows
    assert "resnet at about 200K parameters" in result.output

    plain = CliRunner().invoke(_app(), ["models", "list", "resnet*"])
    names = [line.split("│")[1].strip() for line in plain.output.splitlines() if "│" in line]
    assert plain.exit_code == 0 and names == list_models("resnet*") == ["resnet"]


def test_models_list_without_a_match_fails_in_one_line() -> None:
    result = CliRunner().invoke(_app(), ["models", "list", "resnet-2*"])
    assert result.exit_code != 0 and "need --sizes" in str(result.exception)
    sized = CliRunner().invoke(_app(), ["models", "list", "resnet-2*", "--sizes"])
    rows = [line.split("│")[1].strip() for line in sized.output.splitlines() if "│" in line]
    assert rows == ["resnet-20K", "resnet-200K", "resnet-2M", "resnet-20M", "resnet-200M"]


def test_models_ladder_table() -> None:
    result = CliRunner().invoke(
        _app(), ["models", "ladder", "resnet", "--length", "1024", "--classes", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "1024 samples" in result.output and "head params" in result.output
    for point in ladder("resnet"):
        assert point.name in result.output
    assert "75G" not in result.output  # FLOPs are at 1024 samples, not at the default 4096
