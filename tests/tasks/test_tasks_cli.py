"""`ecgscale tasks list`: every task, sizes where a store of its dataset exists under --root."""

from __future__ import annotations

from pathlib import Path

import pytest

import ecgscale.cli.tasks as tasks_cli
from ecgscale.cli.main import main
from ecgscale.data.prepare import synthesize
from ecgscale.data.synth import SynthConfig
from ecgscale.tasks import get_task


def _run(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 0
    return capsys.readouterr().out


def test_list_with_and_without_stores(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(tasks_cli.console, "width", 200)
    store = synthesize(
        300, tmp_path / "synthetic", SynthConfig(fs=100, length=100), highpass_hz=None
    )
    out = _run(["tasks", "list"], capsys)
    assert "ptbxl_superdiagnostic" in out and "mimic_top927" in out
    assert "PTB-XL, 5 diagnostic superclasses" in out
    out = _run(["tasks", "list", "--root", str(tmp_path)], capsys)
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    data = get_task("synth_code").load(store)
    assert (
        f"{len(data)} = {len(data.train)}/{len(data.val)}/{len(data.test)}, 6"
        in (lines["synth_code"])
    )
    assert lines["ptbxl_all"].rstrip().endswith("not prepared")
    private = tmp_path / "mine.yaml"
    private.write_text("tasks:\n  my_lqt: {dataset: synthetic, labels: extra, classes: [LQT], "
                       "kind: binary, description: my own task}\n")  # fmt: skip
    out = _run(["tasks", "list", "--file", str(private), "--root", str(tmp_path)], capsys)
    assert "my_lqt" in out and "synthetic: extra" in out


def test_help() -> None:
    with pytest.raises(SystemExit) as info:
        main(["tasks", "list", "--help"])
    assert info.value.code == 0
