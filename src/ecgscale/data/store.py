"""The prepared-dataset store: the one on-disk format every reader writes and every trainer reads.

A store is a directory::

    signals.npy     (records, 12, samples) int16, memory-mapped; mV = value * manifest["scale"]
    meta.parquet    one row per record: record_id, patient_id, source, fold, split, age, sex,
                    labels_<set> (list of class names) for each label set, and source extras
    manifest.json   fs, length, leads, units, preprocessing, label sets, provenance, where the
                    patient ids come from, skipped records with reasons, format version, row
                    count, checksums (of signals, metadata and the manifest itself)

`StoreWriter` streams records into a hidden temporary directory (peak memory independent of the
number of records: signals go straight to the memory map) and renames it into place only when
complete, so an interrupted prepare never leaves a store that looks complete. The writer holds a
lock on its temporary directory; the next write of the same store removes the unlocked ones that
killed writers left behind. `Store` checks every file as it opens them, so a damaged store is one
line naming the file and the problem.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ecgscale.data.preprocess import STANDARD_LEADS, PreprocessConfig, preprocess
from ecgscale.data.splits import assign_folds, check_disjoint, split_of_fold
from ecgscale.errors import DataError, UserError, validation_message
from ecgscale.fileio import atomic_write, file_hash

FORMAT_VERSION = 1
SCALE_MV = 0.001  # one int16 step = 1 uV; range +-32.767 mV
_HEADER_BYTES = 128  # fixed .npy header size so the row count can be rewritten in place
META_COLUMNS = ("record_id", "patient_id", "source", "fold", "split")  # in every meta.parquet


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
        patient_ids: where the patient ids come from, per dataset or source database (e.g.
            {"ptbxl": "source: patient_id of ptbxl_database.csv"}).

    A full disk or an unwritable location is a one-line `UserError`; nothing is left behind.
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
        patient_ids: dict[str, str] | None = None,
    ) -> None:
        self.out = Path(out)
        remove_partials(self.out)
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
        self.patient_ids = dict(patient_ids or {})
        self._dtype = np.dtype("<i2")
        self._row_bytes = 12 * config.length * self._dtype.itemsize
        self._hash = hashlib.blake2b(digest_size=16)
        self._rows: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        self.skipped: list[dict[str, str]] = []
        self.clipped_samples = 0
        self.tmp = self.out.parent / f".{self.out.name}.partial-{uuid.uuid4().hex[:8]}"
        self._fh: BinaryIO | None = None
        with self._aborting():
            self.tmp.mkdir(parents=True)
            # Plain sequential writes (not a writable memory map): written pages go to the page
            # cache and never count towards this process's resident memory. The lock marks the
            # folder as live until it is renamed (the kernel drops it when the process dies).
            self._fh = open(self.tmp / "signals.npy", "wb")
            fcntl.flock(self._fh, fcntl.LOCK_EX)
            self._fh.write(_npy_header((capacity, 12, config.length), self._dtype))

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __len__(self) -> int:
        return len(self._rows)

    @contextmanager
    def _aborting(self) -> Iterator[None]:
        """Any failure inside removes the partial folder (an existing store stays as it was); a
        failed write (full disk, read-only or missing folder) becomes one line."""
        try:
            yield
        except OSError as exc:
            self.abort()
            where = f" ({exc.filename})" if exc.filename else ""
            raise UserError(
                f"{self.out}: cannot write the store: {exc.strerror or exc}{where}; "
                "nothing was written"
            ) from None
        except BaseException:
            self.abort()
            raise

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
        with self._aborting():
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
        """Finish the store: truncate the signals, write metadata and manifest, rename."""
        n = len(self._rows)
        if n == 0:
            self.abort()
            raise DataError(f"{self.name}: every record was skipped ({self._skip_summary()})")
        with self._aborting():
            self._fh.seek(0)
            self._fh.write(_npy_header((n, 12, self.config.length), self._dtype))
            self._fh.truncate(_HEADER_BYTES + n * self._row_bytes)
            self._fh.flush()
            meta = self._meta_frame()
            meta.to_parquet(self.tmp / "meta.parquet", index=False)
            atomic_write(self.tmp / "manifest.json", self._manifest(n))
            self._publish()
        self._fh.close()
        return Store(self.out)

    def _manifest(self, n: int) -> str:
        """The manifest of a store of `n` records, as JSON text."""
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
            "patient_ids": self.patient_ids,
            "skipped": self.skipped,
            "clipped_samples": self.clipped_samples,
            "checksum": {
                "signals_blake2b": self._hash.hexdigest(),
                "meta_blake2b": file_hash(self.tmp / "meta.parquet"),
            },
        }
        content = json.loads(json.dumps(manifest, default=str))  # as a reader will see it
        content["checksum"]["manifest_blake2b"] = manifest_digest(content)
        return json.dumps(content, indent=2)

    def _publish(self) -> None:
        """Rename the finished folder into place; an existing store is replaced, and restored if
        the rename fails."""
        if not self.out.exists():
            os.replace(self.tmp, self.out)
            return
        trash = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(self.out, trash)
        try:
            os.replace(self.tmp, self.out)
        except OSError:
            os.replace(trash, self.out)
            raise
        shutil.rmtree(trash, ignore_errors=True)

    def abort(self) -> None:
        """Remove the temporary directory (an interrupted prepare leaves nothing behind)."""
        if self._fh is not None:
            self._fh.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _skip_summary(self) -> str:
        reasons = pd.Series([s["reason"] for s in self.skipped]).value_counts()
        return "; ".join(f"{count} x {reason}" for reason, count in reasons.items())


def remove_partials(out: str | Path) -> list[Path]:
    """Remove the temporary folders (`.NAME.partial-*`) that killed writes of store `out` left
    behind; a folder whose writer is alive (holds its lock) is kept. Returns the removed ones."""
    out = Path(out)
    removed = []
    for folder in sorted(out.parent.glob(f".{glob.escape(out.name)}.partial-*")):
        try:
            with open(folder / "signals.npy", "rb") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live writer
        except OSError:
            pass  # killed before its signals file was created
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def manifest_digest(manifest: dict[str, Any]) -> str:
    """BLAKE2b-128 of a parsed manifest's canonical JSON, leaving out this digest itself."""
    checksum = {k: v for k, v in manifest["checksum"].items() if k != "manifest_blake2b"}
    text = json.dumps({**manifest, "checksum": checksum}, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class _Checksums(BaseModel):
    signals_blake2b: str
    meta_blake2b: str
    manifest_blake2b: str | None = None  # stores written before it was added have none


class _ManifestFields(BaseModel):
    """The manifest entries that readers of a store rely on, with their types (others free)."""

    model_config = ConfigDict(extra="allow")

    name: str
    rows: int = Field(ge=1)
    fs: float = Field(gt=0)
    length: int = Field(gt=0)
    leads: list[str]
    dtype: str
    scale: float = Field(gt=0)
    preprocessing: dict[str, Any]
    label_sets: dict[str, list[str]]
    provenance: dict[str, Any]
    skipped: list[dict[str, str]]
    checksum: _Checksums


def _read_manifest(path: Path) -> dict[str, Any]:
    """The parsed `manifest.json` of the store at `path`; a missing, unparsable, foreign-version
    or incomplete manifest is one `DataError` line."""
    file = path / "manifest.json"
    if not file.is_file():
        raise DataError(f"{path}: not a complete store (manifest.json missing)")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{file}: unreadable ({exc}); prepare the store again") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{file}: expected a JSON object, found {type(manifest).__name__}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: store format {manifest.get('format_version')} "
            f"is not the supported version {FORMAT_VERSION}"
        )
    try:
        _ManifestFields.model_validate(manifest)
    except ValidationError as exc:
        raise DataError(f"{file}: {validation_message(exc)}; prepare the store again") from None
    return manifest


def _open_signals(path: Path, manifest: dict[str, Any]) -> np.ndarray:
    """Memory map of `signals.npy`, after checking its header and size against the manifest."""
    file = path / "signals.npy"
    expected = (manifest["rows"], 12, manifest["length"])
    dtype = np.dtype(manifest["dtype"])
    try:
        with open(file, "rb") as fh:
            fmt = np.lib.format
            version = fmt.read_magic(fh)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, found = read(fh)
            offset = fh.tell()
    except FileNotFoundError:
        raise DataError(f"{file}: missing; prepare the store again") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{file}: not a readable .npy file ({exc})") from None
    if shape != expected or found != dtype or fortran:
        raise DataError(f"{file}: holds {found} {shape}, manifest.json says {dtype} {expected}")
    size, want = file.stat().st_size, offset + int(np.prod(shape)) * dtype.itemsize
    if size != want:
        state = "truncated" if size < want else "trailing bytes"
        raise DataError(f"{file}: {size:,} bytes, expected {want:,} ({state})")
    return np.load(file, mmap_mode="r")


def _read_meta(path: Path, rows: int) -> pd.DataFrame:
    """`meta.parquet`, checked for its columns and its row count against the manifest."""
    file = path / "meta.parquet"
    if not file.is_file():
        raise DataError(f"{file}: missing; prepare the store again")
    try:
        meta = pd.read_parquet(file)
    except (OSError, ValueError, pa.ArrowException) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(f"{file}: unreadable Parquet ({reason})") from None
    missing = [c for c in META_COLUMNS if c not in meta.columns]
    if missing:
        raise DataError(f"{file}: columns {missing} missing")
    if len(meta) != rows:
        raise DataError(f"{file}: {len(meta)} rows, manifest.json says {rows}")
    return meta


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
        if not self.path.is_dir():
            raise UserError(f"{self.path}: no such store directory")
        self.manifest: dict[str, Any] = _read_manifest(self.path)
        self.signals: np.ndarray = _open_signals(self.path, self.manifest)
        self.meta: pd.DataFrame = _read_meta(self.path, self.manifest["rows"])
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
        """Recompute the checksum of every file; a mismatch is one `DataError` line naming the
        files that changed since the store was written."""
        digest = hashlib.blake2b(digest_size=16)
        step = max(1, (1 << 24) // max(1, self.signals[0].nbytes))
        for start in range(0, len(self.signals), step):
            digest.update(np.ascontiguousarray(self.signals[start : start + step]).tobytes())
        c = self.manifest["checksum"]
        found = {
            "signals.npy": (digest.hexdigest(), c["signals_blake2b"]),
            "meta.parquet": (file_hash(self.path / "meta.parquet"), c["meta_blake2b"]),
            "manifest.json": (manifest_digest(self.manifest), c.get("manifest_blake2b")),
        }
        changed = [name for name, (got, want) in found.items() if want is not None and got != want]
        if changed:
            raise DataError(
                f"{self.path}: checksum mismatch in {', '.join(changed)} (changed since the "
                "store was written; prepare it again)"
            )
