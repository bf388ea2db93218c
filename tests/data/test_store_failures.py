"""Damaged stores, failed writes and bad option values: one line naming the file or option, exit
status 2, no traceback, and nothing else lost (other stores, other records, an existing store)."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

import ecgscale.data.store as store_module
from ecgscale.cli.main import main
from ecgscale.data.prepare import synthesize
from ecgscale.data.preprocess import PreprocessConfig
from ecgscale.data.store import Store, StoreWriter, remove_partials
from ecgscale.data.synth import SynthConfig
from ecgscale.errors import UserError

SYNTH = SynthConfig(fs=100, length=200, seed=3)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """40 synthetic records, 100 Hz x 200 samples."""
    return synthesize(40, tmp_path_factory.mktemp("good") / "s", SYNTH)


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def _one_line(err: str, *parts: str) -> None:
    """`err` is a single line `error: ...` holding every part, without a traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and all(p in lines[0] for p in parts), err


def _truncate(path: Path, keep: float) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(int(path.stat().st_size * keep))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def _edit_manifest(path: Path) -> None:
    manifest = json.loads(path.read_text())
    manifest["fs"] = 250.0
    path.write_text(json.dumps(manifest))


# (file, damage, expected words); the last two open fine and only fail `--verify`.
DAMAGES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "truncated signals": ("signals.npy", lambda p: _truncate(p, 0.9), "(truncated)"),
    "signals header": ("signals.npy", lambda p: p.write_bytes(b"garbage" * 40), "not a readable"),
    "broken manifest": ("manifest.json", lambda p: _truncate(p, 0.5), "unreadable"),
    "manifest without rows": (
        "manifest.json",
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "rows": "many"})),
        "rows: Input should be a valid integer",
    ),
    "missing meta": ("meta.parquet", Path.unlink, "missing"),
    "damaged meta": ("meta.parquet", lambda p: _truncate(p, 0.5), "unreadable Parquet"),
    "changed signals": ("signals.npy", _flip_byte, "checksum mismatch in signals.npy"),
    "changed manifest": ("manifest.json", _edit_manifest, "checksum mismatch in manifest.json"),
}
OPEN_FAILS = [name for name in DAMAGES if not name.startswith("changed")]


def _damaged(good: Store, tmp_path: Path, damage: str) -> Path:
    path = tmp_path / "bad"
    shutil.copytree(good.path, path)
    file, apply, _ = DAMAGES[damage]
    apply(path / file)
    return path


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_info_verify_names_the_damaged_file(damage, good, tmp_path, capsys) -> None:
    bad = _damaged(good, tmp_path, damage)
    file, _, words = DAMAGES[damage]
    code, out, err = _cli(["data", "info", str(bad), "--verify"], capsys)
    assert code == 2 and out == ""
    _one_line(err, file, words)
    good.verify()  # the copy's source is untouched


@pytest.mark.parametrize("damage", OPEN_FAILS)
def test_pretrain_probe_and_study_name_the_damaged_file(damage, good, tmp_path, capsys) -> None:
    bad = _damaged(good, tmp_path, damage)
    file, _, words = DAMAGES[damage]
    pretrain = ["pretrain", "--model", "resnet", "--objective", "sl", "--label-set", "code"]
    pretrain += ["--data", str(bad), "--out", str(tmp_path / "run"), "--samples", "16"]
    probe = ["probe", "--checkpoint", str(tmp_path / "run"), "--task", "synth_code"]
    probe += ["--store", f"synthetic={bad}", "--out", str(tmp_path / "probe.csv")]
    spec = {
        "name": "t",
        "out": str(tmp_path / "study"),
        "stores": {"source": {"path": str(good.path)}, "shifted": {"path": str(bad)}},
        "pretrain_store": "source",
        "label_set": "code",
        "ood": [{"task": "synth_code", "store": "shifted"}],
        "families": [{"name": "R", "model": "resnet", "objective": "sl", "sizes": [0]}],
        "budget": {"epochs": 1},
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec))
    for args in (pretrain, probe, ["study", "run", str(tmp_path / "study.yaml")]):
        code, _, err = _cli(args, capsys)
        assert code == 2, args
        _one_line(err, f"{bad}/{file}", words)
    assert not (tmp_path / "run").exists() and not (tmp_path / "probe.csv").exists()
    assert not (tmp_path / "study" / "runs").exists()


class _FullDisk(io.FileIO):
    """A file on a disk that fills up after `limit` bytes."""

    limit = 30_000

    def write(self, data) -> int:  # type: ignore[override]
        if self.tell() + len(data) > self.limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def _full_disk_open(path, mode="r", *args, **kwargs):
    return _FullDisk(path, "w") if mode == "wb" else open(path, mode, *args, **kwargs)


def test_full_disk_while_writing_signals(good, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(store_module, "open", _full_disk_open, raising=False)
    out = tmp_path / "s"
    code, _, err = _cli(["data", "synth", "--records", "200", "--out", str(out), "--fs", "100",
                         "--length", "200"], capsys)  # fmt: skip
    assert code == 2
    _one_line(err, str(out), "cannot write the store: No space left on device", "nothing was")
    assert list(tmp_path.iterdir()) == []  # no store, no partial folder


def test_full_disk_at_the_manifest_keeps_the_old_store(good, tmp_path, capsys, monkeypatch):
    out = tmp_path / "s"
    shutil.copytree(good.path, out)

    def full(path, data) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(store_module, "atomic_write", full)
    code, _, err = _cli(["data", "synth", "--records", "30", "--out", str(out), "--fs", "100",
                         "--length", "200", "--overwrite"], capsys)  # fmt: skip
    assert code == 2
    _one_line(err, "No space left on device", "manifest.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    kept = Store(out)
    kept.verify()
    assert kept.checksum == good.checksum and len(kept) == 40


def test_failed_rename_restores_the_old_store(good, tmp_path, monkeypatch) -> None:
    out = tmp_path / "s"
    shutil.copytree(good.path, out)
    replace = os.replace

    def failing(src, dst) -> None:
        if ".partial-" in str(src):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        replace(src, dst)

    monkeypatch.setattr(store_module.os, "replace", failing)
    with pytest.raises(UserError, match="Input/output error"):
        synthesize(30, out, SYNTH, overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    assert Store(out).checksum == good.checksum


@pytest.mark.parametrize(
    "reason", [errno.EROFS, errno.EACCES], ids=["read-only file system", "permission denied"]
)
def test_unwritable_location_is_one_line(reason, tmp_path, capsys, monkeypatch) -> None:
    def refuse(self, *args, **kwargs) -> None:
        raise OSError(reason, os.strerror(reason), str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    out = tmp_path / "s"
    code, _, err = _cli(["data", "synth", "--records", "10", "--out", str(out)], capsys)
    assert code == 2
    _one_line(err, f"{out}: cannot write the store: {os.strerror(reason)}")
    assert list(tmp_path.iterdir()) == []


def test_output_under_a_regular_file_is_one_line(tmp_path, capsys) -> None:
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "s"
    code, _, err = _cli(["data", "synth", "--records", "10", "--out", str(out)], capsys)
    assert code == 2
    _one_line(err, f"{out}: cannot write the store: Not a directory")


def test_partials_of_live_writers_are_kept_and_orphans_removed(tmp_path: Path) -> None:
    out = tmp_path / "s"
    orphan = tmp_path / ".s.partial-dead0001"  # what a killed writer leaves: no lock held
    orphan.mkdir()
    (orphan / "signals.npy").write_bytes(b"\x93NUMPY")
    (tmp_path / ".other.partial-dead0002").mkdir()  # another store's: not ours to remove
    live = StoreWriter(out, PreprocessConfig(fs=100, length=200), 5, name="t")
    assert not orphan.exists() and live.tmp.is_dir()
    assert remove_partials(out) == [] and live.tmp.is_dir()  # the lock keeps a live one
    live.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.partial-dead0002"]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--fs", "0"], "fs: Input should be greater than or equal to 50 (got 0.0)"),
        (["--length", "0"], "length: Input should be greater than 0 (got 0)"),
        (["--fs", "50000"], "fs: Input should be less than or equal to 10000"),
        (["--length", "20"], "length 20 at 100 Hz is 0.2 s; expected at least 1 s"),
        (["--lowpass", "60"], "lowpass_hz 60 must be below fs/2 = 50 Hz"),
        (["--fs", "abc"], "ecgscale data prepare: Invalid value for '--fs'"),
        (["--length", "1e3"], "Invalid value for '--length'"),
    ],
)
def test_bad_rates_and_lengths_are_one_line(options, words, shared_data, tmp_path, capsys):
    args = ["data", "prepare", "ptbxl", "--src", str(shared_data / "ptbxl"), "--out"]
    code, out, err = _cli([*args, str(tmp_path / "s"), *options], capsys)
    assert code == 2 and out == ""
    _one_line(err, words)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["pretrain", "--epochs", "many"], "ecgscale pretrain"),
        (["probe", "--draws", "x"], "ecgscale probe"),
        (["study", "run"], "ecgscale study run"),
        (["fit", "results.csv", "--n-boot", "lots"], "ecgscale fit"),
        (["tasks", "list", "--nope"], "ecgscale tasks list"),
        (["nosuch"], "ecgscale"),
    ],
)
def test_usage_errors_of_every_command_are_one_line(args, command, capsys) -> None:
    code, _, err = _cli(args, capsys)
    assert code == 2
    _one_line(err, f"{command}: ", f"(see {command} --help)")


def test_signals_shape_disagreeing_with_the_manifest(good, tmp_path, capsys) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(good.path, bad)
    np.save(bad / "signals.npy", np.zeros((40, 12, 100), np.int16))
    code, _, err = _cli(["data", "info", str(bad)], capsys)
    assert code == 2
    _one_line(err, "signals.npy: holds int16 (40, 12, 100), manifest.json says int16 (40, 12, 200)")
