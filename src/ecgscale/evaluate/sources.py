"""What probes, fine-tuning and benchmarks read: an ecgscale run folder or an external model.

`ModelSource.of(ref)` resolves a reference once:
* an ecgscale run folder (its `best.safetensors` / `last.safetensors`), including a fine-tuned run
  written by `ecgscale.evaluate.finetune` (same layout; for an external model its metadata names
  the original reference, whose architecture is rebuilt and then given the fine-tuned weights);
* an external reference, `ADAPTER:PATH` or `module:function[@weights.safetensors]`
  (`ecgscale.models.external`).

Runs must be used at the rate they were trained at (a store at another rate is a `ConfigError`);
external encoders resample the store's batches to their input contract, so any store works.
`content_hash` identifies the weights (the checkpoint bytes, or every file of an external
checkpoint) for the embedding cache.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ecgscale.errors import ConfigError, DataError
from ecgscale.fileio import file_hash
from ecgscale.models.base import Encoder, count_parameters
from ecgscale.models.external import ExternalRef, load_external, parse_ref
from ecgscale.train.checkpoint import load_tensors, strip_prefix

#: Embeddings of external models are cached here unless a cache folder is given.
EXTERNAL_CACHE = Path.home() / ".cache" / "ecgscale" / "embeddings"


def _version(path: str | Path) -> tuple[str, int, int, int]:
    """(path, inode, size, mtime) of a file: checkpoints are replaced by rename (a new inode),
    never rewritten in place, so this identifies their content for the memoised readers below."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return str(resolved), stat.st_ino, stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=256)
def _file_hash(version: tuple[str, int, int, int]) -> str:
    return file_hash(version[0])


@functools.lru_cache(maxsize=64)
def _checkpoint_meta(version: tuple[str, int, int, int]) -> dict[str, Any]:
    _, meta = load_tensors(version[0])
    return meta


def checkpoint_hash(path: str | Path) -> str:
    """blake2b of a file's bytes (hashed once per process for an unchanged file)."""
    return _file_hash(_version(path))


@dataclass(frozen=True)
class ModelSource:
    """A resolved model reference.

    Attributes:
        ref: the reference as given (the name in result tables).
        run_dir: the run folder (None for an external reference).
        external: the external reference: given directly, or the origin of a fine-tuned
            external run.
        which: "best" or "last" checkpoint of a run.
    """

    ref: str
    run_dir: Path | None
    external: ExternalRef | None
    which: str = "best"

    @classmethod
    def of(cls, ref: str | Path | ModelSource, which: str = "best") -> ModelSource:
        if isinstance(ref, ModelSource):
            return ref
        text = str(ref)
        external = None if isinstance(ref, Path) or Path(text).is_dir() else parse_ref(text)
        if external is not None:
            return cls(text, None, external, which)
        run_dir = Path(text)
        checkpoint = run_dir / f"{which}.safetensors"
        if not checkpoint.is_file():
            raise DataError(
                f"{checkpoint}: no such checkpoint file (is {run_dir} a finished run, or did you "
                "mean an external model ADAPTER:PATH / module:function?)"
            )
        origin = _checkpoint_meta(_version(checkpoint)).get("external")
        return cls(text, run_dir, None if origin is None else parse_ref(origin), which)

    @property
    def checkpoint(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / f"{self.which}.safetensors"

    @property
    def meta(self) -> dict[str, Any]:
        """The run checkpoint's JSON metadata ({} for an external reference)."""
        return {} if self.checkpoint is None else _checkpoint_meta(_version(self.checkpoint))

    @property
    def trained_fs(self) -> float | None:
        """Rate (Hz) an ecgscale run was trained at; None for external encoders (they adapt)."""
        if self.checkpoint is None or self.external is not None:
            return None
        return float(self.meta["config"]["store_fs"])

    def content_hash(self) -> str:
        """Hash of the bytes that define the weights."""
        if self.checkpoint is not None:
            return checkpoint_hash(self.checkpoint)
        assert self.external is not None
        files = self.external.files
        if not files:
            raise DataError(f"{self.ref}: no checkpoint files found")
        text = "|".join([self.external.text, *(checkpoint_hash(f) for f in files)])
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def default_cache(self) -> Path:
        return EXTERNAL_CACHE if self.run_dir is None else self.run_dir / "embeddings"

    def check_rate(self, fs: float, where: str | Path) -> None:
        """Raise `ConfigError` when a run meets a store at another rate than it was trained at."""
        trained = self.trained_fs
        if trained is not None and trained != fs:
            raise ConfigError(
                f"{where}: sampled at {fs:g} Hz but the model in {self.ref} was trained at "
                f"{trained:g} Hz; prepare the store with --fs {trained:g}"
            )

    def encoder(self, store_fs: float, device: str | torch.device = "cpu") -> Encoder:
        """The encoder with its weights on `device`, reading store batches at `store_fs` Hz.
        Building it draws throw-away initial weights from torch's global generator, which is
        forked and restored, so the caller's random state is untouched."""
        self.check_rate(store_fs, f"store at {store_fs:g} Hz")
        with torch.random.fork_rng(devices=[]):
            if self.external is not None:
                encoder = load_external(self.external, store_fs)
                if self.checkpoint is not None:  # a fine-tuned external model
                    tensors, _ = load_tensors(self.checkpoint)
                    encoder.load_state_dict(strip_prefix("encoder", tensors))
            else:
                from ecgscale.train import load_encoder

                encoder = load_encoder(self.run_dir, self.which)
        return encoder.to(device)

    def parameters(self, store_fs: float) -> int:
        """N: trainable parameters of the encoder (for external models, of their network)."""
        encoder = self.encoder(store_fs)
        return count_parameters(getattr(encoder, "network", encoder))
