"""Model references behind embeddings: an external `module:function` encoder embeds any store
(it resamples to its contract), caches under a key of its weights, and is refused as a run."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ecgscale.data.prepare import synthesize
from ecgscale.data.synth import SynthConfig
from ecgscale.errors import DataError
from ecgscale.evaluate.embeddings import cache_key, embed
from ecgscale.evaluate.sources import ModelSource

FACTORY = """
import torch
from torch import nn
from ecgscale.models.external import InputContract

class Net(nn.Module):
    embed_dim = 3
    def __init__(self):
        super().__init__()
        self.seen = []
    def forward(self, x):
        self.seen.append(tuple(x.shape))
        width = x.new_full((len(x),), x.shape[-1])
        return torch.stack([x.mean(dim=(1, 2)), x.std(dim=(1, 2)), width], 1)

def make():
    return Net()

make.input_contract = InputContract(fs=50.0, samples=400, leads=("I", "II"))
"""


@pytest.fixture()
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "toy_encoders.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "toy_encoders:make"
    sys.modules.pop("toy_encoders", None)


def test_external_factory_embeds_a_store_at_its_contract(factory: str, tmp_path: Path) -> None:
    store = synthesize(12, tmp_path / "synth", SynthConfig(fs=100, length=1000, seed=3))
    source = ModelSource.of(factory)
    assert source.external is not None and source.trained_fs is None
    features = embed(factory, store, cache_dir=tmp_path / "cache", batch_size=5)
    assert features.shape == (12, 3)
    # 1000 samples at 100 Hz -> 500 at 50 Hz -> centre window of 400 samples.
    np.testing.assert_array_equal(features[:, 2], 400.0)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert cache_key(factory, store) == cache_key(source, store)


def test_a_folder_without_a_checkpoint_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such checkpoint file"):
        ModelSource.of(tmp_path)
