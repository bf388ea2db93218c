"""CPSC 2018 (China Physiological Signal Challenge; Liu et al. 2018) in its original release layout.

Expected layout::

    SRC/REFERENCE.csv    Recording,First_label,Second_label,Third_label (CRLF line endings); labels
                         are class numbers 1-9, the second and third ones often empty
    SRC/**/A0001.mat     MATLAB 5 file with one struct `ECG`: `sex` ('Male'/'Female'), `age`
                         (number), `data` (12 x N double, mV, 500 Hz, leads I, II, III, aVR, aVL,
                         aVF, V1-V6); the release splits them over TrainingSet1-3 folders

Label set `dx`: the nine classes of the CPSC 2018 specification, 1 Normal, 2 AF, 3 I-AVB, 4 LBBB,
5 RBBB, 6 PAC, 7 PVC, 8 STD, 9 STE (multi-label: every label of a record counts); `first_label`
keeps the first one. A `.mat` without a REFERENCE.csv row, a row without a `.mat`, a duplicate row
or a label outside 1-9 is skipped and reported. There are no patient ids (each record is its own
patient, manifest `patient_ids`); folds are seeded and stratified on `dx`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from ecgscale.data.preprocess import STANDARD_LEADS
from ecgscale.data.readers import PER_RECORD, Skip, Source, register_reader, require_files
from ecgscale.data.store import Record
from ecgscale.errors import DataError

# The class numbers of the CPSC 2018 specification (http://2018.icbeb.org/Challenge.html).
CLASSES: tuple[str, ...] = ("Normal", "AF", "I-AVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE")
FS = 500.0
_LABEL_COLUMNS = ("First_label", "Second_label", "Third_label")


def _labels(row: pd.Series) -> list[str]:
    """Class names of one REFERENCE.csv row; a value outside 1-9 is a `DataError`."""
    names = []
    for column in _LABEL_COLUMNS:
        value = row.get(column)
        if value is None or pd.isna(value) or str(value).strip() == "":
            continue
        try:
            number = float(value)
        except ValueError:
            number = np.nan
        if not (number.is_integer() and 1 <= number <= len(CLASSES)):
            raise DataError(f"REFERENCE.csv {column} {value!r}; expected a class number 1-9")
        names.append(CLASSES[int(number) - 1])
    if not names:
        raise DataError("REFERENCE.csv row has no label")
    return names


def read_ecg_struct(path: Path) -> tuple[np.ndarray, float | None, str | None]:
    """`data` float32 (12, N) mV, age and sex ("M"/"F") of one original `.mat` file."""
    try:
        content = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # scipy raises several types for corrupt files
        raise DataError(f"{path}: unreadable MAT file ({type(exc).__name__}: {exc})") from None
    ecg = content.get("ECG")
    if ecg is None or not hasattr(ecg, "data"):
        raise DataError(f"{path}: no struct 'ECG' with a field 'data'")
    data = np.asarray(ecg.data, dtype=np.float32)
    if data.ndim != 2 or data.shape[0] != len(STANDARD_LEADS):
        raise DataError(f"{path}: ECG.data has shape {data.shape}, expected (12, samples)")
    age = float(ecg.age) if np.size(getattr(ecg, "age", [])) == 1 else None
    sex = str(getattr(ecg, "sex", "")).strip().lower()
    return data, age, {"male": "M", "female": "F"}.get(sex)


@register_reader("cpsc2018")
def read_cpsc2018(src: Path) -> Source:
    """Read the original CPSC 2018 release at `src`."""
    src = Path(src)
    require_files(src, "REFERENCE.csv")
    reference = pd.read_csv(src / "REFERENCE.csv", dtype=str)
    if "Recording" not in reference.columns or "First_label" not in reference.columns:
        raise DataError(
            f"{src / 'REFERENCE.csv'}: columns {list(reference.columns)}; expected "
            "Recording,First_label,Second_label,Third_label"
        )
    reference["Recording"] = reference["Recording"].str.strip()
    duplicated = reference["Recording"].duplicated(keep="first")
    files = {p.stem: p for p in sorted(src.rglob("*.mat"))}
    if not files:
        raise DataError(f"{src}: no .mat files found (expected A0001.mat ...)")
    rows = reference[~duplicated].set_index("Recording")
    names = sorted(set(files) | set(rows.index))

    def records() -> Iterator[Record | Skip]:
        for rid in reference.loc[duplicated, "Recording"]:
            yield Skip(rid, "duplicate row in REFERENCE.csv (the first one is used)")
        for rid in names:
            if rid not in files:
                yield Skip(rid, "REFERENCE.csv row refers to a record without a .mat file")
                continue
            if rid not in rows.index:
                yield Skip(rid, f"{files[rid]}: no row in REFERENCE.csv")
                continue
            try:
                labels = _labels(rows.loc[rid])
                data, age, sex = read_ecg_struct(files[rid])
            except DataError as exc:
                yield Skip(rid, str(exc))
                continue
            meta = {
                "source": "cpsc2018",
                "age": age,
                "sex": sex,
                "first_label": labels[0],
                "labels_dx": sorted(set(labels), key=CLASSES.index),
            }
            yield Record(data, FS, STANDARD_LEADS, rid, rid, meta)

    return Source(
        name="cpsc2018",
        count=len(names) + int(duplicated.sum()),
        records=records(),
        label_sets={"dx": list(CLASSES)},
        provenance={
            "dataset": "CPSC 2018 (original release)",
            "src": str(src.resolve()),
            "citation": "Liu et al. 2018, J Med Imaging Health Inform 8(7):1368-1373",
        },
        stratify_on="dx",
        patient_ids={"cpsc2018": PER_RECORD},
    )
