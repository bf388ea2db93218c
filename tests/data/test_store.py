"""Store writer and reader: streaming, atomic, skipped records listed, checksums, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecgscale.data.prepare import prepare, synthesize
from ecgscale.data.preprocess import PreprocessConfig
from ecgscale.data.store import Record, Store, StoreWriter
from ecgscale.data.synth import SynthConfig
from ecgscale.errors import DataError, UserError

CFG = PreprocessConfig(fs=100.0, length=1000, highpass_hz=None)
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def _record(i: int, patient: str, signal: np.ndarray | None = None) -> Record:
    rng = np.random.default_rng(i)
    x = signal if signal is not None else rng.normal(0, 0.3, (12, 1000)).astype(np.float32)
    return Record(x, 100.0, LEADS, f"r{i}", patient, {"labels_y": ["a"] if i % 2 else ["b"]})


def _write(out: Path, records: list[Record]) -> Store:
    with StoreWriter(out, CFG, len(records), name="t", label_sets={"y": ["a", "b"]}) as w:
        for r in records:
            w.add(r)
    return Store(out)


def test_bad_records_are_skipped_with_reasons_and_nothing_else_lost(tmp_path: Path) -> None:
    good = [_record(i, f"p{i}") for i in range(30)]
    nan = np.ones((12, 1000), np.float32)
    nan[3, 10] = np.nan
    bad = [
        _record(100, "q1", nan),
        Record(np.zeros((3, 1000), np.float32), 100.0, ["I", "II", "V1"], "r101", "q2", {}),
        _record(0, "p0"),  # duplicate id r0
        # A header claiming 50 kHz for 10 s at 500 Hz: 0.1 s, would be 99 % zero padding.
        Record(np.ones((12, 5000), np.float32), 50000.0, LEADS, "r102", "q3", {}),
        Record(np.ones((12, 40), np.float32), 100.0, LEADS, "r103", "q4", {}),
    ]
    store = _write(tmp_path / "s", good[:10] + bad + good[10:])
    assert len(store) == 30
    assert store.meta["record_id"].tolist() == [f"r{i}" for i in range(30)]
    reasons = {s["record_id"]: s["reason"] for s in store.manifest["skipped"]}
    assert reasons == {
        "r100": "signal contains NaN or infinite values",
        "r101": "leads ['I', 'II', 'V1']: precordial lead V2 is missing",
        "r0": "duplicate record id",
        "r102": "sampling rate 50000 Hz is implausible for an ECG (expected 50-10000 Hz)",
        "r103": "40 samples at 100 Hz is 0.4 s, shorter than 1 s",
    }
    np.testing.assert_allclose(store.batch([5])[0], good[5].signal, atol=5e-4)


def test_interrupted_write_leaves_no_store(tmp_path: Path) -> None:
    out = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        with StoreWriter(out, CFG, 5, name="t") as w:
            w.add(_record(1, "p1"))
            raise KeyboardInterrupt
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_killed_prepare_never_looks_complete(tmp_path: Path) -> None:
    """A process killed mid-write leaves only a hidden partial folder that is not a store."""
    code = (
        "import os, signal\n"
        "from ecgscale.data.store import StoreWriter\n"
        "from ecgscale.data.preprocess import PreprocessConfig\n"
        "import numpy as np\n"
        f"w = StoreWriter({str(tmp_path / 's')!r}, PreprocessConfig(fs=100, length=1000), 4, "
        "name='t')\n"
        "w.add_prepared(np.zeros((2, 12, 1000), np.float32), "
        "[{'record_id': 'a', 'patient_id': 'p'}, {'record_id': 'b', 'patient_id': 'q'}])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    assert not (tmp_path / "s").exists()
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".s.partial-")]
    assert len(partial) == 1
    with pytest.raises(DataError, match=r"manifest\.json missing"):
        Store(partial[0])
    # The next prepare of the same store removes the orphan (its writer's lock died with it).
    store = synthesize(20, tmp_path / "s", SynthConfig(fs=100, length=1000))
    assert [p.name for p in tmp_path.iterdir()] == ["s"] and len(store) == 20


def test_manifest_and_checksum(tmp_path: Path) -> None:
    store = synthesize(300, tmp_path / "s", SynthConfig(fs=100, length=1000))
    m = store.manifest
    assert m["rows"] == 300 and m["fs"] == 100 and m["units"] == "mV"
    assert m["leads"][:3] == ["I", "II", "III"] and m["format_version"] == 1
    assert m["preprocessing"]["highpass_hz"] == 0.5
    assert store.signals.dtype == np.int16 and store.signals.shape == (300, 12, 1000)
    store.verify()
    signals = np.load(tmp_path / "s" / "signals.npy", mmap_mode="r+")
    signals[7, 3, 100] += 1
    signals.flush()
    del signals
    with pytest.raises(DataError, match="checksum mismatch"):
        Store(tmp_path / "s").verify()


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    _write(tmp_path / "s", [_record(i, f"p{i}") for i in range(12)])
    with pytest.raises(UserError, match="already exists"):
        _write(tmp_path / "s", [_record(1, "p1")])


def test_batch_order_and_labels(tmp_path: Path) -> None:
    records = [_record(i, f"p{i}") for i in range(12)]
    store = _write(tmp_path / "s", records)
    rows = np.array([9, 2, 2, 0])
    batch = store.batch(rows)
    for k, r in enumerate(rows):
        np.testing.assert_allclose(batch[k], records[r].signal, atol=5e-4)
    assert store.labels("y")[:3].tolist() == [[0, 1], [1, 0], [0, 1]]


def _ptbxl_copy(shared_data: Path, tmp_path: Path) -> Path:
    src = tmp_path / "ptbxl"
    src.mkdir()
    for name in ("ptbxl_database.csv", "scp_statements.csv"):
        shutil.copy(shared_data / "ptbxl" / name, src / name)
    shutil.copytree(shared_data / "ptbxl" / "records100", src / "records100")
    return src


def test_truncated_and_missing_records_are_skipped(shared_data: Path, tmp_path: Path) -> None:
    src = _ptbxl_copy(shared_data, tmp_path)
    dat = src / "records100" / "00000" / "00002_lr.dat"
    dat.write_bytes(dat.read_bytes()[:1000])
    (src / "records100" / "00000" / "00003_lr.hea").unlink()
    store = prepare("ptbxl", src, tmp_path / "s", CFG)
    assert len(store) == 278
    skipped = {s["record_id"]: s["reason"] for s in store.manifest["skipped"]}
    assert set(skipped) == {"2", "3"}
    assert "unreadable WFDB record" in skipped["2"] and "00002_lr" in skipped["2"]
    assert "00003_lr" in skipped["3"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgscale.cli.main", *args],
                          capture_output=True, text=True, check=False)  # fmt: skip


def test_cli_user_errors_are_one_line(shared_data: Path, tmp_path: Path) -> None:
    src = _ptbxl_copy(shared_data, tmp_path)
    (src / "scp_statements.csv").unlink()
    cases = {
        ("data", "prepare", "ptbxl", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o")):
            "no such dataset folder",
        ("data", "prepare", "ptbxl", "--src", str(src), "--out", str(tmp_path / "o")):
            "expected scp_statements.csv",
        ("data", "prepare", "nosuch", "--src", str(src), "--out", str(tmp_path / "o")):
            "unknown dataset 'nosuch'; expected one of:",
        ("data", "synth", "--records", "10", "--out", str(tmp_path / "o"), "--fs", "-1"):
            "fs: Input should be greater than 0",
        ("data", "info", str(tmp_path)): "not a complete store",
        ("data", "prepare", "ptbxl", "--src", str(src), "--out", str(tmp_path / "o"), "--fs", "x"):
            "ecgscale data prepare: Invalid value for '--fs'",
    }  # fmt: skip
    for args, message in cases.items():
        result = _cli(*args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert result.stdout == ""  # no empty line from a progress bar off a terminal
    assert not (tmp_path / "o").exists()


def test_cli_synth_and_info(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    result = _cli("data", "synth", "--records", "200", "--out", str(out), "--fs", "100",
                  "--length", "1000")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wrote 200 records")
    assert f"wrote 200 records to {out}" in " ".join(result.stdout.split())
    info = _cli("data", "info", str(out), "--verify")
    assert info.returncode == 0 and "checksums verified" in " ".join(info.stdout.split())
    assert json.loads((out / "manifest.json").read_text())["rows"] == 200
