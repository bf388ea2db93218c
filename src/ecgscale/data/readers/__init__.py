"""Dataset readers: one module per source, each registered by name.

A reader turns a dataset folder in its official release layout into a `Source`: a count of candidate
records, an iterator of `Record`s (or of `Skip`s for records that cannot be read, with the reason),
the label vocabularies and provenance. `ecgscale.data.prepare.prepare` writes any `Source` to
a store.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecgscale.data.store import Record
from ecgscale.errors import ConfigError


@dataclass(frozen=True)
class Skip:
    """A record the reader could not use."""

    record_id: str
    reason: str


@dataclass
class Source:
    """What a reader returns.

    Attributes:
        name: dataset name (manifest `name`).
        count: number of candidate records (an upper bound on the store's rows).
        records: iterator of `Record` or `Skip`, in a deterministic order.
        label_sets: vocabulary of each label set carried in `Record.meta["labels_<set>"]`.
        provenance: where the data came from (path, version, citation, options).
        stratify_on: label set used to stratify folds when the source has no official folds.
        patient_ids: where the patient ids come from, per dataset or source database (the
            manifest's `patient_ids`): `source: <field>` or `PER_RECORD`.
    """

    name: str
    count: int
    records: Iterator[Record | Skip]
    label_sets: dict[str, list[str]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    stratify_on: str | None = None
    patient_ids: dict[str, str] = field(default_factory=dict)


#: Patient ids of a release without them: each record is its own patient, so records of one
#: patient may fall into different splits.
PER_RECORD = "per record (no patient id in the release)"
ReaderFn = Callable[..., Source]
_READERS: dict[str, ReaderFn] = {}
# Modules that register readers; imported lazily on first registry access.
_READER_MODULES: tuple[str, ...] = (
    "ecgscale.data.readers.ptbxl",
    "ecgscale.data.readers.physionet2021",
    "ecgscale.data.readers.cpsc2018",
    "ecgscale.data.readers.code15",
    "ecgscale.data.readers.mimic_iv_ecg",
    "ecgscale.data.readers.echonext",
    "ecgscale.data.readers.generic",
)


def register_reader(name: str) -> Callable[[ReaderFn], ReaderFn]:
    """Decorator registering `fn(src: Path, **options) -> Source` under `name`."""

    def decorate(fn: ReaderFn) -> ReaderFn:
        _READERS[name] = fn
        return fn

    return decorate


def list_readers() -> list[str]:
    """Names of all registered readers."""
    for module in _READER_MODULES:
        importlib.import_module(module)
    return sorted(_READERS)


def get_reader(name: str) -> ReaderFn:
    """The reader `name`; an unknown name is a `ConfigError` listing the known ones."""
    names = list_readers()
    if name not in _READERS:
        raise ConfigError(f"unknown dataset {name!r}; expected one of: {', '.join(names)}")
    return _READERS[name]


def positive_option(value: Any, name: str, cast: type = int, what: str = "number") -> Any:
    """A reader option that must be positive, as `cast` (it may come from the command line as
    text); otherwise a one-line `ConfigError` naming the option."""
    try:
        number = cast(value)
    except ValueError:
        number = cast(0)
    if not number > 0:
        raise ConfigError(f"{name} {value!r}: expected a positive {what}")
    return number


def require_files(src: Path, *names: str) -> None:
    """Raise a one-line `DataError` naming the first missing file or folder under `src`."""
    from ecgscale.errors import DataError

    if not src.is_dir():
        raise DataError(f"{src}: no such dataset folder")
    for name in names:
        if not (src / name).exists():
            raise DataError(f"{src}: expected {name} (official release layout), not found")
