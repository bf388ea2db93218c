"""Report fixtures: the report of a study with planted laws (see `planted`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from planted import planted_spec, write_planted

from ecgscale.study.spec import StudySpec


@pytest.fixture(scope="module")
def planted_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudySpec, Path]:
    """The report of the planted study (written once per module)."""
    from ecgscale.report.html import write_report

    spec = planted_spec(tmp_path_factory.mktemp("planted") / "study")
    write_planted(spec)
    return spec, write_report(spec, spec.out / "report")
