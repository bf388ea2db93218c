"""The task registry: named evaluation tasks defined in YAML, loaded from a store as arrays.

A task names its dataset (the reader, which is also the store's `name`), what to predict and how to
split. Tasks come from the package's `tasks.yaml`, from the files listed in the `ECGSCALE_TASKS`
environment variable (separated by the OS path separator) and from paths given explicitly; a
private task is a few lines::

    tasks:
      my_af:
        dataset: mydata           # a store of `ecgscale data prepare generic -o dataset=mydata`
        labels: labels            # the label set
        classes: [AF]             # optional subset (else top_k: K, or the whole set)
        kind: binary              # binary | multilabel | multiclass | regression

Attribute tasks use `target: <meta column>` instead of `labels` (`positive:` names the positive
value of a text column). A name with `{k}` (e.g. `mimic_top{k}`) is a family: `mimic_top9` sets
every `{k}` in the entry to 9; its `examples` list the members that `list_tasks` shows.

Loading follows the PTB-XL benchmark (Strodthoff et al. 2021): classes with fewer than
`min_positives` training records are dropped (and reported), and with `drop_unlabelled` records
without any remaining class are dropped. Splits are the store's folds (1-8 train, 9 validation,
10 test); `split: cv` marks tasks evaluated by ten-fold cross-validation over the same folds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ecgscale.data.splits import N_FOLDS, TEST_FOLD, VAL_FOLD
from ecgscale.data.store import Store, label_matrix
from ecgscale.errors import ConfigError, DataError

Kind = Literal["binary", "multilabel", "multiclass", "regression"]
ENV_VAR = "ECGSCALE_TASKS"
METRICS = frozenset({"auroc", "auprc", "f1", "brier", "ece", "accuracy", "mae", "r2", "challenge"})
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("auroc", "auprc", "f1", "brier"),
    "multilabel": ("auroc", "auprc", "f1", "brier"),
    "multiclass": ("accuracy", "auroc", "f1"),
    "regression": ("mae", "r2"),
}
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class TaskData:
    """A task's targets and splits over the records of one store that it uses.

    Attributes:
        name: task name.
        kind: binary, multilabel, multiclass or regression.
        classes: class names, aligned with the columns of `y` (multiclass: with its values).
        y: float32 `(records, classes)` for binary/multilabel, int64 `(records,)` class indices
            for multiclass, float32 `(records,)` for regression.
        rows: `(records,)` store row of each record (features of a store are `x[rows]`).
        folds: `(records,)` store fold 1-10 of each record.
        train, val, test: positions into `rows`/`y` of the split's records.
        dropped_classes: class -> reason, for classes of the label set left out.
        dropped_records: number of the store's records left out (filters, no label, no target).
        metrics: metric names to report.
        split: "folds" or "cv".
    """

    name: str
    kind: str
    classes: tuple[str, ...]
    y: np.ndarray
    rows: np.ndarray
    folds: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    dropped_classes: dict[str, str] = field(default_factory=dict)
    dropped_records: int = 0
    metrics: tuple[str, ...] = ()
    split: str = "folds"

    def __len__(self) -> int:
        return len(self.rows)

    def cv_split(self, test_fold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(train, val, test)` positions with fold `test_fold` as test and the fold before it
        (cyclically) as validation; `cv_split(10)` is the default split."""
        if not 1 <= test_fold <= N_FOLDS:
            raise ConfigError(f"test fold {test_fold}: expected 1-{N_FOLDS}")
        val_fold = (test_fold - 2) % N_FOLDS + 1
        test = np.flatnonzero(self.folds == test_fold)
        val = np.flatnonzero(self.folds == val_fold)
        train = np.flatnonzero((self.folds != test_fold) & (self.folds != val_fold))
        return train, val, test


class Task(BaseModel):
    """One task definition (a YAML entry).

    Attributes:
        name: the task's name.
        dataset: reader name, which is the `name` of the stores it applies to.
        kind: binary, multilabel, multiclass or regression.
        labels: label set to predict (`labels_<set>` lists of the store).
        classes: subset of the label set, in this order.
        top_k: the first k classes of the label set (label sets ordered by frequency).
        min_positives: classes with fewer positive training records are dropped.
        drop_unlabelled: drop records with no class of the (kept) subset.
        target: metadata column to predict instead of a label set (age, sex, outcomes).
        positive: value of a text `target` that is the positive class of a binary task.
        where: keep only records whose metadata column value is one of the listed values.
        split: "folds" (store folds: 1-8 train, 9 validation, 10 test) or "cv" (ten-fold).
        metrics: metric names; by default those of the kind.
        description: one line for listings.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dataset: str
    kind: Kind
    labels: str | None = None
    classes: tuple[str, ...] | None = None
    top_k: int | None = Field(None, gt=0)
    min_positives: int = Field(1, ge=0)
    drop_unlabelled: bool = False
    target: str | None = None
    positive: str | None = None
    where: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    split: Literal["folds", "cv"] = "folds"
    metrics: tuple[str, ...] = ()
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """Metrics default to those of the kind; a single `where` value may be a string."""
        if isinstance(data, dict):
            data = dict(data)
            if not data.get("metrics") and data.get("kind") in DEFAULT_METRICS:
                data["metrics"] = DEFAULT_METRICS[data["kind"]]
            where = data.get("where") or {}
            if isinstance(where, dict):
                data["where"] = {k: [v] if isinstance(v, str) else v for k, v in where.items()}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Task:
        if (self.labels is None) == (self.target is None):
            raise ValueError("give exactly one of labels (a label set) and target (a column)")
        if self.classes is not None and self.top_k is not None:
            raise ValueError("give at most one of classes and top_k")
        if self.target is not None and (self.classes or self.top_k or self.drop_unlabelled):
            raise ValueError("classes, top_k and drop_unlabelled apply to label-set tasks")
        if self.kind == "regression" and self.target is None:
            raise ValueError("a regression task needs a target column")
        if self.kind == "multilabel" and self.labels is None:
            raise ValueError("a multilabel task needs a label set")
        if self.kind == "binary" and self.labels is not None:
            if len(self.classes or ()) != 1 and self.top_k != 1:
                raise ValueError("a binary label-set task needs exactly one class")
        unknown = sorted(set(self.metrics) - METRICS)
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; expected some of {sorted(METRICS)}")
        return self

    def load(self, store: Store | str | Path) -> TaskData:
        """Targets and splits of this task over `store` (a `Store` or its directory)."""
        store = store if isinstance(store, Store) else Store(store)
        if store.manifest.get("name") != self.dataset:
            raise ConfigError(
                f"task {self.name} needs a {self.dataset!r} store; "
                f"{store.path} holds {store.manifest.get('name')!r}"
            )
        meta = store.meta
        keep = np.ones(len(meta), dtype=bool)
        for column, values in self.where.items():
            if column not in meta:
                raise DataError(f"task {self.name}: {store.path} has no column {column!r}")
            keep &= meta[column].astype(str).isin(values).to_numpy()
            if not keep.any():
                raise DataError(
                    f"task {self.name}: no records of {store.path} with {column} in {list(values)}"
                )
        train = meta["split"].to_numpy() == "train"
        if self.labels is not None:
            classes, y, dropped, keep = self._label_targets(store, keep, train)
        else:
            classes, y, keep = self._column_targets(meta, keep, train)
            dropped = {}
        rows = np.flatnonzero(keep)
        folds = meta["fold"].to_numpy()[rows].astype(np.int16)
        return TaskData(
            name=self.name,
            kind=self.kind,
            classes=tuple(classes),
            y=y[rows],
            rows=rows,
            folds=folds,
            train=np.flatnonzero((folds != VAL_FOLD) & (folds != TEST_FOLD)),
            val=np.flatnonzero(folds == VAL_FOLD),
            test=np.flatnonzero(folds == TEST_FOLD),
            dropped_classes=dropped,
            dropped_records=int(len(meta) - len(rows)),
            metrics=self.metrics,
            split=self.split,
        )

    def _label_targets(
        self, store: Store, keep: np.ndarray, train: np.ndarray
    ) -> tuple[list[str], np.ndarray, dict[str, str], np.ndarray]:
        """Classes, targets (all store rows), dropped classes and the updated record mask."""
        assert self.labels is not None
        if self.labels not in store.label_sets:
            raise DataError(
                f"task {self.name}: {store.path} has no label set {self.labels!r}; "
                f"available: {', '.join(store.label_sets) or 'none'}"
            )
        vocabulary = list(store.label_sets[self.labels])
        if self.classes is not None:
            unknown = [c for c in self.classes if c not in vocabulary]
            if unknown:
                raise ConfigError(f"task {self.name}: classes {unknown} not in {self.labels!r}")
            chosen = list(self.classes)
        elif self.top_k is not None:
            if self.top_k > len(vocabulary):
                raise ConfigError(
                    f"task {self.name}: top_k {self.top_k} but label set {self.labels!r} "
                    f"has {len(vocabulary)} classes"
                )
            chosen = vocabulary[: self.top_k]
        else:
            chosen = vocabulary
        matrix = label_matrix(store.meta, self.labels, chosen).astype(bool)
        positives = matrix[keep & train].sum(axis=0)
        enough = positives >= self.min_positives
        dropped = {
            c: f"{int(n)} positive training records (< {self.min_positives})"
            for c, n, ok in zip(chosen, positives, enough, strict=True)
            if not ok
        }
        if not enough.any():
            raise DataError(
                f"task {self.name}: no class has {self.min_positives} training positives"
            )
        classes = [c for c, ok in zip(chosen, enough, strict=True) if ok]
        matrix = matrix[:, enough]
        if self.kind == "multiclass":
            keep = keep & (matrix.sum(axis=1) == 1)
            return classes, matrix.argmax(axis=1).astype(np.int64), dropped, keep
        if self.drop_unlabelled:
            keep = keep & matrix.any(axis=1)
        return classes, matrix.astype(np.float32), dropped, keep

    def _column_targets(
        self, meta: pd.DataFrame, keep: np.ndarray, train: np.ndarray
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Classes, targets (all store rows) and the updated record mask of a column task."""
        assert self.target is not None
        if self.target not in meta:
            raise DataError(f"task {self.name}: the store has no column {self.target!r}")
        column = meta[self.target]
        present = column.notna().to_numpy()
        if self.kind == "regression":
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            keep = keep & np.isfinite(values)
            return [self.target], np.nan_to_num(values).astype(np.float32), keep
        if self.kind == "multiclass":
            classes = sorted(column[present & keep].astype(str).unique())
            codes = pd.Categorical(column.astype(str), categories=classes).codes
            keep = keep & present & (codes >= 0)
            return classes, codes.astype(np.int64), keep
        if self.positive is not None:
            y = (column.astype(str).str.strip() == self.positive).to_numpy()
            name = self.positive
        else:
            numeric = pd.to_numeric(column.map(_boolean), errors="coerce")
            present = present & numeric.isin([0, 1]).to_numpy()
            y = numeric.fillna(0).to_numpy() == 1
            name = self.target
        keep = keep & present
        if y[keep & train].sum() < max(self.min_positives, 1):
            raise DataError(f"task {self.name}: too few positive training records for {name!r}")
        return [name], y[:, None].astype(np.float32), keep


def _boolean(value: Any) -> Any:
    """True/False text as 1/0 (CSV outcomes); anything else unchanged."""
    text = str(value).strip().lower()
    return {"true": 1, "false": 0}.get(text, value)


# ------------------------------------------------------------------------------------------------
# Definitions


def _files(paths: Sequence[str | Path] | None) -> list[Path]:
    """The built-in file, then `ECGSCALE_TASKS` files, then `paths`."""
    builtin = Path(str(resources.files("ecgscale.tasks").joinpath("tasks.yaml")))
    extra = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    return [builtin, *extra, *(Path(p) for p in paths or ())]


def _read(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        raise ConfigError(f"{path}: task file not found")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc.__class__.__name__})") from None
    tasks = content.get("tasks") if isinstance(content, dict) else None
    if not isinstance(tasks, dict) or not all(isinstance(v, dict) for v in tasks.values()):
        raise ConfigError(f"{path}: expected a mapping 'tasks: {{name: {{dataset: ...}}}}'")
    return tasks


def definitions(paths: Sequence[str | Path] | None = None) -> dict[str, tuple[Path, dict]]:
    """Every task entry: name -> (file, raw entry); a name defined twice is a `ConfigError`."""
    out: dict[str, tuple[Path, dict]] = {}
    for path in _files(paths):
        for name, entry in _read(path).items():
            if name in out:
                raise ConfigError(f"task {name!r} defined in both {out[name][0]} and {path}")
            out[str(name)] = (path, entry)
    return out


def _build(name: str, path: Path, entry: dict, values: dict[str, str]) -> Task:
    """Validate one entry, filling `{placeholder}`s from `values`."""

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return _PLACEHOLDER.sub(lambda m: values[m.group(1)], value)
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    body = {k: fill(v) for k, v in entry.items() if k != "examples"}
    try:
        return Task(name=name, **body)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "entry"
        raise ConfigError(f"{path}: task {name}: {where}: {err['msg']}") from None


def _pattern(template: str) -> re.Pattern[str]:
    parts = _PLACEHOLDER.split(template)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>[0-9]+)" for i, part in enumerate(parts)
    )
    return re.compile(regex)


def get_task(name: str, paths: Sequence[str | Path] | None = None) -> Task:
    """The task `name` (a family member such as `mimic_top9` included)."""
    found = definitions(paths)
    if name in found and not _PLACEHOLDER.search(name):
        return _build(name, *found[name], {})
    for template, (path, entry) in found.items():
        match = _PLACEHOLDER.search(template) and _pattern(template).fullmatch(name)
        if match:
            return _build(name, path, entry, match.groupdict())
    raise ConfigError(f"unknown task {name!r}; see `ecgscale tasks list`")


def list_tasks(paths: Sequence[str | Path] | None = None) -> list[str]:
    """Names of all tasks, families expanded to their `examples`, in definition order."""
    names = []
    for template, (path, entry) in definitions(paths).items():
        params = _PLACEHOLDER.findall(template)
        if not params:
            names.append(template)
            continue
        examples = entry.get("examples") or {}
        if set(examples) != set(params):
            raise ConfigError(f"{path}: task family {template}: examples must give {params}")
        for combo in zip(*(examples[p] for p in params), strict=True):
            values = dict(zip(params, map(str, combo), strict=True))
            names.append(_PLACEHOLDER.sub(lambda m, v=values: v[m.group(1)], template))
    return names
