"""Generic reader (a folder of WFDB records plus a labels CSV) and the reader options of
`ecgscale data prepare`: configurable columns, both label-column styles, official folds, lead
names harmonised by name, and the bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from ecgscale.cli.main import main
from ecgscale.data.prepare import prepare
from ecgscale.data.preprocess import PreprocessConfig
from ecgscale.data.store import Store
from ecgscale.errors import ConfigError, DataError

# wfdb's header parser calls a pandas API that warns; not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.drop:Warning")
CONFIG = PreprocessConfig(fs=250.0, length=500, highpass_hz=None)
LEADS = ("I", "II", "III", "avr", "avl", "avf", "V1", "V2", "V3", "V4", "V5", "V6")


def _write(folder: Path, names: list[str], seed: int = 0) -> dict[str, np.ndarray]:
    """WFDB records at 250 Hz (2 s), lower-case augmented lead names; returns mV signals."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        digital = rng.integers(-2000, 2000, size=(500, 12)).astype(np.int16)
        wfdb.wrsamp(
            path.name, fs=250, units=["uV"] * 12, sig_name=list(LEADS), d_signal=digital,
            fmt=["16"] * 12, adc_gain=[1.0] * 12, baseline=[0] * 12, write_dir=str(path.parent),
        )  # fmt: skip
        out[name] = digital.T / 1000.0
    return out


def test_private_layout_with_custom_columns(tmp_path: Path) -> None:
    names = [f"site{k % 2}/ecg{k:03d}" for k in range(20)]
    signals = _write(tmp_path / "raw", names)
    dx = ["AF;LBBB" if k % 5 == 0 else ("AF" if k % 3 == 0 else "") for k in range(20)]
    table = pd.DataFrame(
        {
            "ecg": names,
            "subject": [f"p{k // 2}" for k in range(20)],
            "dx": dx,
            "noisy": [int(k % 7 == 0) for k in range(20)],
            "age": np.arange(20) + 30.0,
            "sex": ["female", "male"] * 10,
            "fold": [k // 2 % 10 + 1 for k in range(20)],
            "comment": "ignored",
        }
    )
    table.to_csv(tmp_path / "my_labels.csv", index=False)
    store = prepare(
        "generic", tmp_path / "raw", tmp_path / "store", CONFIG, labels=tmp_path / "my_labels.csv",
        record_col="ecg", patient_col="subject", label_cols="dx,noisy", dataset="mydata",
    )  # fmt: skip
    assert store.manifest["name"] == "mydata" and len(store) == 20
    assert store.label_sets == {"labels": ["AF", "LBBB", "noisy"]}
    counts = store.labels("labels").sum(0).tolist()
    expected_af = sum("AF" in d for d in dx)
    assert counts == [expected_af, dx.count("AF;LBBB"), int(table["noisy"].sum())]
    assert store.meta["fold"].tolist() == table["fold"].tolist()
    assert store.manifest["provenance"]["folds"] == "official"
    assert store.manifest["patient_ids"] == {"mydata": "source: column 'subject' of my_labels.csv"}
    assert store.meta["sex"].tolist() == ["F", "M"] * 10
    # Lead names are matched by name: aVL is the raw channel "avl".
    np.testing.assert_allclose(store.batch([3])[0], signals[names[3]], atol=5.1e-4)


def test_bad_rows_and_records_are_skipped(tmp_path: Path) -> None:
    names = [f"r{k:02d}" for k in range(24)]
    _write(tmp_path / "raw", names)
    (tmp_path / "raw" / "r23.hea").write_text("r23 12 fast 500\n")  # malformed record line
    _write(tmp_path / "raw", ["extra/unlisted"])
    rows = [*names, "r05", "missing"]
    table = pd.DataFrame(
        {"record": rows, "patient": rows, "labels": ["A" if k < 6 else "" for k in range(26)]}
    )
    table.to_csv(tmp_path / "raw" / "labels.csv", index=False)
    store = prepare("generic", tmp_path / "raw", tmp_path / "store", CONFIG)
    reasons = {s["record_id"]: s["reason"] for s in store.manifest["skipped"]}
    assert len(store) == 23 and store.manifest["name"] == "generic"
    assert "unreadable WFDB record" in reasons["r23"]
    assert "duplicate row in labels.csv" in reasons["r05"]
    assert "WFDB files not found" in reasons["missing"]
    assert reasons["extra/unlisted"] == "WFDB record without a row in labels.csv"
    assert len(reasons) == 4
    assert store.manifest["provenance"]["folds"].startswith("seeded")


def test_bad_tables_are_one_line_errors(tmp_path: Path) -> None:
    _write(tmp_path, ["a"])
    with pytest.raises(DataError, match=r"labels\.csv: labels CSV not found"):
        prepare("generic", tmp_path, tmp_path / "s", CONFIG)
    pd.DataFrame({"rec": ["a"], "patient": ["p"]}).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(DataError, match="no column 'record'"):
        prepare("generic", tmp_path, tmp_path / "s", CONFIG)
    with pytest.raises(DataError, match=r"label columns \['dx'\] not found"):
        prepare("generic", tmp_path, tmp_path / "s", CONFIG, record_col="rec", label_cols="dx")
    pd.DataFrame({"record": ["a"], "patient": ["p"], "fold": [11]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    with pytest.raises(DataError, match="must hold folds 1-10"):
        prepare("generic", tmp_path, tmp_path / "s", CONFIG)
    with pytest.raises(ConfigError, match="takes no option scoring"):
        prepare("ptbxl", tmp_path, tmp_path / "s", CONFIG, scoring=tmp_path)


def test_cli_passes_reader_options(tmp_path: Path, capsys) -> None:
    names = [f"r{k:02d}" for k in range(12)]
    _write(tmp_path / "raw", names)
    table = pd.DataFrame({"id": names, "who": names, "AF": [k % 2 for k in range(12)]})
    table.assign(fold=[k % 10 + 1 for k in range(12)]).to_csv(
        tmp_path / "raw" / "labels.csv", index=False
    )
    args = ["data", "prepare", "generic", "--src", str(tmp_path / "raw"), "--fs", "250",
            "--length", "500", "--highpass", "0"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--out", str(tmp_path / "s"), "-o", "record_col=id", "-o", "patient_col=who"])
    assert exit_info.value.code == 0
    store = Store(tmp_path / "s")
    assert len(store) == 12 and store.label_sets == {"labels": ["AF"]}
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--out", str(tmp_path / "t"), "-o", "record_col"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--option 'record_col': expected KEY=VALUE" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main([*args, "--out", str(tmp_path / "t"), "-o", "colour=red"])
    assert "dataset 'generic' takes no option colour" in capsys.readouterr().err
