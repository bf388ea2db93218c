"""Fixtures of the objective tests: a small synthetic store and single-threaded torch.

Torch runs single-threaded here: on the shared 2-core machine two intra-op threads contending with
other processes are several times slower than one.
"""

from __future__ import annotations

import pytest

from ecgscale.data.prepare import synthesize
from ecgscale.data.store import Store
from ecgscale.data.synth import SynthConfig


@pytest.fixture(scope="session")
def synth_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """320 synthetic records, 100 Hz x 1000 samples (CODE labels; ~1.5 records per patient)."""
    out = tmp_path_factory.mktemp("objectives_synth") / "synth"
    return synthesize(320, out, SynthConfig(fs=100.0, length=1000, seed=3))


TINY_RESNET = {"width_multiplier": 0.125, "kernel_size": 9}


@pytest.fixture
def train(tmp_path):
    """`train(store, objective, **config) -> TrainResult`: a tiny ResNet trained in tmp_path."""
    from ecgscale.train import TrainConfig, pretrain

    def run(store: Store, objective: str, **config):
        fields = {
            "model": "resnet",
            "model_config": TINY_RESNET,
            "objective": objective,
            "data": store.path,
            "out": tmp_path / objective,
            "batch_size": 32,
            "lr": 3e-3,
            **config,
        }
        return pretrain(TrainConfig(**fields), progress=False)

    return run
