"""The task registry: built-in and user YAML definitions, families, and loading targets and splits
from real (PTB-XL, PhysioNet 2021), synthetic and official-layout (MIMIC-IV-ECG) stores."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgscale.data.prepare import prepare, synthesize
from ecgscale.data.preprocess import PreprocessConfig
from ecgscale.data.store import Store
from ecgscale.data.synth import SynthConfig
from ecgscale.errors import ConfigError, DataError
from ecgscale.tasks import get_task, list_tasks
from fixtures.official_layouts import write_mimic

# wfdb's header parser calls a pandas API that warns; not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.drop:Warning")
TINY = PreprocessConfig(fs=100.0, length=100, highpass_hz=None)
REQUIRED = [
    *(f"ptbxl_{s}" for s in ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form",
                             "rhythm", "sex", "age")),
    "cpsc2018", "physionet2021", "physionet2021_georgia", "physionet2021_ningbo", "code6",
    "mimic_top9", "mimic_top927", "synth_code", "synth_extra", "synth_sex", "synth_age",
]  # fmt: skip


@pytest.fixture(scope="module")
def stores(shared_data: Path, tmp_path_factory) -> dict[str, Store]:
    root = tmp_path_factory.mktemp("stores")
    synth = SynthConfig(fs=100.0, length=200, seed=5)
    return {
        "ptbxl": prepare("ptbxl", shared_data / "ptbxl", root / "ptbxl", TINY),
        "physionet2021": prepare(
            "physionet2021",
            shared_data / "cinc2021",
            root / "physionet2021",
            TINY,
            scoring=shared_data / "physionet2021_scoring",
        ),
        "synthetic": synthesize(600, root / "synthetic", synth, highpass_hz=None),
    }


def test_builtin_names_and_families() -> None:
    names = list_tasks()
    assert set(REQUIRED) <= set(names) and len(names) == len(set(names))
    task = get_task("mimic_top50")
    assert (task.top_k, task.labels, task.dataset) == (50, "statements", "mimic_iv_ecg")
    assert task.description == "MIMIC-IV-ECG, the 50 most frequent report statements"
    assert get_task("physionet2021_georgia").where == {"source": ("georgia",)}
    assert get_task("ptbxl_age").metrics == ("mae", "r2")
    assert "challenge" in get_task("physionet2021").metrics
    for bad in ("mimic_topx", "mimic_top", "nonsense"):
        with pytest.raises(ConfigError, match="unknown task"):
            get_task(bad)


def _ptbxl_truth(src: Path, set_name: str) -> dict[int, set[str]]:
    """Each record's labels of one benchmark set, from the raw CSVs (Strodthoff et al.)."""
    db = pd.read_csv(src / "ptbxl_database.csv")
    st = pd.read_csv(src / "scp_statements.csv", index_col=0)
    column = {"superdiagnostic": "diagnostic_class", "subdiagnostic": "diagnostic_subclass"}
    flag = {"diagnostic": "diagnostic", "form": "form", "rhythm": "rhythm"}
    out = {}
    for ecg_id, text in zip(db["ecg_id"], db["scp_codes"], strict=True):
        keys = [k for k in ast.literal_eval(text) if k in st.index]
        if set_name in column:
            labels = {st.loc[k, column[set_name]] for k in keys if st.loc[k, "diagnostic"] == 1}
        elif set_name in flag:
            labels = {k for k in keys if st.loc[k, flag[set_name]] == 1}
        else:
            labels = set(keys)
        out[int(ecg_id)] = labels
    return out


@pytest.mark.parametrize(
    "set_name", ["all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm"]
)
def test_ptbxl_benchmark_tasks(stores, shared_data: Path, set_name: str) -> None:
    store = stores["ptbxl"]
    data = get_task(f"ptbxl_{set_name}").load(store)
    truth = _ptbxl_truth(shared_data / "ptbxl", set_name)
    folds = dict(zip(store.meta["record_id"].astype(int), store.meta["fold"], strict=True))
    in_train = {c for r, labels in truth.items() if folds[r] <= 8 for c in labels}
    classes = [c for c in store.label_sets[set_name] if c in in_train]
    kept = sorted(r for r, labels in truth.items() if labels & set(classes))
    assert list(data.classes) == classes
    assert sorted(store.meta["record_id"].astype(int).to_numpy()[data.rows]) == kept
    assert set(data.dropped_classes) == set(store.label_sets[set_name]) - set(classes)
    assert data.dropped_records == 280 - len(kept)
    ids = store.meta["record_id"].astype(int).to_numpy()[data.rows]
    expected = np.array([[c in truth[r] for c in classes] for r in ids], dtype=np.float32)
    np.testing.assert_array_equal(data.y, expected)
    assert data.y.dtype == np.float32 and data.y.any(axis=1).all()
    assert (data.folds[data.train] <= 8).all() and (data.folds[data.val] == 9).all()
    assert (data.folds[data.test] == 10).all()
    assert len(data.train) + len(data.val) + len(data.test) == len(data)


def test_ptbxl_attribute_tasks(stores) -> None:
    store = stores["ptbxl"]
    sex = get_task("ptbxl_sex").load(store)
    assert sex.kind == "binary" and sex.classes == ("M",) and sex.y.shape == (280, 1)
    np.testing.assert_array_equal(sex.y[:, 0], store.meta["sex"].to_numpy() == "M")
    age = get_task("ptbxl_age").load(store)
    ages = store.meta["age"].to_numpy()
    assert age.y.shape == (int(np.isfinite(ages).sum()),)
    assert age.dropped_records == int(np.isnan(ages).sum()) > 0
    np.testing.assert_array_equal(age.y, ages[age.rows])


def test_physionet2021_sources(stores) -> None:
    store = stores["physionet2021"]
    everything = get_task("physionet2021").load(store)
    assert len(everything) == 134  # records without a scored class are kept, as scored
    georgia = get_task("physionet2021_georgia").load(store)
    assert len(georgia) == 30 and (store.meta["source"].to_numpy()[georgia.rows] == "georgia").all()
    labels = store.labels("scored")[georgia.rows]
    train_positive = labels[georgia.train].sum(0) > 0
    classes = np.array(store.label_sets["scored"])
    assert list(georgia.classes) == classes[train_positive].tolist()
    assert set(georgia.dropped_classes) == set(classes[~train_positive])
    assert all("positive training records" in r for r in georgia.dropped_classes.values())
    with pytest.raises(DataError, match=r"no records .* with source in \['incart'\]"):
        get_task("physionet2021_incart").load(store)


def test_synthetic_tasks_and_cv(stores) -> None:
    store = stores["synthetic"]
    code = get_task("synth_code").load(store)
    assert len(code) == 600 and code.classes == ("1dAVb", "RBBB", "LBBB", "SB", "AF", "ST")
    np.testing.assert_array_equal(code.y, store.labels("code"))
    extra = get_task("synth_extra").load(store)
    assert extra.classes == ("LVH", "LQT") and extra.y.shape == (600, 2)
    np.testing.assert_array_equal(
        get_task("synth_sex").load(store).y[:, 0], store.meta["sex"].to_numpy() == "M"
    )
    np.testing.assert_array_equal(get_task("synth_age").load(store).y, store.meta["age"])
    seen = np.zeros(len(code), dtype=int)
    for fold in range(1, 11):
        train, val, test = code.cv_split(fold)
        assert (code.folds[test] == fold).all()
        assert (code.folds[val] == (fold - 2) % 10 + 1).all()
        assert len(train) + len(val) + len(test) == len(code)
        seen[test] += 1
    assert (seen == 1).all()
    default = code.cv_split(10)
    for a, b in zip(default, (code.train, code.val, code.test), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="synthetic"):
        get_task("ptbxl_all").load(store)


def test_user_tasks_from_env_and_explicit_path(stores, tmp_path: Path, monkeypatch) -> None:
    private = tmp_path / "private.yaml"
    private.write_text(
        "tasks:\n"
        "  my_af:\n"
        "    dataset: synthetic\n"
        "    labels: code\n"
        "    classes: [AF]\n"
        "    kind: binary\n"
        "  my_rhythm:\n"
        "    dataset: synthetic\n"
        "    labels: code\n"
        "    classes: [SB, AF, ST]\n"
        "    kind: multiclass\n"
        "  my_top{k}:\n"
        "    dataset: synthetic\n"
        "    labels: code\n"
        "    top_k: '{k}'\n"
        "    kind: multilabel\n"
        "    examples: {k: [2]}\n"
    )
    monkeypatch.setenv("ECGSCALE_TASKS", str(private))
    assert {"my_af", "my_rhythm", "my_top2"} <= set(list_tasks())
    store = stores["synthetic"]
    af = get_task("my_af").load(store)
    np.testing.assert_array_equal(af.y[:, 0], store.labels("code")[:, 4])
    rhythm = get_task("my_rhythm").load(store)
    one_hot = store.labels("code")[:, [3, 4, 5]]
    exactly_one = one_hot.sum(1) == 1
    np.testing.assert_array_equal(rhythm.rows, np.flatnonzero(exactly_one))
    np.testing.assert_array_equal(rhythm.y, one_hot[exactly_one].argmax(1))
    assert rhythm.y.dtype == np.int64 and rhythm.classes == ("SB", "AF", "ST")
    assert get_task("my_top3").load(store).classes == ("1dAVb", "RBBB", "LBBB")
    monkeypatch.delenv("ECGSCALE_TASKS")
    with pytest.raises(ConfigError, match="unknown task 'my_af'"):
        get_task("my_af")
    assert get_task("my_af", [private]).classes == ("AF",)
    twice = tmp_path / "twice.yaml"
    twice.write_text("tasks:\n  ptbxl_all: {dataset: x, labels: y, kind: multilabel}\n")
    with pytest.raises(ConfigError, match=r"'ptbxl_all' defined in both .*tasks\.yaml and"):
        list_tasks([twice])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{dataset: x, labels: y, kind: ordinal}", "kind: Input should be"),
        ("{dataset: x, labels: y, target: age, kind: regression}", "exactly one of labels"),
        ("{dataset: x, labels: y, kind: binary}", "exactly one class"),
        ("{dataset: x, labels: y, kind: multilabel, metrics: [auc]}", "unknown metrics"),
        ("{dataset: x, labels: y, kind: multilabel, colour: red}", "colour: Extra inputs"),
        ("[1, 2]", "expected a mapping"),
    ],
)
def test_invalid_entries_are_one_line_errors(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"tasks:\n  broken: {entry}\n")
    with pytest.raises(ConfigError, match=message) as info:
        get_task("broken", [path])
    assert "\n" not in str(info.value)


def test_mimic_top_k_and_outcomes(tmp_path: Path) -> None:
    record_list, _, _ = write_mimic(tmp_path / "raw", subjects=10)
    studies = record_list["study_id"]
    pd.DataFrame({"study_id": studies, "icu_admission": np.arange(len(studies)) % 2}).to_csv(
        tmp_path / "outcomes.csv", index=False
    )
    store = prepare(
        "mimic_iv_ecg", tmp_path / "raw", tmp_path / "mimic_iv_ecg", TINY,
        outcomes=tmp_path / "outcomes.csv",
    )  # fmt: skip
    vocabulary = store.label_sets["statements"]
    top3 = get_task("mimic_top3").load(store)
    assert list(top3.classes) == vocabulary[:3] and len(top3) == len(store)
    with pytest.raises(ConfigError, match="top_k 9 but label set 'statements' has 5 classes"):
        get_task("mimic_top9").load(store)
    icu = get_task("mimic_icu").load(store)
    np.testing.assert_array_equal(icu.y[:, 0], np.arange(len(studies)) % 2)
    with pytest.raises(DataError, match="no column 'mortality'"):
        get_task("mimic_mortality").load(store)
