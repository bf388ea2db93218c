"""MIMIC-IV-ECG reader on files written in the official layout: lead order mapped by name, report
statements ordered by frequency, the outcomes join, and the bad inputs."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from ecgscale.data.prepare import prepare
from ecgscale.data.preprocess import STANDARD_LEADS, PreprocessConfig
from ecgscale.errors import DataError
from fixtures.official_layouts import MIMIC_GAIN, MIMIC_LEADS, write_mimic

# wfdb's header parser calls a pandas API that warns; not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.drop:Warning")
RAW = PreprocessConfig(fs=500.0, length=5000, highpass_hz=None)
SMALL = PreprocessConfig(fs=100.0, length=500, highpass_hz=None)
# The fixture's spellings and the statement each one is (written out independently of the reader).
CANONICAL = {
    "Sinus rhythm": "sinus rhythm", "Sinus rhythm.": "sinus rhythm",
    "sinus  rhythm": "sinus rhythm", "Normal ECG": "normal ecg",
    "Borderline ECG": "borderline ecg", "Left axis deviation": "left axis deviation",
    "Atrial fibrillation": "atrial fibrillation",
}  # fmt: skip


@pytest.fixture(scope="module")
def mimic(tmp_path_factory):
    root = tmp_path_factory.mktemp("mimic")
    record_list, machine, signals = write_mimic(root / "raw")
    store = prepare("mimic_iv_ecg", root / "raw", root / "store", RAW)
    return root, record_list, machine, signals, store


def _expected_counts(machine: pd.DataFrame) -> Counter[str]:
    reports = machine[[f"report_{k}" for k in range(18)]]
    return Counter(
        s
        for row in reports.itertuples(index=False)
        for s in {CANONICAL[t] for t in row if isinstance(t, str)}
    )


def test_records_patients_and_statements(mimic) -> None:
    _, record_list, machine, _, store = mimic
    assert len(store) == len(record_list) > 20 and store.manifest["skipped"] == []
    assert store.meta["record_id"].tolist() == record_list["study_id"].astype(str).tolist()
    assert store.meta["patient_id"].tolist() == record_list["subject_id"].astype(str).tolist()
    assert store.meta.groupby("patient_id")["split"].nunique().max() == 1
    assert store.manifest["patient_ids"] == {
        "mimic_iv_ecg": "source: subject_id of record_list.csv"
    }
    counts = _expected_counts(machine)
    vocabulary = store.label_sets["statements"]
    assert vocabulary == sorted(counts, key=lambda s: (-counts[s], s)) and len(vocabulary) == 5
    assert store.manifest["provenance"]["statement_counts"] == [counts[s] for s in vocabulary]
    assert store.labels("statements").sum(0).tolist() == [counts[s] for s in vocabulary]


def test_leads_are_mapped_by_name_and_values_kept(mimic) -> None:
    _, record_list, _, signals, store = mimic
    order = [MIMIC_LEADS.index(lead) for lead in STANDARD_LEADS]
    assert order[4:6] == [5, 4]  # aVL and aVF are swapped in the raw files
    header = wfdb.rdheader(str(mimic[0] / "raw" / record_list["path"].iloc[3]))
    assert header.sig_name == list(MIMIC_LEADS) and header.fs == 500
    for i in (0, 3):
        raw = signals[int(record_list["study_id"].iloc[i])]
        np.testing.assert_allclose(store.batch([i])[0], raw[:, order].T, atol=5.1e-4)


def test_outcomes_join_by_study_and_by_subject(mimic) -> None:
    root, record_list, _, _, _ = mimic
    studies = record_list["study_id"].to_numpy()
    outcomes = pd.DataFrame(
        {
            "study_id": studies[1:],
            "sex": np.where(np.arange(len(studies) - 1) % 2, "F", "M"),
            "age": np.arange(len(studies) - 1) + 40,
            "icu_admission": np.arange(len(studies) - 1) % 3 == 0,
        }
    )
    outcomes.to_csv(root / "by_study.csv", index=False)
    store = prepare(
        "mimic_iv_ecg", root / "raw", root / "s1", SMALL, outcomes=root / "by_study.csv"
    )
    meta = store.meta.set_index("record_id")
    first = meta.loc[str(studies[0])]
    assert pd.isna(first["sex"]) and np.isnan(first["age"]) and pd.isna(first["icu_admission"])
    assert meta.loc[str(studies[1]), "sex"] == "M" and meta.loc[str(studies[2]), "age"] == 41
    info = store.manifest["provenance"]["outcomes"]
    assert info["key"] == "study_id" and info["matched_records"] == len(studies) - 1
    subjects = record_list.drop_duplicates("subject_id")
    by_subject = pd.DataFrame({"subject_id": subjects["subject_id"], "mortality": 1})
    by_subject.to_csv(root / "by_subject.csv", index=False)
    store = prepare(
        "mimic_iv_ecg", root / "raw", root / "s2", SMALL, outcomes=root / "by_subject.csv"
    )
    assert (store.meta["mortality"] == 1).all()


def test_bad_records_are_skipped(mimic, tmp_path: Path) -> None:
    root, record_list, machine, _, _ = mimic
    src = tmp_path / "raw"
    shutil.copytree(root / "raw", src)
    paths = record_list["path"]
    (src / f"{paths.iloc[0]}.dat").unlink()  # missing signal file
    # Samples stored as the WFDB missing value (-32768) read as NaN.
    rec = wfdb.rdrecord(str(src / paths.iloc[1]), physical=False)
    rec.d_signal[100:200, 2] = -32768
    wfdb.wrsamp(
        rec.record_name, fs=500, units=["mV"] * 12, sig_name=list(MIMIC_LEADS),
        d_signal=rec.d_signal, fmt=["16"] * 12, adc_gain=[MIMIC_GAIN] * 12, baseline=[0] * 12,
        write_dir=str((src / paths.iloc[1]).parent),
    )  # fmt: skip
    machine[machine["study_id"] != record_list["study_id"].iloc[2]].to_csv(
        src / "machine_measurements.csv", index=False
    )
    pd.concat([record_list, record_list.iloc[[5]]]).to_csv(src / "record_list.csv", index=False)
    store = prepare("mimic_iv_ecg", src, tmp_path / "store", SMALL)
    reasons = {s["record_id"]: s["reason"] for s in store.manifest["skipped"]}
    ids = record_list["study_id"].astype(str)
    assert "WFDB files not found" in reasons[ids.iloc[0]]
    assert reasons[ids.iloc[1]] == "signal contains NaN or infinite values"
    assert reasons[ids.iloc[2]] == "no row in machine_measurements.csv"
    assert reasons[ids.iloc[5]] == "duplicate record id"
    assert len(store) == len(record_list) - 3 and len(reasons) == 4


def test_bad_tables_are_one_line_errors(mimic, tmp_path: Path) -> None:
    root, record_list, _, _, _ = mimic
    table = pd.DataFrame({"study_id": record_list["study_id"].iloc[[0, 0]], "age": [1, 2]})
    table.to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(DataError, match="duplicate study_id values"):
        prepare("mimic_iv_ecg", root / "raw", tmp_path / "s", SMALL, outcomes=tmp_path / "dup.csv")
    table = pd.DataFrame({"subject_id": [1], "fold": [3]})
    table.to_csv(tmp_path / "clash.csv", index=False)
    with pytest.raises(DataError, match=r"columns \['fold'\] clash"):
        prepare(
            "mimic_iv_ecg", root / "raw", tmp_path / "s", SMALL, outcomes=tmp_path / "clash.csv"
        )
    src = tmp_path / "raw"
    src.mkdir()
    shutil.copy(root / "raw" / "machine_measurements.csv", src)
    record_list.drop(columns="path").to_csv(src / "record_list.csv", index=False)
    with pytest.raises(DataError, match=r"record_list\.csv: missing columns \['path'\]"):
        prepare("mimic_iv_ecg", src, tmp_path / "s", SMALL)
    assert not (tmp_path / "s").exists()
