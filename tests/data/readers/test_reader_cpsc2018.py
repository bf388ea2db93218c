"""CPSC 2018 reader on the 10 real original-format records: labels against REFERENCE.csv, signals
against the raw MATLAB structs, and the bad inputs (missing rows, unknown records, bad labels,
broken .mat files)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from ecgscale.data.prepare import prepare
from ecgscale.data.preprocess import STANDARD_LEADS, PreprocessConfig
from ecgscale.data.readers import PER_RECORD, Skip
from ecgscale.data.readers.cpsc2018 import CLASSES, read_cpsc2018
from ecgscale.errors import DataError


def _split(source) -> tuple[dict, dict[str, str]]:
    records, skips = {}, {}
    for item in source.records:
        if isinstance(item, Skip):
            skips[item.record_id] = item.reason
        else:
            records[item.record_id] = item
    return records, skips


def test_real_sample(shared_data: Path) -> None:
    src = shared_data / "cpsc2018"
    source = read_cpsc2018(src)
    records, skips = _split(source)
    assert source.count == 10 and len(records) == 10 and skips == {}
    with open(src / "REFERENCE.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["Recording"] for r in rows] == sorted(records)
    for row in rows:
        record = records[row["Recording"]]
        expected = [CLASSES[int(row["First_label"]) - 1]]
        assert record.meta["labels_dx"] == expected == [record.meta["first_label"]]
    counts = {c: sum(c in r.meta["labels_dx"] for r in records.values()) for c in CLASSES}
    assert counts == {
        "Normal": 1, "AF": 0, "I-AVB": 3, "LBBB": 0, "RBBB": 2, "PAC": 1, "PVC": 0, "STD": 3,
        "STE": 0,
    }  # fmt: skip
    assert source.label_sets == {"dx": list(CLASSES)}
    for rid in ("A1980", "A1988"):
        raw = scipy.io.loadmat(src / f"{rid}.mat")["ECG"][0, 0]
        record = records[rid]
        assert record.fs == 500.0 and list(record.leads) == list(STANDARD_LEADS)
        np.testing.assert_array_equal(record.signal, raw["data"].astype(np.float32))
        assert record.meta["age"] == float(raw["age"][0, 0])
        assert record.meta["sex"] == {"Male": "M", "Female": "F"}[str(raw["sex"][0])]
    assert records["A1988"].signal.shape == (12, 27157)


def _bad_copy(shared: Path, tmp: Path) -> Path:
    src = tmp / "cpsc"
    (src / "TrainingSet1").mkdir(parents=True)
    for mat in sorted((shared / "cpsc2018").glob("*.mat")):
        (src / "TrainingSet1" / mat.name).symlink_to(mat)
    ecg = scipy.io.loadmat(shared / "cpsc2018" / "A1980.mat")["ECG"]
    scipy.io.savemat(src / "A1990.mat", {"ECG": ecg})  # a record without a REFERENCE row
    scipy.io.savemat(src / "A1991.mat", {"X": np.zeros((12, 10))})  # no ECG struct
    scipy.io.savemat(src / "A1992.mat", {"ECG": {"sex": "Male", "age": 50, "data": np.ones(9)}})
    reference = (shared / "cpsc2018" / "REFERENCE.csv").read_bytes()  # CRLF kept
    assert b"A1984,8,,\r\n" in reference
    extra = b"A1991,1,,\r\nA1992,2,,\r\nA1985,8,,\r\nA9999,2,,\r\nA1984,12,,\r\n"
    (src / "REFERENCE.csv").write_bytes(reference.replace(b"A1984,8,,\r\n", b"") + extra)
    return src


def test_bad_inputs_are_skipped_with_reasons(shared_data: Path, tmp_path: Path) -> None:
    source = read_cpsc2018(_bad_copy(shared_data, tmp_path))
    records, skips = _split(source)
    assert sorted(records) == [f"A19{k}" for k in (80, 81, 82, 83, 85, 86, 87, 88, 89)]
    assert "no row in REFERENCE.csv" in skips["A1990"]
    assert "no struct 'ECG'" in skips["A1991"]
    assert "ECG.data has shape (9,)" in skips["A1992"]
    assert skips["A9999"] == "REFERENCE.csv row refers to a record without a .mat file"
    assert "expected a class number 1-9" in skips["A1984"]
    assert "duplicate row" in skips["A1985"]
    assert source.count == len(records) + len(skips) == 15


def test_missing_reference_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"expected REFERENCE\.csv"):
        read_cpsc2018(tmp_path)
    (tmp_path / "REFERENCE.csv").write_text("Recording,Label\r\nA0001,1\r\n")
    with pytest.raises(DataError, match="expected Recording,First_label"):
        read_cpsc2018(tmp_path)


def test_prepare_real_sample(shared_data: Path, tmp_path: Path) -> None:
    config = PreprocessConfig(fs=100.0, length=1000, highpass_hz=None)
    store = prepare("cpsc2018", shared_data / "cpsc2018", tmp_path / "cpsc2018", config)
    assert len(store) == 10
    assert store.manifest["patient_ids"] == {"cpsc2018": PER_RECORD}
