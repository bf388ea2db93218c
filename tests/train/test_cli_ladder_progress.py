"""`ecgscale pretrain --model resnet-2K`: a ladder size trains as its family with the size's
config, and with output redirected the progress is plain lines."""

from __future__ import annotations

import json
import re

import pytest

from ecgscale.cli.main import main
from ecgscale.models.registry import resolve_model


def test_pretrain_a_ladder_size_with_progress_lines(small_store, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    args = ["pretrain", "--model", "resnet-2K", "--objective", "sl", "--label-set", "code"]
    args += ["--data", str(small_store.path), "--out", str(out), "--samples", "32"]
    with pytest.raises(SystemExit) as info:
        main([*args, "--batch-size", "16"])
    assert info.value.code == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"] == "resnet"
    assert saved["model_config"] == resolve_model("resnet-2K")[1]
    printed = capsys.readouterr().out
    assert re.search(r"^sl resnet: 2/2 \(100 %\), \d+ s, loss \d\.\d{4}$", printed, re.M), printed
