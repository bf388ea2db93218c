"""MIMIC-IV-ECG (Gow et al. 2023, PhysioNet) in its official release layout.

Expected layout::

    SRC/record_list.csv            subject_id, study_id, file_name, ecg_time, path; one row per
                                   ECG, `path` = files/pNNNN/pXXXXXXXX/sYYYYYYYY/YYYYYYYY
    SRC/machine_measurements.csv   subject_id, study_id, cart_id, ecg_time, report_0 ... report_17
                                   (the machine's free-text statements), bandwidth, filtering,
                                   rr_interval, p_onset, p_end, qrs_onset, qrs_end, t_end,
                                   p_axis, qrs_axis, t_axis
    SRC/files/pNNNN/pXXXXXXXX/sYYYYYYYY/YYYYYYYY.{hea,dat}
                                   WFDB, 12 leads at 500 Hz, 10 s, raw lead order I, II, III,
                                   aVR, aVF, aVL, V1-V6 (mapped to the standard order by name)

Label set `statements`: the distinct report statements (whitespace collapsed, trailing full stops
dropped, lower case), ordered by the number of records that carry them (ties alphabetical); the
counts are in the manifest's provenance (`statement_counts`), so a top-k label set is the first k.
An ECG without a machine_measurements.csv row is skipped and reported.

`outcomes` (optional) is a user CSV keyed by `study_id` (else `subject_id`) whose other columns are
joined into the metadata (`sex` as M/F, `age` in years, any outcome column such as
`icu_admission`); records without a row get missing values. Patients are `subject_id`s; folds are
seeded and patient-grouped, not stratified (hundreds of statements).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from ecgscale.data.readers import Skip, Source, register_reader, require_files
from ecgscale.data.readers.wfdb_record import read_wfdb
from ecgscale.data.store import Record
from ecgscale.errors import DataError

REPORTS = tuple(f"report_{k}" for k in range(18))
_RESERVED = {"record_id", "patient_id", "source", "fold", "split", "ecg_time", "path"}
_SEX = {"m": "M", "male": "M", "f": "F", "female": "F"}


def normalise_statement(text: str) -> str:
    """Canonical form of one report statement ("" for an empty one)."""
    return " ".join(str(text).split()).rstrip(". ").lower()


def _statements(path: Path, studies: set[int]) -> dict[int, list[str]]:
    """study_id -> its distinct normalised statements, for the studies in `studies`."""
    out: dict[int, list[str]] = {}
    header = pd.read_csv(path, nrows=0).columns
    if "study_id" not in header:
        raise DataError(f"{path}: no study_id column; expected subject_id, study_id, report_0...")
    reports = [c for c in REPORTS if c in header]
    if not reports:
        raise DataError(f"{path}: no report_0 ... report_17 columns")
    for part in pd.read_csv(path, usecols=["study_id", *reports], dtype=str, chunksize=100_000):
        for row in part.itertuples(index=False):
            study = int(row[0])
            if study in studies:
                texts = (normalise_statement(t) for t in row[1:] if isinstance(t, str))
                out[study] = list(dict.fromkeys(t for t in texts if t))
    return out


def _outcomes(path: Path) -> tuple[str, pd.DataFrame]:
    """The join key and the outcome table indexed by it."""
    if not path.is_file():
        raise DataError(f"{path}: outcomes CSV not found")
    table = pd.read_csv(path)
    key = "study_id" if "study_id" in table.columns else "subject_id"
    if key not in table.columns:
        raise DataError(f"{path}: expected a study_id or subject_id column to join on")
    if table[key].duplicated().any():
        raise DataError(f"{path}: duplicate {key} values; expected one row per {key}")
    clash = sorted((_RESERVED | {c for c in table.columns if c.startswith("labels_")}) & set(table))
    if clash:
        raise DataError(f"{path}: columns {clash} clash with store columns; rename them")
    table = table.drop(columns=[c for c in ("study_id", "subject_id") if c in table and c != key])
    if "sex" in table:
        table["sex"] = table["sex"].map(lambda s: _SEX.get(str(s).strip().lower()))
    if "age" in table:
        table["age"] = pd.to_numeric(table["age"], errors="coerce")
    return key, table.set_index(key)


@register_reader("mimic_iv_ecg")
def read_mimic_iv_ecg(src: Path, *, outcomes: str | Path | None = None) -> Source:
    """Read MIMIC-IV-ECG at `src`, optionally joining the user CSV `outcomes`."""
    src = Path(src)
    require_files(src, "record_list.csv", "machine_measurements.csv")
    records_csv = pd.read_csv(src / "record_list.csv")
    needed = {"subject_id", "study_id", "path"}
    if needed - set(records_csv.columns):
        raise DataError(
            f"{src / 'record_list.csv'}: missing columns {sorted(needed - set(records_csv))}"
        )
    statements = _statements(src / "machine_measurements.csv", set(records_csv["study_id"]))
    counts = Counter(s for texts in statements.values() for s in texts)
    vocabulary = sorted(counts, key=lambda s: (-counts[s], s))
    outcomes_path = Path(outcomes) if outcomes is not None else None
    key, joined = ("", None) if outcomes_path is None else _outcomes(outcomes_path)

    def records() -> Iterator[Record | Skip]:
        for row in records_csv.itertuples(index=False):
            rid = str(row.study_id)
            if row.study_id not in statements:
                yield Skip(rid, "no row in machine_measurements.csv")
                continue
            meta = {
                "source": "mimic_iv_ecg",
                "ecg_time": getattr(row, "ecg_time", None),
                "labels_statements": statements[row.study_id],
            }
            if joined is not None:
                at = getattr(row, key)
                values = joined.loc[at] if at in joined.index else None
                meta.update({c: None if values is None else values[c] for c in joined.columns})
            try:
                yield read_wfdb(src / str(row.path), rid, str(row.subject_id), meta)
            except DataError as exc:
                yield Skip(rid, str(exc))

    provenance = {
        "dataset": "MIMIC-IV-ECG",
        "src": str(src.resolve()),
        "statement_counts": [counts[s] for s in vocabulary],
        "statements": "normalised machine report statements, most frequent first",
        "citation": "Gow et al. 2023, MIMIC-IV-ECG (PhysioNet), doi:10.13026/4nqg-sb35",
    }
    if outcomes_path is not None and joined is not None:
        provenance["outcomes"] = {
            "file": str(outcomes_path.resolve()),
            "key": key,
            "columns": list(joined.columns),
            "matched_records": int(records_csv[key].isin(joined.index).sum()),
        }
    return Source(
        name="mimic_iv_ecg",
        count=len(records_csv),
        records=records(),
        label_sets={"statements": vocabulary},
        provenance=provenance,
        patient_ids={"mimic_iv_ecg": "source: subject_id of record_list.csv"},
    )
