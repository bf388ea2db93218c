"""Embedding cache on the real PTB-XL store: one encoder pass serves every task of a store, a
changed checkpoint is re-embedded (and the old entry is never served for it), damaged or
interrupted cache files are never served, and the cached values equal a direct forward pass."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import ecgscale.evaluate.embeddings as E
from ecgscale.data.prepare import synthesize
from ecgscale.data.synth import SynthConfig
from ecgscale.errors import ConfigError
from ecgscale.evaluate.tasks import probe_task
from ecgscale.train import TrainConfig, load_encoder, pretrain
from ecgscale.train.checkpoint import load_tensors, save_tensors

TINY_RESNET = {"width_multiplier": 0.125, "kernel_size": 9}


@pytest.fixture(scope="module")
def run_dir(ptbxl_100hz_store, tmp_path_factory) -> Path:
    """A tiny SL ResNet trained for one step (the cache does not care how good it is)."""
    out = tmp_path_factory.mktemp("embed_run") / "sl"
    config = TrainConfig(
        model="resnet",
        model_config=TINY_RESNET,
        objective="sl",
        label_set="superdiagnostic",
        data=ptbxl_100hz_store.path,
        out=out,
        batch_size=32,
        samples=32,
    )
    torch.set_num_threads(1)
    pretrain(config, progress=False)
    return out


@pytest.fixture
def run(run_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the run (its cache and checkpoint may be changed by the test)."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("embeddings"))
    return copy


@pytest.fixture
def forwards(monkeypatch) -> list[int]:
    """Counts the records of every encoder pass that `embed` starts."""
    calls: list[int] = []
    original = E.encode

    def counting(encoder, store, rows, batch_size, **kwargs):
        calls.append(len(rows))
        return original(encoder, store, rows, batch_size, **kwargs)

    monkeypatch.setattr(E, "encode", counting)
    return calls


def _perturb(checkpoint: Path) -> None:
    """Rewrite `checkpoint` with the first encoder weight shifted (a different model)."""
    tensors, meta = load_tensors(checkpoint)
    key = next(k for k in tensors if k.startswith("encoder.") and tensors[k].is_floating_point())
    tensors[key] = tensors[key] + 0.05
    save_tensors(checkpoint, tensors, meta)


def test_one_pass_serves_every_task_and_a_new_checkpoint_is_re_embedded(
    run: Path, ptbxl_100hz_store, forwards: list[int]
) -> None:
    store = ptbxl_100hz_store
    first = probe_task(run, "ptbxl_superdiagnostic", store, c_grid=[0.1])
    probe_task(run, "ptbxl_rhythm", store, c_grid=[0.1])
    again = probe_task(run, "ptbxl_superdiagnostic", store, c_grid=[0.1])
    assert forwards == [len(store)]  # one pass over the whole store, then cache hits
    assert again == first
    cached = sorted((run / "embeddings").glob("*.npy"))
    assert len(cached) == 1
    before = np.array(E.embed(run, store))

    original = (run / "best.safetensors").read_bytes()
    _perturb(run / "best.safetensors")
    after = np.array(E.embed(run, store))
    assert forwards == [len(store), len(store)]  # the changed checkpoint is embedded anew
    assert not np.allclose(after, before)
    assert len(list((run / "embeddings").glob("*.npy"))) == 2

    (run / "best.safetensors").write_bytes(original)  # the old weights again: a cache hit
    np.testing.assert_array_equal(E.embed(run, store), before)
    assert len(forwards) == 2


def test_cached_values_equal_a_direct_forward_pass(run: Path, ptbxl_100hz_store) -> None:
    store = ptbxl_100hz_store
    features = E.embed(run, store, batch_size=100)
    assert features.shape == (len(store), load_encoder(run).embed_dim)
    assert features.dtype == np.float32 and not features.flags.writeable
    rows = np.array([0, 1, 700, len(store) - 1])
    encoder = load_encoder(run).eval()
    with torch.no_grad():
        direct = encoder.forward_features(torch.from_numpy(store.batch(rows))).numpy()
    np.testing.assert_allclose(features[rows], direct, rtol=1e-5, atol=1e-6)


def test_damaged_or_interrupted_cache_files_are_never_served(
    run: Path, ptbxl_100hz_store, forwards: list[int], monkeypatch
) -> None:
    store = ptbxl_100hz_store
    good = np.array(E.embed(run, store))
    (path,) = (run / "embeddings").glob("*.npy")
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    np.testing.assert_array_equal(E.embed(run, store), good)
    assert len(forwards) == 2

    path.unlink()

    def fail(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(E, "encode", fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        E.embed(run, store)
    assert list((run / "embeddings").iterdir()) == []  # no partial file left behind


def test_key_depends_on_store_and_rate_is_checked(
    run: Path, ptbxl_100hz_store, tmp_path: Path
) -> None:
    checkpoint = run / "best.safetensors"
    other = synthesize(40, tmp_path / "synth", SynthConfig(fs=100, length=1000, seed=1))
    assert E.cache_key(checkpoint, other) != E.cache_key(checkpoint, ptbxl_100hz_store)
    assert E.embed(run, other, cache_dir=tmp_path / "cache").shape[0] == 40
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    slow = synthesize(20, tmp_path / "synth50", SynthConfig(fs=50, length=500, seed=1))
    with pytest.raises(ConfigError, match="trained at 100 Hz; prepare the store with --fs 100"):
        E.embed(run, slow)


def test_beat_token_encoders_embed_from_the_store_tokens(tmp_path) -> None:
    from ecgscale.models.registry import create_model

    store = synthesize(40, tmp_path / "store", SynthConfig(fs=100.0, length=1000, seed=4))
    torch.manual_seed(0)
    encoder = create_model("beat_transformer", width=16, depth=1, heads=2).eval()
    rows = np.arange(0, 40, 3)
    features = E.encode(encoder, store, rows, batch_size=8)
    assert (store.path / "cache" / "beat_tokens").is_dir()
    with torch.no_grad():
        direct = encoder.forward_features(torch.from_numpy(store.batch(rows)))
    np.testing.assert_allclose(features, direct.numpy(), rtol=0, atol=1e-5)
