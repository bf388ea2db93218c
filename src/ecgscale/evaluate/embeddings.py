"""Frozen embeddings of a checkpoint over a store, computed once and cached on disk.

The cache key is (checkpoint content hash, store checksum, store preprocessing), so probing many
tasks of one store re-uses a single forward pass, and a changed checkpoint or store is never served
stale embeddings. Files are `<cache_dir>/<key>.npy` (float32 `(records, embed_dim)`), written
atomically; the default cache directory is the run's `embeddings/` folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ecgscale.data.store import Store
from ecgscale.errors import ConfigError
from ecgscale.train.checkpoint import load_tensors


def checkpoint_hash(path: str | Path) -> str:
    """blake2b of a checkpoint file's bytes."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(checkpoint: str | Path, store: Store) -> str:
    """Key of the embeddings of `checkpoint` over `store`."""
    prep = json.dumps(
        {"pre": store.manifest["preprocessing"], "fs": store.fs, "length": store.length},
        sort_keys=True,
    )
    text = f"{checkpoint_hash(checkpoint)}|{store.checksum}|{prep}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def model_fs(run_dir: str | Path, which: str = "best") -> float:
    """Sampling rate (Hz) of the store a run was trained on."""
    _, meta = load_tensors(Path(run_dir) / f"{which}.safetensors")
    return float(meta["config"]["store_fs"])


@torch.no_grad()
def encode(encoder: torch.nn.Module, store: Store, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """`encoder.forward_features` over `store` rows in order, float32 `(len(rows), embed_dim)`."""
    encoder.eval()
    out = []
    for start in range(0, len(rows), batch_size):
        x = torch.from_numpy(store.batch(rows[start : start + batch_size]))
        out.append(encoder.forward_features(x).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.embed_dim), np.float32)


def embed(
    run_dir: str | Path,
    store: Store,
    *,
    which: str = "best",
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """Embeddings `(len(store), embed_dim)` of every record of `store` by the run's encoder.

    Raises `ConfigError` when the store's sampling rate differs from the one the model was trained
    at (prepare the store at that rate).
    """
    from ecgscale.train import load_encoder

    run_dir = Path(run_dir)
    checkpoint = run_dir / f"{which}.safetensors"
    fs = model_fs(run_dir, which)
    if fs != store.fs:
        raise ConfigError(
            f"{store.path}: sampled at {store.fs:g} Hz but the model in {run_dir} "
            f"was trained at {fs:g} Hz; prepare the store with --fs {fs:g}"
        )
    cache = Path(cache_dir) if cache_dir is not None else run_dir / "embeddings"
    path = cache / f"{cache_key(checkpoint, store)}.npy"
    if path.is_file():
        return np.load(path)
    torch.manual_seed(0)  # encoders with stochastic parts (none at eval) stay reproducible
    features = encode(load_encoder(run_dir, which), store, np.arange(len(store)), batch_size)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        np.save(fh, features)
    os.replace(tmp, path)
    return features
