"""EchoNext reader on a release written in the official layout: mV recovered from the standardised
arrays, official splits kept as folds, the label set and its unknowns, patients, the no_split rows,
the two tasks, and bad input (missing files and columns, arrays of another size or scale)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgscale.cli.main import main
from ecgscale.data.prepare import prepare
from ecgscale.data.preprocess import STANDARD_LEADS, PreprocessConfig
from ecgscale.data.readers import list_readers
from ecgscale.data.readers.echonext import CLASSES, read_echonext
from ecgscale.data.store import Store
from ecgscale.errors import ConfigError, DataError
from ecgscale.tasks import get_task
from fixtures.echonext_layout import ECHONEXT_FLAGS, ECHONEXT_SIZES, NORMALISATION, write_echonext

# 250 Hz x 2500 without filtering: the contract leaves the ECGs unchanged (1 uV steps).
RAW = PreprocessConfig(fs=250.0, length=2500, highpass_hz=None)
QUANTUM = 5.1e-4  # mV: half an int16 step of the store, plus float error


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, pd.DataFrame, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("echonext")
    table, mv = write_echonext(root / "raw")
    return root, table, mv


@pytest.fixture(scope="module")
def store(release) -> Store:
    root, _, _ = release
    return prepare("echonext", root / "raw", root / "store", RAW, chunk=5)  # chunks straddle rows


def _link(release, dst: Path, *, skip: tuple[str, ...] = ()) -> Path:
    root = release[0] / "raw"
    dst.mkdir()
    for path in root.iterdir():
        if path.name not in skip:
            (dst / path.name).symlink_to(path)
    return dst


def test_registered() -> None:
    assert "echonext" in list_readers()


def test_values_splits_patients_and_labels(release, store: Store) -> None:
    _, table, mv = release
    official = table[table["split"] != "no_split"]
    assert len(store) == len(official) == 56
    meta = store.meta
    # Records in split-file order (train, val, test), each file in CSV order.
    expected_order = [
        str(k) for s in ("train", "val", "test") for k in table.loc[table["split"] == s, "ecg_key"]
    ]
    assert meta["record_id"].tolist() == expected_order
    rows = meta.set_index("record_id")
    truth = table.assign(ecg_key=table["ecg_key"].astype(str)).set_index("ecg_key")
    # Official splits are the store's splits; val is fold 9, test fold 10, train folds 1-8.
    assert (rows["split"] == truth.loc[rows.index, "split"]).all()
    assert (rows["echonext_split"] == rows["split"]).all()
    assert set(rows.loc[rows["split"] == "val", "fold"]) == {9}
    assert set(rows.loc[rows["split"] == "test", "fold"]) == {10}
    assert set(rows.loc[rows["split"] == "train", "fold"]) <= set(range(1, 9))
    assert meta.groupby("patient_id")["fold"].nunique().max() == 1
    assert (rows["patient_id"] == truth.loc[rows.index, "patient_key"].astype(str)).all()
    assert store.manifest["patient_ids"]["echonext"].startswith("source: patient_key")
    assert store.manifest["provenance"]["folds"].startswith("official splits")
    # Demographics and the extra columns.
    assert (rows["sex"] == truth.loc[rows.index, "sex"].map({"male": "M", "female": "F"})).all()
    np.testing.assert_array_equal(rows["age"], truth.loc[rows.index, "age_at_ecg"])
    np.testing.assert_array_equal(rows["qrs_duration"], truth.loc[rows.index, "qrs_duration"])
    assert (rows["location_setting"] == truth.loc[rows.index, "location_setting"]).all()
    assert "lvef_value" in store.manifest["provenance"]["ignored_columns"]
    # Label set: the 12 flags, positives listed, unknowns neither positive nor negative.
    assert store.label_sets == {"shd": list(CLASSES)}
    flags = truth.loc[rows.index, list(ECHONEXT_FLAGS)].to_numpy(dtype=float)
    np.testing.assert_array_equal(store.labels("shd"), np.nan_to_num(flags).astype(np.uint8))
    for j, column in enumerate(ECHONEXT_FLAGS):
        np.testing.assert_array_equal(rows[column].to_numpy(dtype=float), flags[:, j])
    complete = ~np.isnan(flags).any(axis=1)
    assert (rows["shd_labels_complete"] == np.where(complete, "yes", "no")).all()
    assert (~complete).sum() == 2
    unknown = store.manifest["provenance"]["label_unknown"]
    assert unknown["shd_moderate_or_greater_flag"] == unknown["pasp_gte_45_flag"] == 1
    # Values: mV, the clipped MUSE counts at 4.88 uV, in the standard lead order.
    assert store.manifest["leads"] == list(STANDARD_LEADS) and store.manifest["fs"] == 250.0
    assert store.manifest["provenance"]["units"].startswith("mV")
    for rid in (expected_order[0], expected_order[45], expected_order[-1]):
        row = int(np.flatnonzero(meta["record_id"] == rid)[0])
        np.testing.assert_allclose(store.batch([row])[0], mv[rid].T, atol=QUANTUM)
    # no_split rows: skipped with the reason, and counted.
    reasons = {s["record_id"]: s["reason"] for s in store.manifest["skipped"]}
    no_split = table.loc[table["split"] == "no_split", "ecg_key"].astype(str)
    assert set(reasons) == set(no_split)
    assert all("outside the official splits" in reasons[r] for r in no_split)
    assert store.manifest["provenance"]["splits"] == ECHONEXT_SIZES


def test_as_released_values_are_kept_with_units_z(release, tmp_path: Path) -> None:
    _, _, mv = release
    store = prepare("echonext", release[0] / "raw", tmp_path / "s", RAW, units="z")
    assert "NOT mV" in store.manifest["provenance"]["units"]
    rid = store.meta["record_id"].iloc[3]
    z = (mv[rid] * 1000 / 4.88 - np.array(NORMALISATION["mean"])) / np.array(NORMALISATION["std"])
    np.testing.assert_allclose(store.batch([3])[0], z.T, atol=QUANTUM)


def test_no_split_rows_can_join_training(release, tmp_path: Path) -> None:
    _, table, _ = release
    store = prepare("echonext", release[0] / "raw", tmp_path / "s", RAW, no_split="train")
    rows = store.meta.set_index("record_id")
    no_split = table[table["split"] == "no_split"]
    test_patients = set(table.loc[table["split"] == "test", "patient_key"])
    shared = no_split["patient_key"].isin(test_patients)
    assert shared.sum() == 1 and len(store) == 56 + len(no_split) - 1
    joined = no_split.loc[~shared, "ecg_key"].astype(str)
    assert (rows.loc[joined, "split"] == "train").all()
    assert (rows.loc[joined, "echonext_split"] == "no_split").all()
    (reason,) = [s["reason"] for s in store.manifest["skipped"]]
    assert reason == "split no_split: patient also in val or test"


def test_command_line_options(release, store: Store, tmp_path: Path, capsys) -> None:
    """`-o` options arrive as text; the command line writes the same store as the API."""
    out = tmp_path / "cli"
    args = ["data", "prepare", "echonext", "--src", str(release[0] / "raw"), "--out", str(out)]
    args += ["--fs", "250", "--length", "2500", "--highpass", "0"]
    with pytest.raises(SystemExit) as info:
        main([*args, "-o", "chunk=7", "-o", "uv_per_count=4.88", "-o", "units=mv"])
    assert info.value.code == 0, capsys.readouterr().err
    assert "skipped 6" in capsys.readouterr().out
    np.testing.assert_array_equal(Store(out).signals[:], store.signals[:])
    with pytest.raises(ConfigError, match="chunk '0'"):
        read_echonext(release[0] / "raw", chunk="0")


def test_tasks_composite_and_multilabel(store: Store) -> None:
    shd = get_task("echonext_shd").load(store)
    assert shd.kind == "binary" and shd.classes == ("shd_moderate_or_greater_flag",)
    assert len(shd) == 55 and shd.dropped_records == 1  # the unknown composite
    multi = get_task("echonext_multilabel").load(store)
    assert multi.kind == "multilabel" and len(multi) == 54  # both incomplete records dropped
    assert set(multi.classes) <= set(CLASSES)
    used = store.meta["record_id"].to_numpy()[shd.rows]
    composite = store.meta.set_index("record_id").loc[used, "shd_moderate_or_greater_flag"]
    np.testing.assert_array_equal(shd.y[:, 0], composite.to_numpy())
    assert len(shd.test) == 8 and len(shd.val) == 8


def test_bad_rows_are_skipped_and_counted(release, tmp_path: Path) -> None:
    """A split value outside the four, an empty patient_key, an unreadable flag and a NaN signal:
    each affects its own record only."""
    _, table, _ = release
    src = _link(release, tmp_path / "raw", skip=("echonext_metadata_100k.csv",))
    bad = table.astype({"split": object, "lvef_lte_45_flag": object}).copy()
    no_split_row = bad.index[bad["split"] == "no_split"][1]
    bad.loc[no_split_row, "split"] = "holdout"
    train_rows = bad.index[bad["split"] == "train"]
    bad.loc[train_rows[0], "patient_key"] = None
    bad.loc[train_rows[1], "lvef_lte_45_flag"] = "yes?"
    bad.astype({"patient_key": "Int64"}).to_csv(src / "echonext_metadata_100k.csv", index=False)
    waves = np.load(release[0] / "raw" / "EchoNext_val_waveforms.npy")
    waves[2, 0, 100, 3] = np.nan
    (src / "EchoNext_val_waveforms.npy").unlink()
    np.save(src / "EchoNext_val_waveforms.npy", waves)
    store = prepare("echonext", src, tmp_path / "s", RAW)
    reasons = {s["record_id"]: s["reason"] for s in store.manifest["skipped"]}
    holdout = str(bad.loc[no_split_row, "ecg_key"])
    nan_val = str(bad.loc[bad["split"] == "val", "ecg_key"].iloc[2])
    assert reasons[holdout] == "split 'holdout': expected train, val, test or no_split"
    assert reasons[nan_val] == "signal contains NaN or infinite values"
    assert len(store) == 55 and len(reasons) == 6 + 1  # 5 no_split + holdout + NaN signal
    rows = store.meta.set_index("record_id")
    orphan = str(bad.loc[train_rows[0], "ecg_key"])
    assert rows.loc[orphan, "patient_id"] == f"ecg:{orphan}"
    assert store.manifest["provenance"]["patients_missing"] == 1
    unreadable = str(bad.loc[train_rows[1], "ecg_key"])
    assert np.isnan(rows.loc[unreadable, "lvef_lte_45_flag"])
    assert rows.loc[unreadable, "shd_labels_complete"] == "no"
    assert store.manifest["provenance"]["label_unknown"]["lvef_lte_45_flag"] == 1


def test_missing_files_and_columns_are_one_line_errors(release, tmp_path: Path) -> None:
    root = release[0] / "raw"
    with pytest.raises(DataError, match=r"expected echonext_metadata_100k\.csv"):
        read_echonext(_link(release, tmp_path / "a", skip=("echonext_metadata_100k.csv",)))
    src = _link(release, tmp_path / "b", skip=("EchoNext_test_waveforms.npy",))
    with pytest.raises(
        DataError, match=r"expected EchoNext_test_waveforms\.npy for the 8 ECGs of split 'test'"
    ):
        read_echonext(src)
    src = _link(release, tmp_path / "c", skip=("EchoNext_no_split_waveforms.npy",))
    read_echonext(src)  # not needed unless no_split=train
    with pytest.raises(DataError, match=r"EchoNext_no_split_waveforms\.npy for the 6 ECGs"):
        read_echonext(src, no_split="train")
    table = pd.read_csv(root / "echonext_metadata_100k.csv")
    for column in ("patient_key", "tr_max_gte_32_flag"):
        src = _link(release, tmp_path / f"d_{column}", skip=("echonext_metadata_100k.csv",))
        table.drop(columns=column).to_csv(src / "echonext_metadata_100k.csv", index=False)
        with pytest.raises(DataError, match=rf"missing columns \['{column}'\]") as info:
            read_echonext(src)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="units 'uv'"):
        read_echonext(root, units="uv")
    with pytest.raises(ConfigError, match="no_split 'drop'"):
        read_echonext(root, no_split="drop")


def test_arrays_of_another_size_or_scale_are_one_line_errors(release, tmp_path: Path) -> None:
    root = release[0] / "raw"
    waves = np.load(root / "EchoNext_val_waveforms.npy")
    cases = {
        "rows": (waves[:-1], r"7 ECGs but the metadata CSV has 8 rows of this split"),
        "shape": (waves[:, :, :1000], r"shape \(8, 1, 1000, 12\), expected \(ECGs, 1, 2500, 12\)"),
    }
    for name, (array, message) in cases.items():
        src = _link(release, tmp_path / name, skip=("EchoNext_val_waveforms.npy",))
        np.save(src / "EchoNext_val_waveforms.npy", array)
        with pytest.raises(DataError, match=message):
            read_echonext(src)
    src = _link(release, tmp_path / "counts", skip=("EchoNext_train_waveforms.npy",))
    train = np.load(root / "EchoNext_train_waveforms.npy")
    np.save(src / "EchoNext_train_waveforms.npy", train * np.array(NORMALISATION["std"]))
    with pytest.raises(DataError, match=r"not standardised values \(pass -o units=z"):
        read_echonext(src)
    read_echonext(src, units="z")  # kept as they are when asked
    (src / "EchoNext_val_waveforms.npy").unlink()
    (src / "EchoNext_val_waveforms.npy").write_text("not an array")
    with pytest.raises(DataError, match=r"EchoNext_val_waveforms\.npy: not a readable \.npy"):
        read_echonext(src, units="z")
