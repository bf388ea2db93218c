"""The prepared-dataset store: the one on-disk format every reader writes and every trainer reads.

A store is a directory::

    signals.npy     (records, 12, samples) int16, memory-mapped; mV = value * manifest["scale"]
    meta.parquet    one row per record: record_id, patient_id, source, fold, split, age, sex,
                    labels_<set> (list of class names) for each label set, and source extras
    manifest.json   fs, length, leads, units, preprocessing, label sets, provenance, skipped
                    records with reasons, format version, row count, checksums

`StoreWriter` streams records into a hidden temporary directory (peak memory independent of the
number of records: signals go straight to the memory map) and renames it into place only when
complete, so an interrupted prepare never leaves a store that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgscale.data.preprocess import STANDARD_LEADS, PreprocessConfig, preprocess
from ecgscale.data.splits import assign_folds, check_disjoint, split_of_fold
from ecgscale.errors import DataError, UserError
from ecgscale.fileio import atomic_write, file_hash

FORMAT_VERSION = 1
SCALE_MV = 0.001  # one int16 step = 1 uV; range +-32.767 mV
_HEADER_BYTES = 128  # fixed .npy header size so the row count can be rewritten in place


@dataclass
class Record:
    """A reader's output: one raw ECG and its metadata (readers never resample).

    Attributes:
        signal: float32 `(leads, samples)` in mV.
        fs: sampling rate in Hz.
        leads: lead names of the rows of `signal`.
        record_id: unique identifier within the dataset.
        patient_id: identifier of the patient (the unit of every split).
        meta: other columns (age, sex, source, fold, labels_<set>, ...).
    """

    signal: np.ndarray
    fs: float
    leads: Sequence[str]
    record_id: str
    patient_id: str
    meta: dict[str, Any] = field(default_factory=dict)


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """A version-1.0 .npy header padded to exactly `_HEADER_BYTES`."""
    text = repr(
        {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    )
    prefix = b"\x93NUMPY\x01\x00"
    pad = _HEADER_BYTES - len(prefix) - 2 - len(text) - 1
    body = (text + " " * pad + "\n").encode("latin1")
    return prefix + len(body).to_bytes(2, "little") + body


class StoreWriter:
    """Streams records into a new store at `out`; use as a context manager.

    Args:
        out: the store directory to create.
        config: the preprocessing (input contract) applied to every record.
        capacity: upper bound on the number of records (checked as records arrive).
        name: dataset name for the manifest.
        label_sets: label vocabulary per set, e.g. {"superdiagnostic": ["CD", "HYP", ...]};
            records carry `labels_<set>` lists in their meta.
        provenance: free-form description of the source (paths, versions, citation).
        stratify_on: label set used to stratify seeded folds when records have no `fold`.
        seed: seed of the fold assignment.
        overwrite: replace an existing store at `out`.
    """

    def __init__(
        self,
        out: str | Path,
        config: PreprocessConfig,
        capacity: int,
        *,
        name: str,
        label_sets: dict[str, list[str]] | None = None,
        provenance: dict[str, Any] | None = None,
        stratify_on: str | None = None,
        seed: int = 0,
        overwrite: bool = False,
    ) -> None:
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise UserError(f"{self.out} already exists; pass --overwrite to replace it")
        if capacity <= 0:
            raise DataError(f"{name}: no records to write")
        self.config = config
        self.name = name
        self.label_sets = {k: list(v) for k, v in (label_sets or {}).items()}
        self.provenance = provenance or {}
        self.stratify_on = stratify_on
        self.seed = seed
        self.capacity = capacity
        self.tmp = self.out.parent / f".{self.out.name}.partial-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir(parents=True)
        self._dtype = np.dtype("<i2")
        self._signals_path = self.tmp / "signals.npy"
        # Plain sequential writes (not a writable memory map): written pages go to the page cache
        # and never count towards this process's resident memory.
        self._fh = open(self._signals_path, "wb")
        self._fh.write(_npy_header((capacity, 12, config.length), self._dtype))
        self._row_bytes = 12 * config.length * self._dtype.itemsize
        self._hash = hashlib.blake2b(digest_size=16)
        self._rows: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        self.skipped: list[dict[str, str]] = []
        self.clipped_samples = 0

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __len__(self) -> int:
        return len(self._rows)

    def skip(self, record_id: str, reason: str) -> None:
        """Count and list a record that cannot be used, with the reason."""
        self.skipped.append({"record_id": str(record_id), "reason": reason})

    def add(self, record: Record) -> bool:
        """Preprocess and append one raw record; a bad record is skipped with its reason."""
        try:
            x = preprocess(record.signal, record.fs, list(record.leads), self.config)
        except DataError as exc:
            self.skip(record.record_id, str(exc))
            return False
        return self.add_prepared(x[None], [self._row(record)]) == 1

    def add_prepared(self, x: np.ndarray, rows: list[dict[str, Any]]) -> int:
        """Append records already in the contract: `x` `(batch, 12, length)` float mV.

        `rows` hold each record's metadata (with `record_id` and `patient_id`). Duplicate ids
        are skipped. Returns the number of records written.
        """
        if x.shape[1:] != (12, self.config.length):
            raise DataError(f"batch shape {x.shape[1:]} != (12, {self.config.length})")
        keep = []
        for i, row in enumerate(rows):
            rid = str(row["record_id"])
            if rid in self._ids:
                self.skip(rid, "duplicate record id")
            elif not np.all(np.isfinite(x[i])):
                self.skip(rid, "signal contains NaN or infinite values")
            else:
                self._ids.add(rid)
                keep.append(i)
        if not keep:
            return 0
        start = len(self._rows)
        if start + len(keep) > self.capacity:
            raise RuntimeError(f"store capacity {self.capacity} exceeded")
        q = np.rint(np.asarray(x[keep], dtype=np.float32) / SCALE_MV)
        self.clipped_samples += int(np.count_nonzero(np.abs(q) > 32767))
        q = np.clip(q, -32767, 32767).astype(self._dtype)
        buffer = q.tobytes()
        self._fh.write(buffer)
        self._hash.update(buffer)
        self._rows.extend(rows[i] for i in keep)
        return len(keep)

    @staticmethod
    def _row(record: Record) -> dict[str, Any]:
        return {
            "record_id": str(record.record_id),
            "patient_id": str(record.patient_id),
            **record.meta,
        }

    def _meta_frame(self) -> pd.DataFrame:
        meta = pd.DataFrame(self._rows)
        for column in ("source", "age", "sex"):
            if column not in meta:
                meta[column] = None
        meta["source"] = meta["source"].fillna(self.name).astype(str)
        meta["age"] = pd.to_numeric(meta["age"], errors="coerce").astype("float32")
        for set_name in self.label_sets:
            col = f"labels_{set_name}"
            if col not in meta:
                meta[col] = [[] for _ in range(len(meta))]
            meta[col] = [
                list(v) if isinstance(v, list | tuple | np.ndarray) else [] for v in meta[col]
            ]
        if "fold" in meta and meta["fold"].notna().all():
            meta["fold"] = meta["fold"].astype("int16")
            fold_source = "official"
        else:
            labels = None
            if self.stratify_on is not None:
                labels = label_matrix(meta, self.stratify_on, self.label_sets[self.stratify_on])
            meta["fold"] = assign_folds(meta["patient_id"].to_numpy(), labels, self.seed)
            fold_source = f"seeded patient-grouped stratified (seed {self.seed})"
        meta["split"] = split_of_fold(meta["fold"].to_numpy())
        check_disjoint(meta["patient_id"].to_numpy(), meta["split"].to_numpy())
        self.provenance.setdefault("folds", fold_source)
        return meta

    def close(self) -> Store:
        """Finish the store: truncate the memory map, write metadata and manifest, rename."""
        n = len(self._rows)
        self._fh.close()
        if n == 0:
            self.abort()
            raise DataError(f"{self.name}: every record was skipped ({self._skip_summary()})")
        with open(self._signals_path, "r+b") as fh:
            fh.write(_npy_header((n, 12, self.config.length), self._dtype))
            fh.truncate(_HEADER_BYTES + n * self._row_bytes)
        meta = self._meta_frame()
        meta.to_parquet(self.tmp / "meta.parquet", index=False)
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "rows": n,
            "fs": self.config.fs,
            "length": self.config.length,
            "leads": list(STANDARD_LEADS),
            "units": "mV",
            "dtype": self._dtype.str,
            "scale": SCALE_MV,
            "preprocessing": self.config.model_dump(),
            "label_sets": self.label_sets,
            "provenance": self.provenance,
            "skipped": self.skipped,
            "clipped_samples": self.clipped_samples,
            "checksum": {
                "signals_blake2b": self._hash.hexdigest(),
                "meta_blake2b": file_hash(self.tmp / "meta.parquet"),
            },
        }
        atomic_write(self.tmp / "manifest.json", json.dumps(manifest, indent=2, default=str))
        if self.out.exists():
            trash = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.out, trash)
            shutil.rmtree(trash)
        os.replace(self.tmp, self.out)
        return Store(self.out)

    def abort(self) -> None:
        """Remove the temporary directory (an interrupted prepare leaves nothing behind)."""
        self._fh.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _skip_summary(self) -> str:
        reasons = pd.Series([s["reason"] for s in self.skipped]).value_counts()
        return "; ".join(f"{count} x {reason}" for reason, count in reasons.items())


def label_matrix(meta: pd.DataFrame, set_name: str, classes: list[str]) -> np.ndarray:
    """Multi-hot `(records, len(classes))` uint8 matrix of label set `set_name`."""
    column = f"labels_{set_name}"
    if column not in meta:
        raise DataError(f"no label set {set_name!r} in the store (column {column} missing)")
    position = {c: k for k, c in enumerate(classes)}
    out = np.zeros((len(meta), len(classes)), dtype=np.uint8)
    for i, labels in enumerate(meta[column]):
        for label in labels:
            k = position.get(label)
            if k is not None:
                out[i, k] = 1
    return out


class Store:
    """A prepared dataset opened read-only; signals stay memory-mapped.

    Attributes:
        path: store directory.
        manifest: the parsed manifest.json.
        meta: the metadata table (one row per record, aligned with `signals`).
        signals: `(records, 12, length)` int16 memory map (mV = value * scale).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not self.path.is_dir():
            raise UserError(f"{self.path}: no such store directory")
        if not manifest_path.is_file():
            raise DataError(f"{self.path}: not a complete store (manifest.json missing)")
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"{self.path}: store format {self.manifest.get('format_version')} "
                f"is not the supported version {FORMAT_VERSION}"
            )
        self.signals: np.ndarray = np.load(self.path / "signals.npy", mmap_mode="r")
        self.meta: pd.DataFrame = pd.read_parquet(self.path / "meta.parquet")
        if not len(self.signals) == len(self.meta) == self.manifest["rows"]:
            raise DataError(f"{self.path}: row counts of signals, meta and manifest disagree")
        self.scale = float(self.manifest["scale"])

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """The store at `path` (the same as `Store(path)`)."""
        return cls(path)

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def fs(self) -> float:
        return float(self.manifest["fs"])

    @property
    def length(self) -> int:
        return int(self.manifest["length"])

    @property
    def label_sets(self) -> dict[str, list[str]]:
        return self.manifest["label_sets"]

    @property
    def checksum(self) -> str:
        """Content identifier of the store (signals and metadata)."""
        c = self.manifest["checksum"]
        return f"{c['signals_blake2b']}-{c['meta_blake2b']}"

    def batch(self, indices: Iterable[int] | np.ndarray) -> np.ndarray:
        """Signals of `indices` as float32 `(batch, 12, length)` in mV, in the given order."""
        idx = np.asarray(indices, dtype=np.int64)
        return np.multiply(self.signals[idx], np.float32(self.scale), dtype=np.float32)

    def labels(self, set_name: str) -> np.ndarray:
        """Multi-hot `(records, classes)` uint8 matrix of label set `set_name`."""
        if set_name not in self.label_sets:
            raise DataError(
                f"{self.path}: no label set {set_name!r}; "
                f"available: {', '.join(self.label_sets) or 'none'}"
            )
        return label_matrix(self.meta, set_name, self.label_sets[set_name])

    def top_classes(self, set_name: str, k: int) -> list[str]:
        """The `k` most frequent classes of label set `set_name` in the training split (ties
        broken by name): the label sets of label-scaling studies."""
        classes = list(self.label_sets[set_name])
        counts = self.labels(set_name)[self.split_indices("train")].sum(0, dtype=np.int64)
        order = sorted(range(len(classes)), key=lambda c: (-counts[c], classes[c]))
        return [classes[c] for c in order[:k]]

    def split_indices(self, split: str) -> np.ndarray:
        """Indices of the records in split "train", "val" or "test"."""
        if split not in ("train", "val", "test"):
            raise UserError(f"split {split!r}: expected train, val or test")
        return np.flatnonzero(self.meta["split"].to_numpy() == split)

    def verify(self) -> None:
        """Recompute the checksums; raise `DataError` on a mismatch."""
        digest = hashlib.blake2b(digest_size=16)
        step = max(1, (1 << 24) // max(1, self.signals[0].nbytes))
        for start in range(0, len(self.signals), step):
            digest.update(np.ascontiguousarray(self.signals[start : start + step]).tobytes())
        c = self.manifest["checksum"]
        if digest.hexdigest() != c["signals_blake2b"]:
            raise DataError(f"{self.path}/signals.npy: checksum mismatch (file changed)")
        if file_hash(self.path / "meta.parquet") != c["meta_blake2b"]:
            raise DataError(f"{self.path}/meta.parquet: checksum mismatch (file changed)")
