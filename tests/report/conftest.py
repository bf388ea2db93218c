"""Report fixtures: the report of a study with planted laws (see `planted`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from planted import planted_spec, write_planted

from ecgscale.study.spec import StudySpec

TOY_ENCODER = """
import torch
from torch import nn


class LeadEnergy(nn.Module):
    \"\"\"(batch, 12, samples) -> (batch, 24): each lead's mean and RMS, times a fixed map.\"\"\"

    embed_dim = 24

    def __init__(self):
        super().__init__()
        self.mix = nn.Linear(24, 24)

    def forward(self, x):
        return self.mix(torch.cat([x.mean(-1), x.pow(2).mean(-1).sqrt()], 1))


def make():
    torch.manual_seed(0)
    return LeadEnergy()
"""


@pytest.fixture(scope="module")
def planted_report(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[StudySpec, Path]]:
    """The report of the planted study (written once per module), with one external model (a
    `module:function` encoder) probed on its OOD tasks."""
    from ecgscale.report.html import write_report

    root = tmp_path_factory.mktemp("planted")
    (root / "planted_toy_encoder.py").write_text(TOY_ENCODER)
    sys.path.insert(0, str(root))
    try:
        spec = planted_spec(root / "study")
        spec = spec.model_copy(update={"external": {"lead-energy": "planted_toy_encoder:make"}})
        write_planted(spec)
        yield spec, write_report(spec, spec.out / "report")
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("planted_toy_encoder", None)
