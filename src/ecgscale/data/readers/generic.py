"""Any folder of WFDB records plus a CSV of labels: the reader for private data.

Expected layout (column names configurable)::

    SRC/**/<record>.hea + data files   WFDB records, any rate, lead names in the headers
    SRC/labels.csv                     one row per record:
        record    the record's path relative to SRC, without extension (e.g. `site1/0001`)
        patient   patient identifier (the unit of every split)
        age, sex  optional (sex M/F or male/female)
        fold      optional official folds 1-10 (kept when every row has one)
        <labels>  label columns, each either 0/1 (the column name is the class) or text holding
                  class names separated by `sep` (e.g. "AF;LBBB")

All label columns form one label set, `labels`; by default every column that is not one of the
above is a label column. A CSV row whose record is missing, a header without a row, or a duplicate
row is skipped and reported. Without official folds, folds are seeded, patient-grouped and
stratified on `labels`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ecgscale.data.readers import Skip, Source, register_reader
from ecgscale.data.readers.wfdb_record import read_wfdb
from ecgscale.data.store import Record
from ecgscale.errors import DataError

_SEX = {"m": "M", "male": "M", "f": "F", "female": "F"}


def _columns(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None or isinstance(value, list | tuple):
        return None if value is None else list(value)
    return [c.strip() for c in str(value).split(",") if c.strip()]


def _label_lists(table: pd.DataFrame, columns: list[str], sep: str) -> list[list[str]]:
    """Class names of each row: 0/1 columns give their name, text columns their split values."""
    out: list[list[str]] = [[] for _ in range(len(table))]
    for column in columns:
        values = table[column]
        numeric = pd.to_numeric(values, errors="coerce")
        if values.notna().any() and numeric[values.notna()].isin([0, 1]).all():
            for i in np.flatnonzero(numeric.to_numpy() == 1):
                out[i].append(column)
        else:
            for i, text in enumerate(values):
                if isinstance(text, str):
                    out[i].extend(s.strip() for s in text.split(sep) if s.strip())
    return [list(dict.fromkeys(labels)) for labels in out]


@register_reader("generic")
def read_generic(
    src: Path,
    *,
    labels: str | Path | None = None,
    record_col: str = "record",
    patient_col: str = "patient",
    label_cols: str | Sequence[str] | None = None,
    sep: str = ";",
    age_col: str = "age",
    sex_col: str = "sex",
    fold_col: str = "fold",
    dataset: str = "generic",
) -> Source:
    """Read the WFDB records under `src` with the labels CSV `labels` (default SRC/labels.csv).

    `label_cols` (a list or comma-separated names) selects the label columns; `dataset` names
    the dataset (the store's name, which tasks refer to).
    """
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: no such dataset folder")
    csv = Path(labels) if labels is not None else src / "labels.csv"
    if not csv.is_file():
        raise DataError(f"{csv}: labels CSV not found; pass labels=PATH")
    table = pd.read_csv(csv, dtype={record_col: str, patient_col: str})
    for column in (record_col, patient_col):
        if column not in table.columns:
            raise DataError(f"{csv}: no column {column!r}; columns are {list(table.columns)}")
    meta_columns = {record_col, patient_col, age_col, sex_col, fold_col}
    chosen = _columns(label_cols)
    columns = chosen if chosen is not None else [c for c in table if c not in meta_columns]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{csv}: label columns {missing} not found")
    lists = _label_lists(table, columns, sep)
    folds = None
    if fold_col in table and table[fold_col].notna().all():
        folds = pd.to_numeric(table[fold_col], errors="coerce")
        if not folds.isin(range(1, 11)).all():
            raise DataError(f"{csv}: column {fold_col!r} must hold folds 1-10")
    table[record_col] = table[record_col].str.strip().str.removesuffix(".hea")
    duplicated = table[record_col].duplicated(keep="first").to_numpy()
    listed = set(table[record_col])
    unlisted = sorted(
        rid
        for rid in (p.relative_to(src).with_suffix("").as_posix() for p in src.rglob("*.hea"))
        if rid not in listed
    )

    def records() -> Iterator[Record | Skip]:
        for i, values in enumerate(table.to_dict("records")):
            rid = values[record_col]
            if duplicated[i]:
                yield Skip(rid, f"duplicate row in {csv.name} (the first one is used)")
                continue
            meta = {
                "source": dataset,
                "age": values.get(age_col),
                "sex": _SEX.get(str(values.get(sex_col, "")).strip().lower()),
                "labels_labels": lists[i],
            }
            if folds is not None:
                meta["fold"] = int(folds.iloc[i])
            try:
                yield read_wfdb(src / rid, rid, str(values[patient_col]), meta)
            except DataError as exc:
                yield Skip(rid, f"{csv.name} row refers to an unreadable record: {exc}")
        for rid in unlisted:
            yield Skip(rid, f"WFDB record without a row in {csv.name}")

    return Source(
        name=dataset,
        count=len(table) + len(unlisted),
        records=records(),
        label_sets={"labels": sorted({c for labels in lists for c in labels})},
        provenance={
            "dataset": dataset,
            "src": str(src.resolve()),
            "labels_csv": str(csv.resolve()),
            "label_columns": columns,
        },
        stratify_on="labels",
        patient_ids={dataset: f"source: column {patient_col!r} of {csv.name}"},
    )
