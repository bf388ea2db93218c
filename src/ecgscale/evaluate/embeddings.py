"""Frozen embeddings of a checkpoint over a store, computed once and cached on disk.

The cache key is (checkpoint content hash, store checksum, store preprocessing), so probing many
tasks of one store re-uses a single forward pass, and a changed checkpoint or store is never served
stale embeddings. Files are `<cache_dir>/<key>.npy` (float32 `(records, embed_dim)`), streamed into
a temporary file batch by batch (memory stays at one batch whatever the store's size) and renamed
when complete, so an interrupted pass leaves no file that looks complete; the default cache
directory is the run's `embeddings/` folder. The device is not part of the key: embeddings computed
on a GPU and on a CPU agree to float32 rounding, and whichever was cached first is served.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ecgscale.data.loader import BatchLoader
from ecgscale.data.store import Store
from ecgscale.errors import ConfigError, DataError
from ecgscale.fileio import file_hash
from ecgscale.models.beats import encoder_tokens
from ecgscale.train.checkpoint import load_tensors


def _version(path: str | Path) -> tuple[str, int, int, int]:
    """(path, inode, size, mtime) of a file: checkpoints are replaced by rename (a new inode),
    never rewritten in place, so this identifies their content for the memoised readers below."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return str(resolved), stat.st_ino, stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _file_hash(version: tuple[str, int, int, int]) -> str:
    return file_hash(version[0])


@functools.lru_cache(maxsize=64)
def _trained_fs(version: tuple[str, int, int, int]) -> float:
    _, meta = load_tensors(version[0])
    return float(meta["config"]["store_fs"])


def checkpoint_hash(path: str | Path) -> str:
    """blake2b of a checkpoint file's bytes (hashed once per process for an unchanged file)."""
    return _file_hash(_version(path))


def cache_key(checkpoint: str | Path, store: Store) -> str:
    """Key of the embeddings of `checkpoint` over `store`."""
    prep = json.dumps(
        {"pre": store.manifest["preprocessing"], "fs": store.fs, "length": store.length},
        sort_keys=True,
    )
    text = f"{checkpoint_hash(checkpoint)}|{store.checksum}|{prep}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def model_fs(run_dir: str | Path, which: str = "best") -> float:
    """Sampling rate (Hz) of the store a run was trained on (read once per unchanged file)."""
    path = Path(run_dir) / f"{which}.safetensors"
    if not path.is_file():
        raise DataError(f"{path}: no such checkpoint file (is {run_dir} a finished run?)")
    return _trained_fs(_version(path))


def check_rate(run_dir: str | Path, store: Store, which: str = "best") -> None:
    """Raise `ConfigError` when `store` is sampled at another rate than the run was trained at."""
    fs = model_fs(run_dir, which)
    if fs != store.fs:
        raise ConfigError(
            f"{store.path}: sampled at {store.fs:g} Hz but the model in {run_dir} "
            f"was trained at {fs:g} Hz; prepare the store with --fs {fs:g}"
        )


def load_run_encoder(
    run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """The run's encoder with its `which` weights on `device`. Building it draws throw-away
    initial weights from torch's global generator, which is forked and restored, so the caller's
    random state is untouched."""
    from ecgscale.train import load_encoder

    with torch.random.fork_rng(devices=[]):
        return load_encoder(run_dir, which).to(device)


@torch.inference_mode()
def encode(
    encoder: torch.nn.Module,
    store: Store,
    rows: np.ndarray,
    batch_size: int,
    *,
    device: str | torch.device = "cpu",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """`encoder.forward_features` over `store` rows in order, in eval mode.

    Batches are read by a background thread while the previous one is encoded; a beat-token
    encoder reads the store's cached tokens (`ecgscale.models.beats.store_tokens`). Returns float32
    `(len(rows), embed_dim)`, written into `out` when given (e.g. a memory-mapped file).
    """
    encoder.eval()
    if out is None:
        out = np.empty((len(rows), encoder.embed_dim), dtype=np.float32)
    tokens = encoder_tokens(encoder, store)
    loader = BatchLoader(store, np.asarray(rows), batch_size, shuffle=False, prefetch=2)
    start = 0
    for batch in loader:
        x = batch.x.to(device, non_blocking=True) if tokens is None else tokens[batch.index]
        z = encoder.forward_features(x)
        out[start : start + len(z)] = z.float().cpu().numpy()
        start += len(z)
    return out


def _cached(path: Path, rows: int) -> np.ndarray | None:
    """The cached embeddings at `path` (memory-mapped, read-only), or None when absent or not
    a complete `(rows, dim)` float32 array (a damaged file is then recomputed)."""
    if not path.is_file():
        return None
    try:
        features = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if features.ndim != 2 or features.shape[0] != rows or features.dtype != np.float32:
        return None
    return features


def embed(
    run_dir: str | Path,
    store: Store,
    *,
    which: str = "best",
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Embeddings `(len(store), embed_dim)` float32 of every record of `store` by the run's encoder.

    The array is memory-mapped from the cache file (read-only); index it (`features[rows]`) to get
    the records of a task in memory.

    Raises `ConfigError` when the store's sampling rate differs from the one the model was trained
    at (prepare the store at that rate).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: expected at least 1")
    run_dir = Path(run_dir)
    checkpoint = run_dir / f"{which}.safetensors"
    check_rate(run_dir, store, which)
    cache = Path(cache_dir) if cache_dir is not None else run_dir / "embeddings"
    path = cache / f"{cache_key(checkpoint, store)}.npy"
    features = _cached(path, len(store))
    if features is not None:
        return features
    encoder = load_run_encoder(run_dir, which, device)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.float32, shape=(len(store), encoder.embed_dim)
        )
        encode(encoder, store, np.arange(len(store)), batch_size, device=device, out=out)
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r")
