"""PhysioNet/CinC 2021 reader on the 134 real sample records and the official scoring tables:
counts per source, label counts against MANIFEST.csv and weights.csv, the header quirks, raw values,
bad headers and signal files, and the packaged tables (used without --scoring) labelling alike."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.signal
import wfdb

from ecgscale.cli.main import main
from ecgscale.data.prepare import prepare
from ecgscale.data.preprocess import STANDARD_LEADS, PreprocessConfig
from ecgscale.data.readers import PER_RECORD
from ecgscale.data.readers.physionet2021 import read_physionet2021, source_of
from ecgscale.data.store import Store
from ecgscale.design.evaluate import challenge_tables_of
from ecgscale.errors import DataError
from ecgscale.evaluate.challenge2021 import load_challenge_tables, packaged_scoring_folder
from ecgscale.evaluate.tasks import challenge_tables

# 500 Hz, 10 s, no filter: the 500 Hz records of 10 s pass through unchanged (1 uV quantisation).
RAW500 = PreprocessConfig(fs=500.0, length=5000, highpass_hz=None)
SMALL = PreprocessConfig(fs=100.0, length=500, highpass_hz=None)
FOLDER_SOURCE = {
    "cpsc_2018": "cpsc", "cpsc_2018_extra": "cpsc_extra", "ptb": "ptb", "ptb-xl": "ptbxl",
    "georgia": "georgia", "chapman_shaoxing": "chapman_shaoxing", "ningbo": "ningbo",
}  # fmt: skip
SCORING_FILES = (
    "dx_mapping_scored.csv", "dx_mapping_unscored.csv", "weights.csv", "weights_abbreviations.csv",
)  # fmt: skip


@pytest.fixture(scope="module")
def manifest(shared_data: Path) -> list[dict[str, str]]:
    with open(shared_data / "cinc2021" / "MANIFEST.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def scoring(shared_data: Path) -> Path:
    return shared_data / "physionet2021_scoring"


@pytest.fixture(scope="module")
def store(shared_data: Path, scoring: Path, tmp_path_factory) -> Store:
    out = tmp_path_factory.mktemp("cinc") / "physionet2021"
    return prepare("physionet2021", shared_data / "cinc2021", out, RAW500, scoring=scoring)


def _weights_classes(scoring: Path) -> list[list[str]]:
    """Scored classes read independently from the header of weights.csv."""
    with open(scoring / "weights.csv", newline="") as fh:
        header = next(csv.reader(fh))[1:]
    return [name.split("|") for name in header]


def test_counts_sources_and_rates(store: Store, manifest: list[dict[str, str]]) -> None:
    assert len(store) == 134 and store.manifest["skipped"] == []
    expected = Counter(FOLDER_SOURCE[row["source_dir"]] for row in manifest)
    assert store.meta["source"].value_counts().to_dict() == dict(expected)
    assert store.manifest["fs"] == 500.0 and store.manifest["leads"] == list(STANDARD_LEADS)
    by_id = {row["record"]: row for row in manifest}
    meta = store.meta.set_index("record_id")
    for rid, row in by_id.items():
        age = meta.loc[rid, "age"]
        assert np.isnan(age) if row["age"] == "NaN" else age == float(row["age"])
        assert meta.loc[rid, "sex"] == {"Male": "M", "Female": "F"}[row["sex"]]
    assert store.meta["patient_id"].equals(store.meta["record_id"])
    assert store.manifest["patient_ids"] == dict.fromkeys(
        sorted(FOLDER_SOURCE.values()), PER_RECORD
    )


def test_source_from_folder_and_from_prefix_agree(shared_data: Path, manifest) -> None:
    for row in manifest:
        path = shared_data / "cinc2021" / row["relpath"]
        by_folder = source_of(path.with_suffix(".hea"))
        by_prefix = source_of(Path(row["record"] + ".hea"))  # no database folder: the name only
        assert by_folder == by_prefix == FOLDER_SOURCE[row["source_dir"]], row["record"]
    assert source_of(Path("JS10646.hea")) == "chapman_shaoxing"
    assert source_of(Path("JS10647.hea")) == "ningbo"


def test_snomed_and_scored_label_counts(store: Store, manifest, scoring: Path) -> None:
    dx = {row["record"]: row["dx"].split(";") for row in manifest}
    snomed = Counter(code for codes in dx.values() for code in set(codes))
    counts = store.labels("snomed").sum(0).tolist()
    got = dict(zip(store.label_sets["snomed"], counts, strict=True))
    assert got == dict(snomed) and len(got) == 53
    classes = _weights_classes(scoring)
    assert len(classes) == 26 and store.label_sets["scored"] == ["|".join(c) for c in classes]
    expected = [sum(any(code in c for code in codes) for codes in dx.values()) for c in classes]
    assert store.labels("scored").sum(0).tolist() == expected
    # Equivalent codes: A0001 carries only 59118001 (RBBB), scored as CRBBB|RBBB.
    a0001 = store.meta.set_index("record_id").loc["A0001", "labels_scored"]
    assert list(a0001) == ["713427006|59118001"]
    assert "CRBBB|RBBB" in store.manifest["provenance"]["scored_abbreviations"]


def test_unknown_code_is_kept_and_reported(store: Store) -> None:
    provenance = store.manifest["provenance"]
    assert provenance["unknown_codes"] == {"251238007": ["JS20006"]}
    assert provenance["snomed_abbreviations"]["251238007"] is None
    assert provenance["snomed_abbreviations"]["164889003"] == "AF"
    row = store.meta.set_index("record_id").loc["JS20006"]
    assert "251238007" in list(row["labels_snomed"])


def test_values_match_the_raw_files(store: Store, shared_data: Path) -> None:
    root = shared_data / "cinc2021" / "training"
    meta = store.meta.reset_index(drop=True)
    # A standard header, read independently by wfdb.
    rec = wfdb.rdrecord(str(root / "cpsc_2018" / "g1" / "A0002"))
    row = int(np.flatnonzero(meta["record_id"] == "A0002")[0])
    assert rec.sig_name == list(STANDARD_LEADS) and rec.p_signal.shape == (5000, 12)
    np.testing.assert_allclose(store.batch([row])[0], rec.p_signal.T, atol=5.1e-4)
    # A Georgia header with the old first line `E07500.mat 12 500 5000 ...`.
    header = (root / "georgia" / "g8" / "E07500.hea").read_text().splitlines()[0]
    assert header.startswith("E07500.mat ")
    val = scipy.io.loadmat(root / "georgia" / "g8" / "E07500.mat")["val"]
    row = int(np.flatnonzero(meta["record_id"] == "E07500")[0])
    np.testing.assert_allclose(store.batch([row])[0], val / 1000.0, atol=5.1e-4)
    # PTB at 1000 Hz: resampled by the contract, then centre-cropped to 10 s.
    val = scipy.io.loadmat(root / "ptb" / "g1" / "S0001.mat")["val"] / 1000.0
    down = scipy.signal.resample_poly(val, 1, 2, axis=-1)
    start = (down.shape[1] - 5000) // 2
    row = int(np.flatnonzero(meta["record_id"] == "S0001")[0])
    np.testing.assert_allclose(store.batch([row])[0], down[:, start : start + 5000], atol=1e-3)


def _bad_tree(shared: Path, tmp: Path) -> Path:
    """Links to the 134 real records plus one broken record per bad input."""
    src = tmp / "training"
    good = sorted((shared / "cinc2021" / "training").rglob("*.hea"))
    for hea in good:
        folder = src / hea.parent.relative_to(shared / "cinc2021" / "training")
        folder.mkdir(parents=True, exist_ok=True)
        for ext in (".hea", ".mat"):
            (folder / (hea.stem + ext)).symlink_to(hea.with_suffix(ext))
    base = shared / "cinc2021" / "training" / "cpsc_2018" / "g1"
    text = (base / "A0003.hea").read_text()
    bad = src / "cpsc_2018" / "g9"
    bad.mkdir(parents=True)

    def clone(name: str, header: str, mat: dict | None = None) -> None:
        (bad / f"{name}.hea").write_text(header.replace("A0003", name), errors="surrogateescape")
        if mat is None:
            shutil.copy(base / "A0003.mat", bad / f"{name}.mat")
        else:
            scipy.io.savemat(bad / f"{name}.mat", mat, format="4")

    clone("A9001", "\n".join(line for line in text.splitlines() if not line.startswith("#Dx")))
    clone("A9002", text.replace("A0003 12 500 5000", "A0003 12 fast 5000"))
    clone("A9003", text.replace("#Age: 81", "#Age: old"))
    clone("A9004", text.replace("1000/mV", "1000/mmHg"))
    clone("A9005", text, mat={"data": np.zeros((12, 5000), dtype=np.int16)})
    clone("A9006", text, mat={"val": np.zeros((12, 4000), dtype=np.int16)})
    (bad / "A9007.hea").write_text(text.replace("A0003", "A9007"))  # no .mat
    clone("A9008", text.replace("Female", "F\udce9minin"))  # Latin-1 sex: kept, sex unknown
    clone("A9009", text.replace("A0003 12 500 5000", "A0003 12 50000 5000"))  # 0.1 s at 50 kHz
    clone("A9010", text.replace("#Age: 81", "#Age: 8\udcb1"))  # undecodable age: kept, unknown
    # The same record name in two database folders.
    dup = src / "georgia" / "g9"
    dup.mkdir(parents=True)
    for ext in (".hea", ".mat"):
        (dup / f"A0003{ext}").symlink_to((base / "A0003").with_suffix(ext))
    return src


def test_bad_inputs_are_skipped_with_reasons(shared_data: Path, scoring: Path, tmp_path) -> None:
    src = _bad_tree(shared_data, tmp_path)
    store = prepare("physionet2021", src, tmp_path / "s", SMALL, scoring=scoring)
    reasons = {s["record_id"]: s["reason"] for s in store.manifest["skipped"]}
    assert len(store) == 136 and len(reasons) == 9  # 8 bad records and 1 duplicate
    assert "no #Dx line" in reasons["A9001"]
    assert "record line" in reasons["A9002"]
    assert "#Age 'old'" in reasons["A9003"]
    assert "unit 'mmHg'" in reasons["A9004"]
    assert "no variable 'val'" in reasons["A9005"]
    assert "shape (12, 4000), header says (12, 5000)" in reasons["A9006"]
    assert "signal file not found" in reasons["A9007"]
    assert "sampling rate 50000 Hz is implausible" in reasons["A9009"]
    meta = store.meta.set_index("record_id")
    assert pd.isna(meta.loc["A9008", "sex"]) and meta.loc["A9008", "age"] == 81
    assert meta.loc["A9010", "sex"] == "F" and np.isnan(meta.loc["A9010", "age"])
    assert reasons["A0003"] == "duplicate record id"
    assert all("\n" not in reason for reason in reasons.values())


def test_ptbxl_records_get_ptbxl_patient_ids(shared_data, scoring, tmp_path, capsys) -> None:
    """HR<n> is PTB-XL ecg_id n: with ptbxl_database.csv its patient ids are used, so records of
    one patient share a split; records without a row stay their own patient."""
    db = pd.read_csv(shared_data / "ptbxl" / "ptbxl_database.csv")
    db.loc[db["ecg_id"] == 2, "patient_id"] = db.loc[db["ecg_id"] == 1, "patient_id"].item()
    db.to_csv(tmp_path / "ptbxl_database.csv", index=False)
    out = tmp_path / "s"
    args = ["data", "prepare", "physionet2021", "--src", str(shared_data / "cinc2021")]
    args += ["--scoring", str(scoring), "--out", str(out), "--fs", "100", "--length", "500"]
    with pytest.raises(SystemExit) as info:
        main([*args, "-o", f"ptbxl_database={tmp_path / 'ptbxl_database.csv'}"])
    assert info.value.code == 0, capsys.readouterr().err
    store = Store(out)
    meta = store.meta.set_index("record_id")
    hr = meta[meta["source"] == "ptbxl"]
    in_db = hr.index.isin([f"HR{e:05d}" for e in db["ecg_id"]])
    assert len(hr) == 20 and in_db.sum() == 9 and len(store) == 134
    assert meta.loc["HR00001", "patient_id"] == meta.loc["HR00002", "patient_id"] == "ptbxl:15709"
    assert meta.loc["HR00001", "split"] == meta.loc["HR00002", "split"]
    assert meta.loc["HR00010", "patient_id"] == "ptbxl:9456"
    assert (hr.loc[~in_db, "patient_id"] == hr.index[~in_db]).all()
    others = meta[meta["source"] != "ptbxl"]
    assert (others["patient_id"] == others.index).all()
    assert store.manifest["patient_ids"]["ptbxl"] == (
        "source: patient_id of ptbxl_database.csv (HR<n> = ecg_id n); "
        "per record for 11 records without a row"
    )
    assert store.manifest["patient_ids"]["georgia"] == PER_RECORD


def test_packaged_tables_are_the_official_ones(scoring: Path) -> None:
    packaged = packaged_scoring_folder()
    for name in SCORING_FILES:
        assert (packaged / name).read_bytes() == (scoring / name).read_bytes(), name
    assert "evaluation-2021" in (packaged / "SOURCES.md").read_text()


def test_without_scoring_the_packaged_tables_label_alike(
    shared_data: Path, scoring: Path, store: Store, tmp_path: Path, capsys
) -> None:
    """No --scoring: the packaged tables label every record as the shared official copy does, the
    manifest says so, and the Challenge metric reads the same tables back from the store."""
    out = tmp_path / "packaged"
    args = ["data", "prepare", "physionet2021", "--src", str(shared_data / "cinc2021")]
    args += ["--out", str(out), "--fs", "500", "--length", "5000", "--highpass", "0"]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 0, capsys.readouterr().err
    packaged = Store(out)
    given, default = store.manifest["provenance"], packaged.manifest["provenance"]
    assert default["scoring"] == "packaged" and given["scoring"] == str(scoring.resolve())
    assert default["scoring_files"] == given["scoring_files"]
    assert packaged.label_sets == store.label_sets
    for column in ("record_id", "fold"):
        assert packaged.meta[column].tolist() == store.meta[column].tolist(), column
    for column in ("labels_scored", "labels_snomed"):
        assert [list(v) for v in packaged.meta[column]] == [list(v) for v in store.meta[column]]
    np.testing.assert_array_equal(packaged.labels("scored"), store.labels("scored"))
    assert default["snomed_abbreviations"] == given["snomed_abbreviations"]
    np.testing.assert_array_equal(packaged.signals[:], store.signals[:])
    official = load_challenge_tables(scoring)
    for tables in (challenge_tables(packaged), challenge_tables_of(packaged, "scored")):
        assert tables.folder == packaged_scoring_folder()
        assert tables.names == official.names and tables.classes == official.classes
        np.testing.assert_array_equal(tables.weights, official.weights)
    # A store that records no scoring folder (e.g. written before) scores with the packaged tables;
    # --scoring still overrides what a store records.
    unrecorded = SimpleNamespace(manifest={"name": "physionet2021", "provenance": {}}, path=out)
    assert challenge_tables(unrecorded).folder == packaged_scoring_folder()  # type: ignore[arg-type]
    assert challenge_tables_of(unrecorded, "scored").folder == packaged_scoring_folder()  # type: ignore[arg-type]
    assert challenge_tables(packaged, scoring).folder == scoring


def test_unusable_inputs_are_one_line_errors(shared_data: Path, scoring: Path, tmp_path) -> None:
    empty = tmp_path / "empty_scoring"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty_scoring: no weights\.csv; expected the official"):
        read_physionet2021(shared_data / "cinc2021", scoring=empty)
    with pytest.raises(DataError, match=r"no \.hea headers"):
        read_physionet2021(tmp_path, scoring=scoring)
    broken = tmp_path / "scoring"
    broken.mkdir()
    shutil.copy(scoring / "dx_mapping_scored.csv", broken)
    (broken / "weights.csv").write_text(",1,2\n1,1.0\n")
    with pytest.raises(DataError, match=r"weights\.csv"):
        read_physionet2021(shared_data / "cinc2021", scoring=broken)
    with pytest.raises(DataError, match=r"dx_mapping_scored\.csv: expected PTB-XL's ptbxl_data"):
        read_physionet2021(
            shared_data / "cinc2021",
            scoring=scoring,
            ptbxl_database=scoring / "dx_mapping_scored.csv",
        )
