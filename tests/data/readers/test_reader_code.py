"""CODE / CODE-15% and CODE-test readers on files written in the official layouts: values, labels,
patients, bounded memory over several part files, the death outcome with its unknowns, and the bad
inputs (ids on one side only, duplicates, shapes that disagree)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from ecgscale.data.prepare import prepare
from ecgscale.data.preprocess import PreprocessConfig
from ecgscale.data.store import Store
from ecgscale.errors import DataError
from ecgscale.tasks import get_task
from fixtures.official_layouts import CODE_LABELS, write_code15, write_code_test

# 400 Hz x 4096 without filtering: the contract leaves CODE tracings unchanged (1 uV steps).
RAW = PreprocessConfig(fs=400.0, length=4096, highpass_hz=None)
QUANTUM = 5.1e-4  # mV: half an int16 step of the store, plus float error


@pytest.fixture(scope="module")
def code15(tmp_path_factory) -> tuple[Path, pd.DataFrame, dict[int, np.ndarray]]:
    root = tmp_path_factory.mktemp("code15")
    exams, tracings = write_code15(root / "raw", part_sizes=(20, 20, 20))
    return root, exams, tracings


def test_code15_three_parts(code15) -> None:
    root, exams, tracings = code15
    store = prepare("code", root / "raw", root / "store", RAW, chunk=7)  # chunks straddle rows
    assert len(store) == 60 and store.manifest["skipped"] == []
    meta = store.meta
    assert meta["record_id"].tolist() == [str(e) for e in exams["exam_id"]]  # file order
    assert store.label_sets == {"code": list(CODE_LABELS)}
    truth = exams[list(CODE_LABELS)].to_numpy().astype(np.uint8)
    np.testing.assert_array_equal(store.labels("code"), truth)
    assert (meta["sex"] == np.where(exams["is_male"], "M", "F")).all()
    np.testing.assert_array_equal(meta["age"], exams["age"].astype(np.float32))
    assert (meta["patient_id"] == exams["patient_id"].astype(str)).all()
    assert meta["trace_file"].tolist() == exams["trace_file"].tolist()
    assert meta.groupby("patient_id")["split"].nunique().max() == 1
    assert store.manifest["provenance"]["folds"].startswith("seeded patient-grouped")
    assert store.manifest["patient_ids"]["code"].startswith("source: patient_id of exams.csv")
    # Value by value: one 10 s exam and one zero-padded 7 s exam, in the last part file.
    for exam in exams["exam_id"].iloc[[41, 59]]:
        raw = tracings[int(exam)]
        row = int(np.flatnonzero(meta["record_id"] == str(exam))[0])
        np.testing.assert_allclose(store.batch([row])[0], raw.T, atol=QUANTUM)
    padded = [e for e, x in tracings.items() if not x[:648].any()]
    assert padded, "the fixture has zero-padded 7 s exams"
    row = int(np.flatnonzero(meta["record_id"] == str(padded[0]))[0])
    assert not store.signals[row, :, :648].any() and store.signals[row, :, 648:3448].any()


def _peak_mib(src: Path, out: Path, chunk: int) -> float:
    tracemalloc.start()
    try:
        prepare("code", src, out, RAW, chunk=chunk)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_code15_streams_with_bounded_memory(tmp_path: Path) -> None:
    """Three part files of 32 exams (18 MiB of tracings): with 4 exams per read the traced peak
    stays far below the data; with whole-file reads it grows by about the extra chunk size."""
    write_code15(tmp_path / "raw", part_sizes=(32, 32, 32), seed=3)
    data_mib = 96 * 4096 * 12 * 4 / 2**20
    small = _peak_mib(tmp_path / "raw", tmp_path / "s4", chunk=4)
    whole = _peak_mib(tmp_path / "raw", tmp_path / "s32", chunk=32)
    chunk_gap_mib = (32 - 4) * 4096 * 12 * 4 / 2**20
    assert small < data_mib / 2, (small, data_mib)
    assert whole - small > 0.6 * chunk_gap_mib, (small, whole)
    assert len(Store(tmp_path / "s4")) == 96


def _rewrite_part(path: Path, ids: np.ndarray, tracings: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("tracings", data=tracings, dtype="<f4")
        f.create_dataset("exam_id", data=ids, dtype="<i8")


def test_code15_ids_on_one_side_and_duplicates(code15, tmp_path: Path) -> None:
    root, exams, tracings = code15
    src = tmp_path / "raw"
    src.mkdir()
    for k in range(3):
        (src / f"exams_part{k}.hdf5").symlink_to(root / "raw" / f"exams_part{k}.hdf5")
    ids = exams["exam_id"].to_numpy()
    # Part 3 repeats an exam of part 0; exams.csv loses 2 exams, gains 2 without tracings and a
    # duplicated row.
    _rewrite_part(src / "exams_part3.hdf5", ids[3:4], np.stack([tracings[int(ids[3])]]))
    ghosts = exams.iloc[:2].assign(exam_id=[1, 2])
    table = pd.concat([exams.iloc[2:], ghosts, exams.iloc[[5]]])
    table.to_csv(src / "exams.csv", index=False)
    store = prepare("code", src, tmp_path / "store", RAW)
    reasons = {s["record_id"]: s["reason"] for s in store.manifest["skipped"]}
    assert len(store) == 58
    assert reasons[str(ids[1])] == "exams_part0.hdf5 row 1: no exams.csv row"
    assert reasons["1"] == reasons["2"] == "exams.csv row without a tracing in exams_part*.hdf5"
    assert "duplicate exam_id in exams.csv" in reasons[str(ids[5])]
    assert reasons[str(ids[0])] == "exams_part0.hdf5 row 0: no exams.csv row"
    assert reasons[str(ids[3])] == "duplicate record id"  # part 3 repeats it
    assert len(store.manifest["skipped"]) == 6


def test_code15_shapes_that_disagree_are_one_line_errors(code15, tmp_path: Path) -> None:
    root, exams, _ = code15
    src = tmp_path / "raw"
    src.mkdir()
    (src / "exams.csv").symlink_to(root / "raw" / "exams.csv")
    (src / "exams_part0.hdf5").symlink_to(root / "raw" / "exams_part0.hdf5")
    bad = src / "exams_part1.hdf5"
    _rewrite_part(bad, exams["exam_id"].to_numpy()[20:25], np.zeros((4, 4096, 12)))
    with pytest.raises(DataError, match=r"exams_part1\.hdf5: tracings have shape \(4, 4096, 12\)"):
        prepare("code", src, tmp_path / "s", RAW)
    _rewrite_part(bad, exams["exam_id"].to_numpy()[20:24], np.zeros((4, 4096, 8)))
    with pytest.raises(DataError, match=r"exams_part1\.hdf5: .*expected \(4, samples, 12\)"):
        prepare("code", src, tmp_path / "s", RAW)
    for part in src.glob("exams_part*"):
        part.unlink()
    with pytest.raises(DataError, match=r"expected exams_part0\.hdf5"):
        prepare("code", src, tmp_path / "s", RAW)
    assert not (tmp_path / "s").exists()


def test_code_test_layout(tmp_path: Path) -> None:
    gold, attributes, tracings = write_code_test(tmp_path / "raw", n=30)
    store = prepare("code_test", tmp_path / "raw", tmp_path / "store", RAW, chunk=8)
    assert len(store) == 30 and store.manifest["skipped"] == []
    assert store.manifest["patient_ids"]["code_test"].startswith("per record")
    np.testing.assert_array_equal(store.labels("code"), gold.to_numpy())  # not dnn.csv
    assert (store.meta["sex"] == attributes["sex"]).all()
    np.testing.assert_array_equal(store.meta["age"], attributes["age"].astype(np.float32))
    np.testing.assert_allclose(store.batch([17])[0], tracings[17].T, atol=QUANTUM)
    assert store.meta["record_id"].tolist() == [f"{i:04d}" for i in range(30)]


def test_code_test_rows_that_disagree_are_one_line_errors(tmp_path: Path) -> None:
    gold, attributes, _ = write_code_test(tmp_path / "raw", n=30)
    gold.iloc[:29].to_csv(tmp_path / "raw" / "annotations" / "gold_standard.csv", index=False)
    with pytest.raises(
        DataError, match=r"ecg_tracings\.hdf5: tracings have shape \(30, 4096, 12\)"
    ):
        prepare("code_test", tmp_path / "raw", tmp_path / "s", RAW)
    gold.to_csv(tmp_path / "raw" / "annotations" / "gold_standard.csv", index=False)
    attributes.iloc[:10].to_csv(tmp_path / "raw" / "attributes.csv", index=False)
    with pytest.raises(DataError, match=r"attributes\.csv: 10 rows, gold standard 30"):
        prepare("code_test", tmp_path / "raw", tmp_path / "s", RAW)


def test_code15_death_is_an_outcome_with_unknowns(code15, tmp_path: Path) -> None:
    """`death` True/False -> 1/0, empty (later exams of a patient) or unreadable -> unknown: the
    task `code15_death` drops those records instead of counting them as survivors."""
    root, exams, _ = code15
    src = tmp_path / "raw"
    src.mkdir()
    for k in range(3):
        (src / f"exams_part{k}.hdf5").symlink_to(root / "raw" / f"exams_part{k}.hdf5")
    table = exams.astype({"death": object}).copy()
    table["death"] = [True] * 10 + [False] * 25 + [None] * 24 + ["maybe"]
    table.to_csv(src / "exams.csv", index=False)
    store = prepare("code", src, tmp_path / "store", RAW)
    meta = store.meta.set_index("record_id")
    ids = exams["exam_id"].astype(str)
    expected = pd.Series([1.0] * 10 + [0.0] * 25 + [np.nan] * 25, index=ids)
    np.testing.assert_array_equal(meta.loc[ids, "death"].to_numpy(dtype=float), expected)
    np.testing.assert_allclose(meta.loc[ids, "timey"], exams["timey"], equal_nan=True)
    assert store.manifest["provenance"]["outcomes"]["death"] == {
        "died": 10, "survived": 25, "empty (not the patient's first exam)": 24,
        "unreadable (unknown)": 1, "timey known": int(exams["timey"].notna().sum()),
    }  # fmt: skip
    data = get_task("code15_death").load(store)
    assert data.kind == "binary" and data.classes == ("death",)
    assert len(data) == 35 and data.dropped_records == 25
    used = store.meta["record_id"].to_numpy()[data.rows]
    np.testing.assert_array_equal(data.y[:, 0], expected.loc[used].to_numpy())
