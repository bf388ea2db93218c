"""PTB-XL reader on the real subsets: counts, label sets against scp_statements.csv, folds,
round trip."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from ecgscale.data.prepare import prepare
from ecgscale.data.preprocess import STANDARD_LEADS, PreprocessConfig
from ecgscale.data.store import Store

RAW = PreprocessConfig(fs=100.0, length=1000, highpass_hz=None)


@pytest.fixture(scope="module")
def store100(shared_data: Path, tmp_path_factory) -> Store:
    return prepare("ptbxl", shared_data / "ptbxl", tmp_path_factory.mktemp("s") / "p", RAW)


def _expected_counts(src: Path, set_name: str) -> pd.Series:
    """Label counts computed independently from the raw CSVs (Strodthoff et al. aggregation)."""
    db = pd.read_csv(src / "ptbxl_database.csv")
    st = pd.read_csv(src / "scp_statements.csv", index_col=0)
    column = {"superdiagnostic": "diagnostic_class", "subdiagnostic": "diagnostic_subclass"}
    flag = {"diagnostic": "diagnostic", "form": "form", "rhythm": "rhythm"}
    counts: dict[str, int] = {}
    for text in db["scp_codes"]:
        keys = [k for k in ast.literal_eval(text) if k in st.index]
        if set_name in column:
            labels = {st.loc[k, column[set_name]] for k in keys if st.loc[k, "diagnostic"] == 1}
        elif set_name in flag:
            labels = {k for k in keys if st.loc[k, flag[set_name]] == 1}
        else:
            labels = set(keys)
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
    return pd.Series(counts).sort_index()


def test_counts_folds_and_patients(store100: Store) -> None:
    meta = store100.meta
    assert len(store100) == 280 and store100.manifest["skipped"] == []
    assert meta["patient_id"].nunique() == 251
    assert meta["fold"].value_counts().sort_index().tolist() == [28] * 10
    assert (meta.loc[meta["fold"] == 10, "split"] == "test").all()
    assert (meta.loc[meta["fold"] == 9, "split"] == "val").all()
    assert set(meta["sex"]) == {"M", "F"}
    assert store100.manifest["provenance"]["folds"] == "official"
    assert store100.manifest["patient_ids"] == {
        "ptbxl": "source: patient_id of ptbxl_database.csv (per record where missing)"
    }


def test_superdiagnostic_counts_match_published_subset(store100: Store) -> None:
    counts = dict(zip(store100.label_sets["superdiagnostic"],
                      store100.labels("superdiagnostic").sum(0), strict=True))  # fmt: skip
    assert counts == {"CD": 67, "HYP": 32, "MI": 61, "NORM": 132, "STTC": 61}


@pytest.mark.parametrize(
    "set_name", ["all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm"]
)
def test_label_counts_against_scp_statements(store100: Store, shared_data: Path, set_name) -> None:
    expected = _expected_counts(shared_data / "ptbxl", set_name)
    got = pd.Series(store100.labels(set_name).sum(0), index=store100.label_sets[set_name])
    assert got[got > 0].sort_index().to_dict() == expected.to_dict()
    st = pd.read_csv(shared_data / "ptbxl" / "scp_statements.csv", index_col=0)
    assert set(store100.label_sets[set_name]) >= set(expected.index)
    if set_name == "all":
        assert len(store100.label_sets["all"]) == len(st) == 71


@pytest.mark.parametrize(("rate", "length"), [(100, 1000), (500, 5000)])
def test_round_trip_equals_wfdb(shared_data: Path, tmp_path: Path, rate: int, length: int) -> None:
    """raw record -> store -> batch equals wfdb's physical signal within the 1 uV int16 step."""
    config = PreprocessConfig(fs=float(rate), length=length, highpass_hz=None)
    store = prepare("ptbxl", shared_data / "ptbxl", tmp_path / "s", config, rate=rate)
    rows = np.array([0, 17, 279, 5])
    batch = store.batch(rows)
    column = "filename_lr" if rate == 100 else "filename_hr"
    for k, row in enumerate(rows):
        name = store.meta.iloc[row][column]
        rec = wfdb.rdrecord(str(shared_data / "ptbxl" / name))
        order = [rec.sig_name.index(lead.upper()) for lead in STANDARD_LEADS]
        raw = rec.p_signal[:, order].T
        np.testing.assert_allclose(batch[k], raw, atol=0.5e-3 + 1e-6)


def test_100hz_only_subset_uses_records100(ptbxl_100hz_store: Store) -> None:
    store = ptbxl_100hz_store
    assert len(store) == 1502 and store.manifest["skipped"] == []
    assert store.manifest["provenance"]["source_rate_hz"] == 100
    assert store.signals.shape == (1502, 12, 1000)
    counts = dict(zip(store.label_sets["superdiagnostic"],
                      store.labels("superdiagnostic").sum(0), strict=True))  # fmt: skip
    assert counts == {"CD": 334, "HYP": 177, "MI": 298, "NORM": 761, "STTC": 374}
    assert set(store.meta["fold"]) == set(range(1, 11))


def test_higher_target_rate_without_records500_upsamples_records100(
    shared_data: Path, tmp_path: Path
) -> None:
    src = tmp_path / "ptbxl"
    src.mkdir()
    db = pd.read_csv(shared_data / "ptbxl_100hz" / "ptbxl_database.csv")
    db.head(12).to_csv(src / "ptbxl_database.csv", index=False)
    (src / "scp_statements.csv").write_bytes(
        (shared_data / "ptbxl_100hz" / "scp_statements.csv").read_bytes()
    )
    (src / "records100").symlink_to(shared_data / "ptbxl_100hz" / "records100")
    store = prepare("ptbxl", src, tmp_path / "s", PreprocessConfig(fs=400.0, length=4096))
    assert store.manifest["provenance"]["source_rate_hz"] == 100
    assert store.signals.shape == (12, 12, 4096)
