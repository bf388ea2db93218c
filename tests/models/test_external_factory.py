"""User factories as encoders (`module:function[@weights.safetensors]`): embeddings through
`load_external`, weights from safetensors, adaptation of store batches to a declared
`input_contract` (rate, leads, units), and one-line errors for every way a reference can fail."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from scipy import signal as sps

from ecgscale.errors import ConfigError
from ecgscale.models.external import load_external
from fixtures.external_checkpoints import raises_one_line

MODULE = "toy_factories"
SOURCE = """
import torch
from torch import nn
from ecgscale.models.external import InputContract

class Probe(nn.Module):
    '''Keeps what it reads; embeds each record as its first channel's mean plus `weight`.'''
    embed_dim = 4

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(4))
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return x[:, 0].mean(-1, keepdim=True) + self.weight

def make_encoder():
    return Probe()

def make_250():
    return Probe()

def make_two_leads():
    return Probe()

def make_microvolts():
    return Probe()

def make_text():
    return "not a network"

make_250.input_contract = InputContract(fs=250.0, samples=None)
make_two_leads.input_contract = InputContract(fs=500.0, samples=None, leads=("V1", "II"))
make_microvolts.input_contract = InputContract(fs=500.0, samples=None, scale=1000.0, units="uV")
"""


@pytest.fixture()
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / f"{MODULE}.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop(MODULE, None)


def _store_batch(fs: int = 500, seconds: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 12, fs * seconds, generator=g)


def _embed(ref: str, x: torch.Tensor, store_fs: float = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """The embedding of `x` and what the network read."""
    encoder = load_external(ref, store_fs=store_fs)
    with torch.no_grad():
        z = encoder.forward_features(x)
    return z, encoder.network.seen[-1]


def test_factory_without_contract_reads_the_store_batch(factories: Path) -> None:
    x = _store_batch()
    z, seen = _embed(f"{MODULE}:make_encoder", x)
    assert torch.equal(seen, x)
    assert z.shape == (3, 4)
    torch.testing.assert_close(z, x[:, 0].mean(-1, keepdim=True).expand(3, 4))


def test_factory_weights_from_safetensors(factories: Path) -> None:
    save_file({"weight": torch.tensor([1.0, 2.0, 3.0, 4.0])}, str(factories / "w.safetensors"))
    x = _store_batch()
    z, _ = _embed(f"{MODULE}:make_encoder@{factories / 'w.safetensors'}", x)
    torch.testing.assert_close(
        z - x[:, 0].mean(-1, keepdim=True), torch.tensor([[1.0, 2, 3, 4]] * 3)
    )


def test_contract_rate_leads_and_units(factories: Path) -> None:
    x = _store_batch()
    _, seen = _embed(f"{MODULE}:make_250", x)
    assert seen.shape == (3, 12, 2500)  # 10 s at 250 Hz
    np.testing.assert_allclose(seen.numpy(), sps.resample_poly(x.numpy(), 1, 2, axis=-1), atol=1e-5)

    _, seen = _embed(f"{MODULE}:make_two_leads", x)
    assert torch.equal(seen, x[:, [6, 1]])  # V1, II in the store's I, II, III, aVR, aVL, aVF, V1...

    _, seen = _embed(f"{MODULE}:make_microvolts", x)
    torch.testing.assert_close(seen, 1000 * x)


def test_bad_references_are_one_line(factories: Path) -> None:
    raises_one_line(
        r"cannot import module 'no_such_module_xyz'",
        load_external, "no_such_module_xyz:make_encoder", 500, error=ConfigError,
    )  # fmt: skip
    raises_one_line(
        rf"module '{MODULE}' has no function 'missing'",
        load_external, f"{MODULE}:missing", 500, error=ConfigError,
    )  # fmt: skip
    raises_one_line(
        r"the factory must return a torch\.nn\.Module with an int embed_dim",
        load_external, f"{MODULE}:make_text", 500, error=ConfigError,
    )  # fmt: skip
    save_file({"encoder.weight": torch.zeros(4)}, str(factories / "other.safetensors"))
    raises_one_line(
        r"other\.safetensors: tensors do not match the architecture: 1 missing \(e\.g\. weight\), "
        r"1 unexpected \(e\.g\. encoder\.weight\)",
        load_external, f"{MODULE}:make_encoder@{factories / 'other.safetensors'}", 500,
    )  # fmt: skip
    save_file({"weight": torch.zeros(5)}, str(factories / "shape.safetensors"))
    raises_one_line(
        r"shape\.safetensors: tensors do not match the architecture: 1 shape \(e\.g\. weight\)",
        load_external, f"{MODULE}:make_encoder@{factories / 'shape.safetensors'}", 500,
    )  # fmt: skip
    raises_one_line(
        r"absent\.safetensors: no such safetensors file",
        load_external, f"{MODULE}:make_encoder@{factories / 'absent.safetensors'}", 500,
    )  # fmt: skip
