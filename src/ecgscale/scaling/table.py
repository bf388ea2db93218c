"""The results table: the contract between the study runner (which exports it) and the fits.

One row per run x evaluation task, as CSV or Parquet, or read from a study's `results.sqlite`
(`load_results` exports it with `ecgscale.study.results.Results.table`). Required columns
(`COLUMNS`):

| column           | type  | meaning                                                          |
| ---------------- | ----- | ---------------------------------------------------------------- |
| run_id           | str   | stable id of the run (hash of its resolved configuration)        |
| family           | str   | model family (registry name), e.g. resnet, beat_transformer      |
| objective        | str   | pre-training objective, e.g. supervised, cmsc, masked_beats      |
| n_params         | float | N: encoder parameters (heads excluded), > 0                      |
| n_samples        | float | D: distinct pre-training records, > 0                            |
| flops_per_record | float | training FLOPs (forward + backward) of one record, one pass, > 0 |
| train_flops      | float | total pre-training FLOPs (all steps, forward + backward), > 0    |
| task             | str   | evaluation task (tasks registry name)                            |
| id_loss          | float | in-distribution test loss on the task, > 0                       |
| ood_loss         | float | out-of-distribution test loss, > 0; empty/NaN when there is none |

Optional columns with a meaning the fits know: `n_labels` (number of pre-training labels the run
used, for label scaling; > 0) and `label_group` (the task's label frequency class, e.g. frequent or
tail). Any other column is kept and may be used for grouping (`ecgscale fit --by`).

Run-level columns (n_params, n_samples, flops_per_record, train_flops, family, objective) must be
the same on every row of a run, and (run_id, task) must be unique. The compute model of
`compute_optimal` uses train_flops / n_samples (training FLOPs per distinct record, so epochs and
objective overheads count), not flops_per_record. `ecgscale.study.results.Results.table()`
exports this schema (plus extra columns such as size, data_fraction, seed).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ecgscale.errors import DataError


@dataclass(frozen=True)
class Column:
    """One column of the results table: name, kind ("str" or "float"), whether it may be missing
    (NaN) on a row, and what it means."""

    name: str
    kind: str
    nullable: bool
    description: str


COLUMNS: tuple[Column, ...] = (
    Column("run_id", "str", False, "stable id of the run (hash of its resolved configuration)"),
    Column("family", "str", False, "model family (registry name)"),
    Column("objective", "str", False, "pre-training objective"),
    Column("n_params", "float", False, "N: encoder parameters (heads excluded)"),
    Column("n_samples", "float", False, "D: distinct pre-training records"),
    Column("flops_per_record", "float", False, "training FLOPs of one record, one pass"),
    Column("train_flops", "float", False, "total pre-training FLOPs (forward + backward)"),
    Column("task", "str", False, "evaluation task"),
    Column("id_loss", "float", False, "in-distribution test loss"),
    Column("ood_loss", "float", True, "out-of-distribution test loss (NaN: no OOD set)"),
)
OPTIONAL_COLUMNS: tuple[Column, ...] = (
    Column("n_labels", "float", True, "number of pre-training labels (label scaling)"),
    Column("label_group", "str", True, "label frequency class of the task: frequent or tail"),
)
RUN_LEVEL = ("family", "objective", "n_params", "n_samples", "flops_per_record", "train_flops")


SQLITE_SUFFIXES = (".sqlite", ".db")
_SQLITE_MAGIC = b"SQLite format 3\x00"


def load_results(path: str | Path) -> pd.DataFrame:
    """Read and validate a results table (.csv, .parquet or .pq) or a study's results database
    (.sqlite, .db or any SQLite file); errors are one-line DataErrors."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        what = "study results database" if suffix in SQLITE_SUFFIXES else "results table"
        raise DataError(f"{what} {path}: no such file")
    with open(path, "rb") as fh:
        sqlite = fh.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    if sqlite or suffix in SQLITE_SUFFIXES:
        return validate_results(_study_table(path), source=str(path))
    try:
        if suffix == ".csv":
            df = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            raise DataError(
                f"results table {path}: expected a .csv, .parquet or .sqlite (study results) file"
            )
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"results table {path}: cannot be read ({exc})") from exc
    return validate_results(df, source=str(path))


def _study_table(path: Path) -> pd.DataFrame:
    """The finished runs of a study's results database (`Results.table`), checked read-only
    first so that another SQLite file is neither modified nor mistaken for one."""
    from ecgscale.study.results import Results

    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    except sqlite3.DatabaseError as exc:
        raise DataError(f"study results database {path}: not an SQLite database ({exc})") from None
    if not {"runs", "metrics"} <= {name for (name,) in rows}:
        raise DataError(
            f"study results database {path}: no runs and metrics tables; expected the "
            "results.sqlite of `ecgscale study run`"
        )
    try:
        table = Results(path).table()
    except (sqlite3.DatabaseError, KeyError) as exc:
        raise DataError(f"study results database {path}: cannot be read ({exc})") from None
    if table.empty:
        raise DataError(f"study results database {path}: no finished runs yet")
    return table


def validate_results(df: pd.DataFrame, source: str = "results table") -> pd.DataFrame:
    """Check `df` against the schema and return a copy with normalised dtypes (str, float64)."""
    missing = [c.name for c in COLUMNS if c.name not in df.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)}; "
            f"available: {', '.join(map(str, df.columns)) or 'none'}"
        )
    if df.empty:
        raise DataError(f"{source}: no rows")
    out = df.copy()
    present = [c for c in (*COLUMNS, *OPTIONAL_COLUMNS) if c.name in out.columns]
    for col in present:
        if col.kind == "str":
            bad = out[col.name].isna()
            if bad.any() and not col.nullable:
                raise DataError(f"{source}: column {col.name} is empty on row {_first(bad)}")
            out[col.name] = out[col.name].where(bad, out[col.name].astype(str))
            continue
        values = pd.to_numeric(out[col.name], errors="coerce").astype(np.float64)
        unparsable = values.isna() & out[col.name].notna()
        if unparsable.any():
            row = _first(unparsable)
            raise DataError(
                f"{source}: column {col.name} row {row}: expected a number, "
                f"got {out[col.name].iloc[row]!r}"
            )
        if values.isna().any() and not col.nullable:
            raise DataError(f"{source}: column {col.name} is empty on row {_first(values.isna())}")
        bad = values.notna() & ~(np.isfinite(values) & (values > 0))
        if bad.any():
            raise DataError(
                f"{source}: column {col.name} row {_first(bad)}: expected a finite value > 0, "
                f"got {values.iloc[_first(bad)]}"
            )
        out[col.name] = values
    duplicated = out.duplicated(["run_id", "task"])
    if duplicated.any():
        row = _first(duplicated)
        raise DataError(
            f"{source}: run {out['run_id'].iloc[row]!r} has task {out['task'].iloc[row]!r} twice"
        )
    varying = out.groupby("run_id")[list(RUN_LEVEL)].nunique(dropna=False).max()
    inconsistent = [name for name in RUN_LEVEL if varying[name] > 1]
    if inconsistent:
        raise DataError(
            f"{source}: column(s) {', '.join(inconsistent)} differ between rows of one run; "
            "expected one value per run_id"
        )
    return out.reset_index(drop=True)


def missing_by_task(table: pd.DataFrame, column: str) -> dict[str, int]:
    """Rows of a validated results table without a value (NaN) in `column`, counted per task
    (sorted by task; empty when every row has one)."""
    missing = table.loc[table[column].isna(), "task"]
    return {str(task): int(n) for task, n in missing.value_counts().sort_index().items()}


def _first(mask: pd.Series) -> int:
    """Position of the first True in `mask` (a row number of the table, 0-based)."""
    return int(np.flatnonzero(mask.to_numpy())[0])
