"""`ecgscale pretrain`: trains through the Python API, prints N, D and where it wrote; a bad
pairing or a CUDA-only switch on CPU is one red line and exit status 2."""

from __future__ import annotations

import json

import pytest

from ecgscale.cli.main import main


def test_pretrain_command_trains_and_reports(small_store, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    args = ["pretrain", "--model", "resnet", "-m", "width_multiplier=0.125", "-m", "kernel_size=9"]
    args += ["--objective", "cmsc", "-O", "temperature=0.2", "--data", str(small_store.path)]
    args += ["--out", str(out), "--samples", "32", "--batch-size", "16", "--no-progress"]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 0
    printed = capsys.readouterr().out.replace("\n", "")
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 2 and result["samples_seen"] == 32
    assert f"N = {result['params']:,}" in printed and str(out) in printed
    saved = json.loads((out / "config.json").read_text())
    assert saved["objective_options"]["temperature"] == 0.2
    assert saved["model_config"] == {"width_multiplier": 0.125, "kernel_size": 9}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--objective", "masked"], "objective 'masked' trains encoders of input kind beats"),
        (["--objective", "sl", "--bf16"], "bf16 is a CUDA-only option"),
        (["--objective", "sl", "-O", "nope"], "expected KEY=VALUE"),
    ],
)
def test_errors_are_one_line_with_status_2(extra, message, small_store, tmp_path, capsys) -> None:
    args = ["pretrain", "--model", "resnet", "--data", str(small_store.path), "--epochs", "1"]
    with pytest.raises(SystemExit) as info:
        main([*args, "--out", str(tmp_path / "r"), *extra])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err.replace("\n", " ") and "Traceback" not in err
