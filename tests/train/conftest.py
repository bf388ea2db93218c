"""Fixtures of the trainer tests: small synthetic stores, single-threaded torch, a config builder.

Torch runs single-threaded here (and in the subprocesses the tests start): on the shared 2-core
machine two intra-op threads contending with other processes are several times slower than one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ecgscale.data.prepare import synthesize
from ecgscale.data.store import Store
from ecgscale.data.synth import SynthConfig
from ecgscale.train import TrainConfig

TINY_RESNET = {"width_multiplier": 0.125, "kernel_size": 9}


@pytest.fixture(scope="session")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """160 synthetic records at 100 Hz x 1000 samples (CODE labels)."""
    out = tmp_path_factory.mktemp("train_synth") / "synth"
    return synthesize(160, out, SynthConfig(fs=100.0, length=1000, seed=5))


@pytest.fixture
def config(small_store: Store, tmp_path: Path):
    """`config(**fields) -> TrainConfig`: a tiny ResNet with SL on `small_store` by default."""

    def build(**fields) -> TrainConfig:
        base = {
            "model": "resnet",
            "model_config": TINY_RESNET,
            "objective": "sl",
            "label_set": "code",
            "data": small_store.path,
            "out": tmp_path / "run",
            "batch_size": 16,
            "lr": 3e-3,
            "epochs": 2,
        }
        base.update(fields)
        if "samples" in fields:
            base.pop("epochs")
        return TrainConfig(**base)

    return build
