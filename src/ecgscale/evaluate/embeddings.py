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

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ecgscale.data.loader import BatchLoader
from ecgscale.data.store import Store
from ecgscale.errors import ConfigError
from ecgscale.evaluate.sources import ModelSource, checkpoint_hash
from ecgscale.models.beats import encoder_tokens


def cache_key(model: str | Path | ModelSource, store: Store) -> str:
    """Key of the embeddings of `model` (a run folder, a checkpoint file of one, an external
    reference or a `ModelSource`) over `store`."""
    if isinstance(model, str | Path) and Path(model).is_file():
        weights = checkpoint_hash(model)
    else:
        weights = ModelSource.of(model).content_hash()
    prep = json.dumps(
        {"pre": store.manifest["preprocessing"], "fs": store.fs, "length": store.length},
        sort_keys=True,
    )
    text = f"{weights}|{store.checksum}|{prep}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def load_run_encoder(
    model: str | Path | ModelSource,
    which: str = "best",
    device: str | torch.device = "cpu",
    store_fs: float | None = None,
) -> torch.nn.Module:
    """The encoder of `model` (a run folder or an external reference) with its weights on
    `device`, reading store batches at `store_fs` Hz (default: the run's training rate; required
    for an external model). The caller's torch random state is untouched."""
    source = ModelSource.of(model, which)
    fs = store_fs if store_fs is not None else source.trained_fs
    if fs is None:
        raise ConfigError(f"{source.ref}: an external model needs the store's sampling rate")
    return source.encoder(fs, device)


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
    model: str | Path | ModelSource,
    store: Store,
    *,
    which: str = "best",
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Embeddings `(len(store), embed_dim)` float32 of every record of `store` by the encoder of
    `model`: a run folder or an external reference (`ecgscale.evaluate.sources`).

    The array is memory-mapped from the cache file (read-only); index it (`features[rows]`) to get
    the records of a task in memory. The cache folder defaults to the run's `embeddings/` (for
    an external model, `sources.EXTERNAL_CACHE`).

    Raises `ConfigError` when the store's sampling rate differs from the one a run was trained
    at (prepare the store at that rate); external encoders resample to their input contract.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: expected at least 1")
    source = ModelSource.of(model, which)
    source.check_rate(store.fs, store.path)
    cache = Path(cache_dir) if cache_dir is not None else source.default_cache()
    path = cache / f"{cache_key(source, store)}.npy"
    features = _cached(path, len(store))
    if features is not None:
        return features
    encoder = source.encoder(store.fs, device)
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
