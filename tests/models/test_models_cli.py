"""`ecgscale models list|ladder` print the registry and the ladder table."""

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


def test_models_ladder_table() -> None:
    result = CliRunner().invoke(
        _app(), ["models", "ladder", "resnet", "--length", "1024", "--classes", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "1024 samples" in result.output and "head params" in result.output
    for point in ladder("resnet"):
        assert point.name in result.output
    assert "75G" not in result.output  # FLOPs are at 1024 samples, not at the default 4096
