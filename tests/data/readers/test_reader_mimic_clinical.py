"""MIMIC-IV-ECG joined to the MIMIC-IV hosp/icu tables (`-o mimic_iv=DIR`): the cohort against
hand-written truth (inside an admission that dies, outside any admission, ICU within and after
24 h, ED ECGs, ECGs during an ICU stay, overlapping admissions, time format quirks), the ICD-10
label set and its tasks, the options, and the bad inputs."""

from __future__ import annotations

import gzip
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgscale.cli.main import main
from ecgscale.data.prepare import prepare
from ecgscale.data.preprocess import PreprocessConfig
from ecgscale.data.store import Store
from ecgscale.errors import ConfigError, DataError
from ecgscale.tasks import get_task
from fixtures.official_layouts import write_mimic, write_mimic_iv

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.drop:Warning")
SMALL = PreprocessConfig(fs=100.0, length=500, highpass_hz=None)
COLUMNS = ("hadm_id", "icd10_coded", "mortality", "icu_24h", "icu_48h", "sex", "age")


@pytest.fixture(scope="module")
def clinical(tmp_path_factory):
    root = tmp_path_factory.mktemp("mimic_clinical")
    record_list, _, _ = write_mimic(root / "raw", subjects=26)
    truth = write_mimic_iv(root / "mimiciv", root / "raw", record_list)
    store = prepare(
        "mimic_iv_ecg", root / "raw", root / "mimic_iv_ecg", SMALL,
        mimic_iv=root / "mimiciv", icu_hours="24,48",
    )  # fmt: skip
    return root, record_list, truth, store


def _same(got: object, want: object) -> bool:
    missing = got is None or (isinstance(got, float | np.floating) and np.isnan(got))
    return missing if want is None else got == want


def test_cohort_matches_the_hand_written_truth(clinical) -> None:
    _, record_list, truth, store = clinical
    expected = truth["expected"]
    assert len(store) == len(record_list) == len(expected) and store.manifest["skipped"] == []
    meta = store.meta.set_index("record_id")
    for study, want in expected.items():
        row = meta.loc[str(study)]
        for column in COLUMNS:
            assert _same(row[column], want[column]), (study, column, row[column], want[column])
        assert list(row["labels_icd10"]) == want["icd10"], study
    counts = Counter(c for want in expected.values() for c in want["icd10"])
    vocabulary = store.label_sets["icd10"]
    assert vocabulary == sorted(counts, key=lambda c: (-counts[c], c))
    assert set(vocabulary) == {"I10", "I21", "I25", "I46", "I48", "I50"}
    provenance = store.manifest["provenance"]
    assert provenance["icd10_counts"] == [counts[c] for c in vocabulary]
    info = provenance["mimic_iv"]
    assert info["skipped_rows"] == truth["skipped_rows"]
    ecgs = info["ecgs"]
    unknown = sum(1 for w in expected.values() if w["sex"] is None)  # subject 5's ECGs
    assert ecgs["unparseable_time"] == 1 and ecgs["unknown_subject"] == unknown >= 1
    values = list(expected.values())
    assert ecgs["in_admission"] == sum(w["hadm_id"] is not None for w in values) == 7 + 14
    assert ecgs["icd10_coded"] == sum(w["icd10_coded"] == "yes" for w in values) == 5 + 14
    assert ecgs["during_icu_stay"] == 1 and ecgs["icu_24h_positive"] == 3
    assert ecgs["mortality_positive"] == sum(w["mortality"] == 1 for w in values)
    assert info["fields"]["icustays"] == ["subject_id", "intime", "outtime"]
    # The statements label set is untouched by the join.
    assert len(store.label_sets["statements"]) == 5


def test_tasks_on_the_derived_columns(clinical) -> None:
    _, _, truth, store = clinical
    expected = truth["expected"]
    ids = store.meta["record_id"].astype(int).to_numpy()
    for task, column in (("mimic_icu_24h", "icu_24h"), ("mimic_icu_48h", "icu_48h"),
                         ("mimic_mortality", "mortality")):  # fmt: skip
        data = get_task(task).load(store)
        want = {s: w[column] for s, w in expected.items() if w[column] is not None}
        assert sorted(ids[data.rows].tolist()) == sorted(want)
        assert data.y[:, 0].tolist() == [want[s] for s in ids[data.rows]]
    sex = get_task("mimic_sex").load(store)
    assert len(sex) == sum(w["sex"] is not None for w in expected.values())
    age = get_task("mimic_age").load(store)
    assert age.y.tolist() == [expected[s]["age"] for s in ids[age.rows]]
    icd = get_task("mimic_icd10").load(store)
    coded = {s for s, w in expected.items() if w["icd10_coded"] == "yes"}
    assert set(ids[icd.rows].tolist()) == coded and len(coded) == 19
    for k, s in enumerate(ids[icd.rows]):
        positive = {c for c, y in zip(icd.classes, icd.y[k], strict=True) if y}
        assert positive == set(expected[s]["icd10"]) & set(icd.classes)
    top2 = get_task("mimic_icd10_top2").load(store)
    assert list(top2.classes) == ["I10", "I48"] == store.label_sets["icd10"][:2]


def test_options_ed_icd_granularity_and_cohort(clinical, tmp_path: Path) -> None:
    root, _, truth, _ = clinical
    raw, tables = root / "raw", root / "mimiciv"
    store = prepare(
        "mimic_iv_ecg", raw, tmp_path / "a", SMALL, mimic_iv=tables, ed="false",
        icd_prefixes="all", icd_chars="4",
    )  # fmt: skip
    meta = store.meta.set_index("record_id")
    (ed_ecg,) = truth["ed_false"]
    assert pd.isna(meta.loc[str(ed_ecg), "hadm_id"]) and pd.isna(meta.loc[str(ed_ecg), "mortality"])
    assert meta.loc[str(ed_ecg), "icu_24h"] == 1  # the ICU label does not need an admission
    by_hadm = meta.set_index("hadm_id")["labels_icd10"].dropna()
    assert list(by_hadm.loc["20000000"]) == ["E119", "I10", "I214", "I251"]
    assert list(by_hadm.loc["20000006"]) == ["R079"]
    assert "icu_48h" not in meta and store.manifest["provenance"]["mimic_iv"]["ed"] is False
    for cohort, n in (("admitted", 21), ("icd10", 19)):
        store = prepare(
            "mimic_iv_ecg", raw, tmp_path / cohort, SMALL, mimic_iv=tables, cohort=cohort
        )
        assert len(store) == n
        assert store.manifest["provenance"]["mimic_iv"]["cohort"] == {
            "name": cohort, "excluded_records": len(truth["expected"]) - n
        }  # fmt: skip


def test_uncompressed_tables_and_the_cli(clinical, tmp_path: Path, capsys) -> None:
    root, _, _, reference = clinical
    tables = tmp_path / "mimiciv"
    shutil.copytree(root / "mimiciv", tables)
    packed = tables / "hosp" / "admissions.csv.gz"
    with gzip.open(packed, "rb") as f:
        (tables / "hosp" / "admissions.csv").write_bytes(f.read())
    packed.unlink()
    out = tmp_path / "cli"
    args = ["data", "prepare", "mimic_iv_ecg", "--src", str(root / "raw"), "--out", str(out)]
    args += ["--fs", "100", "--length", "500", "--highpass", "0"]
    with pytest.raises(SystemExit) as info:
        main([*args, "-o", f"mimic_iv={tables}", "-o", "icu_hours=24,48"])
    assert info.value.code == 0, capsys.readouterr().err
    store = Store(out)
    columns = [*COLUMNS, "labels_icd10"]
    pd.testing.assert_frame_equal(
        store.meta[columns].astype(str), reference.meta[columns].astype(str)
    )
    assert store.manifest["provenance"]["mimic_iv"]["tables"]["admissions"] == (
        "hosp/admissions.csv"
    )


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_bad_tables_are_one_line_errors(clinical, tmp_path: Path) -> None:
    root, record_list, _, _ = clinical
    raw = root / "raw"
    tables = tmp_path / "mimiciv"
    shutil.copytree(root / "mimiciv", tables)
    (tables / "icu" / "icustays.csv.gz").unlink()
    with pytest.raises(DataError) as info:
        prepare("mimic_iv_ecg", raw, tmp_path / "s", SMALL, mimic_iv=tables)
    assert _one_line(info) == (
        f"{tables / 'icu' / 'icustays.csv.gz'}: not found; expected the MIMIC-IV icustays table "
        "with columns subject_id, intime, outtime"
    )
    shutil.copy(root / "mimiciv" / "icu" / "icustays.csv.gz", tables / "icu")
    admissions = tables / "hosp" / "admissions.csv.gz"
    pd.read_csv(admissions).drop(columns="hospital_expire_flag").to_csv(admissions, index=False)
    with pytest.raises(DataError) as info:
        prepare("mimic_iv_ecg", raw, tmp_path / "s", SMALL, mimic_iv=tables)
    assert _one_line(info).startswith(f"{admissions}: missing columns ['hospital_expire_flag']; ")
    assert "expected subject_id, hadm_id, admittime, dischtime" in str(info.value)
    admissions.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="not a readable CSV table") as info:
        prepare("mimic_iv_ecg", raw, tmp_path / "s", SMALL, mimic_iv=tables)
    _one_line(info)
    with pytest.raises(DataError, match="no such MIMIC-IV folder"):
        prepare("mimic_iv_ecg", raw, tmp_path / "s", SMALL, mimic_iv=tmp_path / "nope")
    src = tmp_path / "raw"
    src.mkdir()
    shutil.copy(raw / "machine_measurements.csv", src)
    record_list.drop(columns="ecg_time").to_csv(src / "record_list.csv", index=False)
    with pytest.raises(DataError, match=r"record_list\.csv: missing columns \['ecg_time'\]"):
        prepare("mimic_iv_ecg", src, tmp_path / "s", SMALL, mimic_iv=root / "mimiciv")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"icu_hours": "24"}, "options icu_hours need mimic_iv=DIR"),
        ({"icu_hours": "0,24", "mimic_iv": "X"}, "icu_hours '0,24': expected positive whole"),
        ({"icu_hours": "1.5", "mimic_iv": "X"}, "expected positive whole hours"),
        ({"icd_chars": "2", "mimic_iv": "X"}, "icd_chars '2': expected 3"),
        ({"icd_prefixes": "I,9x", "mimic_iv": "X"}, "icd_prefixes 'I,9x': expected ICD-10"),
        ({"ed": "maybe", "mimic_iv": "X"}, "ed 'maybe': expected true or false"),
        ({"cohort": "icu", "mimic_iv": "X"}, "cohort 'icu': expected one of all, admitted"),
    ],
)
def test_bad_options_are_one_line_errors(clinical, tmp_path, options, message) -> None:
    root = clinical[0]
    options = {k: (root / "mimiciv" if v == "X" else v) for k, v in options.items()}
    with pytest.raises(ConfigError, match=message):
        prepare("mimic_iv_ecg", root / "raw", tmp_path / "s", SMALL, **options)


def test_outcomes_may_not_repeat_derived_columns(clinical, tmp_path: Path) -> None:
    root, record_list, _, _ = clinical
    table = pd.DataFrame({"study_id": record_list["study_id"], "mortality": 0, "troponin": 1.0})
    table.to_csv(tmp_path / "outcomes.csv", index=False)
    with pytest.raises(DataError, match=r"columns \['mortality'\] are derived from the MIMIC-IV"):
        prepare(
            "mimic_iv_ecg", root / "raw", tmp_path / "s", SMALL, mimic_iv=root / "mimiciv",
            outcomes=tmp_path / "outcomes.csv",
        )  # fmt: skip
    assert not (tmp_path / "s").exists()
    table.drop(columns="mortality").to_csv(tmp_path / "outcomes.csv", index=False)
    store = prepare(
        "mimic_iv_ecg", root / "raw", tmp_path / "s", SMALL, mimic_iv=root / "mimiciv",
        outcomes=tmp_path / "outcomes.csv",
    )  # fmt: skip
    assert (store.meta["troponin"] == 1.0).all() and store.meta["mortality"].notna().any()
