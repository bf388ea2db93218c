"""CODE, CODE-15% and CODE-test (Ribeiro et al. 2020) in their official release layouts.

CODE and CODE-15% (reader `code`; CODE-15% is the public 15 % of CODE, same layout)::

    SRC/exams.csv              one row per exam: exam_id, age, is_male, nn_predicted_age, 1dAVb,
                               RBBB, LBBB, SB, AF, ST, patient_id, normal_ecg, death, timey,
                               trace_file (booleans written True/False)
    SRC/exams_part0.hdf5 ...   datasets `tracings` float32 (N, 4096, 12) and `exam_id` int64 (N,),
    SRC/exams_partK.hdf5       row i of `tracings` being exam `exam_id[i]`

CODE-test (reader `code_test`)::

    SRC/ecg_tracings.hdf5                 dataset `tracings` float32 (827, 4096, 12), no exam ids
    SRC/annotations/gold_standard.csv     1dAVb,RBBB,LBBB,SB,AF,ST (0/1); row i is tracing i
    SRC/attributes.csv                    age,sex (M/F); row i is tracing i (optional)
    SRC/annotations/{cardiologist1,cardiologist2,cardiology_residents,emergency_residents,
                     medical_students,dnn}.csv   other annotators' labels (ignored)

Tracings: 400 Hz, leads I, II, III, aVR, aVL, aVF, V1-V6, 7 s exams zero-padded (centred) to 4096
samples; values are taken as mV, the unit of the official WFDB conversion of CODE-15% (PhysioNet
Challenge 2025). Label set `code`: the six abnormalities 1dAVb, RBBB, LBBB, SB, AF, ST.

Fields of exams.csv used: `exam_id` (record id), `patient_id` (patients), `age`, `is_male` (sex
M/F), the six labels, `nn_predicted_age`, `normal_ecg`, `trace_file` (kept as columns), and the
outcome (task `code15_death`):

* `death` -> column `death`: 1.0 if the patient died during follow-up, 0.0 if not, missing where
  exams.csv leaves it empty - the release gives it only on the first exam of each patient, so a
  later exam is unknown, never negative. A value other than True/False (or 1/0) is unknown too;
  the manifest's provenance counts each case (`outcomes.death`).
* `timey` -> column `timey`: years from the exam to death, or of follow-up when the patient did not
  die (also first exams only); missing elsewhere. `death` is all-cause death within each patient's
  own follow-up, which differs between patients (no fixed horizon).

HDF5 files are read `chunk` exams at a time, so memory does not grow with the number of exams (the
full CODE has 2.3 M). CODE joins `exams.csv` by `exam_id`; an exam id found on one side only is
skipped and reported; folds are seeded, patient-grouped (`patient_id`) and stratified on `code`.
CODE-test has one exam per patient and no patient ids. A tracings array whose shape disagrees with
its ids or CSV is a one-line error naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ecgscale.data.preprocess import STANDARD_LEADS
from ecgscale.data.readers import (
    Skip,
    Source,
    positive_option,
    register_reader,
    require_files,
)
from ecgscale.data.store import Record
from ecgscale.data.synth import CODE_LABELS
from ecgscale.errors import DataError

FS = 400.0
CHUNK = 128  # exams per HDF5 read: 128 x 4096 x 12 float32 = 25 MB
_PART = re.compile(r"exams_part(\d+)\.hdf5")
_EXTRA = ("nn_predicted_age", "normal_ecg")
_TRUE, _FALSE = {"true", "1", "1.0"}, {"false", "0", "0.0"}
CITATION = "Ribeiro et al. 2020, Nat Commun 11:1760"


def _flags(frame: pd.DataFrame, path: Path) -> np.ndarray:
    """bool (rows, 6) matrix of the CODE labels; booleans may be True/False or 0/1."""
    missing = [c for c in CODE_LABELS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing label columns {missing}; expected {list(CODE_LABELS)}")
    text = frame[list(CODE_LABELS)].astype(str).apply(lambda c: c.str.strip().str.lower())
    return text.isin(["true", "1", "1.0"]).to_numpy()


def death_outcome(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """`death` (1.0 / 0.0 / NaN unknown) and `timey` (years, NaN unknown) of every exams.csv row,
    and the counts of each case. Without a `death` column both are all unknown."""
    n = len(frame)
    if "death" not in frame.columns:
        return np.full(n, np.nan), np.full(n, np.nan), {"no death column in exams.csv": n}
    raw = frame["death"]
    text = raw.astype(str).str.strip().str.lower()
    death = np.where(text.isin(_TRUE), 1.0, np.where(text.isin(_FALSE), 0.0, np.nan))
    empty = raw.isna().to_numpy() | (text == "").to_numpy()
    timey = np.full(n, np.nan)
    if "timey" in frame.columns:
        timey = pd.to_numeric(frame["timey"], errors="coerce").to_numpy(dtype=np.float64)
    counts = {
        "died": int((death == 1).sum()),
        "survived": int((death == 0).sum()),
        "empty (not the patient's first exam)": int(empty.sum()),
        "unreadable (unknown)": int((np.isnan(death) & ~empty).sum()),
        "timey known": int(np.isfinite(timey).sum()),
    }
    return death, timey, counts


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: unreadable HDF5 file ({exc})") from None


def _tracings(path: Path, rows: int | None = None) -> tuple[h5py.File, h5py.Dataset]:
    """Open `path` and check its `tracings` dataset is (rows, samples, 12)."""
    handle = _open(path)
    if "tracings" not in handle:
        handle.close()
        raise DataError(f"{path}: no dataset 'tracings'")
    tracings = handle["tracings"]
    shape = tracings.shape
    if (
        len(shape) != 3
        or shape[2] != len(STANDARD_LEADS)
        or (rows is not None and shape[0] != rows)
    ):
        handle.close()
        expected = f"({rows if rows is not None else 'exams'}, samples, 12)"
        raise DataError(f"{path}: tracings have shape {shape}, expected {expected}")
    return handle, tracings


def iter_chunks(tracings: h5py.Dataset, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """`(first row, float32 (rows, 12, samples))` for successive slabs of `chunk` exams."""
    for start in range(0, tracings.shape[0], chunk):
        block = np.asarray(tracings[start : start + chunk], dtype=np.float32)
        yield start, block.transpose(0, 2, 1)


def _part_files(src: Path) -> list[Path]:
    parts = [p for p in src.iterdir() if _PART.fullmatch(p.name)]
    return sorted(parts, key=lambda p: int(_PART.fullmatch(p.name).group(1)))  # type: ignore[union-attr]


@register_reader("code")
def read_code(src: Path, *, chunk: int | str = CHUNK) -> Source:
    """Read CODE or CODE-15% at `src`, streaming `chunk` exams at a time from each part file."""
    src, chunk = Path(src), positive_option(chunk, "chunk", what="number of exams")
    require_files(src, "exams.csv")
    parts = _part_files(src)
    if not parts:
        raise DataError(f"{src}: expected exams_part0.hdf5 ... (official layout), none found")
    exams = pd.read_csv(src / "exams.csv", dtype={"trace_file": "category"})
    if not {"exam_id", "patient_id"} <= set(exams.columns):
        raise DataError(f"{src / 'exams.csv'}: expected columns exam_id and patient_id")
    labels = _flags(exams, src / "exams.csv")
    death, timey, death_counts = death_outcome(exams)
    duplicated = exams["exam_id"].duplicated(keep="first").to_numpy()
    position = pd.Series(np.flatnonzero(~duplicated), index=exams["exam_id"][~duplicated])
    ids_per_part = []
    for path in parts:
        with _open(path) as handle:
            if "exam_id" not in handle:
                raise DataError(f"{path}: no dataset 'exam_id'")
            ids = np.asarray(handle["exam_id"][:], dtype=np.int64)
        _tracings(path, rows=len(ids))[0].close()
        ids_per_part.append(ids)
    in_hdf5 = np.concatenate(ids_per_part)
    only_csv = exams.loc[~duplicated & ~exams["exam_id"].isin(in_hdf5).to_numpy(), "exam_id"]

    def records() -> Iterator[Record | Skip]:
        for rid in exams.loc[duplicated, "exam_id"]:
            yield Skip(str(rid), "duplicate exam_id in exams.csv (the first row is used)")
        for path, ids in zip(parts, ids_per_part, strict=True):
            handle, tracings = _tracings(path, rows=len(ids))
            with handle:
                for start, block in iter_chunks(tracings, chunk):
                    for i, signal in enumerate(block):
                        exam = int(ids[start + i])
                        k = position.get(exam)
                        if k is None:
                            yield Skip(str(exam), f"{path.name} row {start + i}: no exams.csv row")
                            continue
                        outcome = {"death": death[k], "timey": timey[k]}
                        yield _record(exams.iloc[k], labels[k], signal, path.name, outcome)
        for rid in only_csv:
            yield Skip(str(rid), "exams.csv row without a tracing in exams_part*.hdf5")

    return Source(
        name="code",
        count=len(in_hdf5) + len(only_csv) + int(duplicated.sum()),
        records=records(),
        label_sets={"code": list(CODE_LABELS)},
        provenance={
            "dataset": "CODE / CODE-15%",
            "src": str(src.resolve()),
            "files": [p.name for p in parts],
            "units": "tracings taken as mV",
            "citation": CITATION,
            "outcomes": {"death": death_counts},
        },
        stratify_on="code",
        patient_ids={"code": "source: patient_id of exams.csv (per exam where missing)"},
    )


def _record(
    row: pd.Series, flags: np.ndarray, signal: np.ndarray, part: str, outcome: dict[str, float]
) -> Record:
    exam = str(int(row["exam_id"]))
    patient = row["patient_id"]
    sex = row.get("is_male")
    meta = {
        "source": "code",
        "age": row.get("age"),
        "sex": None if pd.isna(sex) else ("M" if str(sex).lower() in ("true", "1") else "F"),
        "trace_file": part,
        **{c: row[c] for c in _EXTRA if c in row.index},
        **{k: None if np.isnan(v) else float(v) for k, v in outcome.items()},
        "labels_code": [c for c, on in zip(CODE_LABELS, flags, strict=True) if on],
    }
    patient_id = f"exam{exam}" if pd.isna(patient) else str(int(patient))
    return Record(signal, FS, STANDARD_LEADS, exam, patient_id, meta)


@register_reader("code_test")
def read_code_test(src: Path, *, chunk: int | str = CHUNK) -> Source:
    """Read the CODE-test set at `src` (827 exams annotated by cardiologists)."""
    src, chunk = Path(src), positive_option(chunk, "chunk", what="number of exams")
    gold_path = Path("annotations") / "gold_standard.csv"
    require_files(src, "ecg_tracings.hdf5", str(gold_path))
    gold = pd.read_csv(src / gold_path)
    labels = _flags(gold, src / gold_path)
    _tracings(src / "ecg_tracings.hdf5", rows=len(gold))[0].close()
    attributes = None
    if (src / "attributes.csv").is_file():
        attributes = pd.read_csv(src / "attributes.csv")
        if len(attributes) != len(gold):
            raise DataError(
                f"{src / 'attributes.csv'}: {len(attributes)} rows, gold standard {len(gold)}"
            )

    def records() -> Iterator[Record]:
        handle, tracings = _tracings(src / "ecg_tracings.hdf5", rows=len(gold))
        with handle:
            for start, block in iter_chunks(tracings, chunk):
                for i, signal in enumerate(block, start):
                    meta = {
                        "source": "code_test",
                        "labels_code": [
                            c for c, on in zip(CODE_LABELS, labels[i], strict=True) if on
                        ],
                    }
                    if attributes is not None:
                        meta["age"] = attributes["age"].iloc[i]
                        meta["sex"] = str(attributes["sex"].iloc[i]).strip().upper() or None
                    rid = f"{i:04d}"
                    yield Record(signal, FS, STANDARD_LEADS, rid, rid, meta)

    return Source(
        name="code_test",
        count=len(gold),
        records=records(),
        label_sets={"code": list(CODE_LABELS)},
        provenance={
            "dataset": "CODE-test (gold standard annotations)",
            "src": str(src.resolve()),
            "units": "tracings taken as mV",
            "citation": CITATION,
        },
        stratify_on="code",
        patient_ids={
            "code_test": "per record (one exam per patient, no patient id in the release)"
        },
    )
