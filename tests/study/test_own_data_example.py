"""The README's own-data path, end to end through the CLI: WFDB records plus labels.csv ->
`data prepare generic` -> the example tasks (`examples/own_tasks.yaml` via ECGSCALE_TASKS) ->
`study plan` and `study run` of `examples/own_data.yaml` (its budget cut to seconds)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
import yaml

from ecgscale.cli.main import main
from ecgscale.data.preprocess import STANDARD_LEADS
from ecgscale.data.synth import SynthConfig, generate_batch
from ecgscale.study.runner import results_of
from ecgscale.study.spec import load_spec

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.drop:Warning")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _write_raw(raw: Path, n: int) -> None:
    """`n` synthetic 10 s ECGs at 500 Hz as WFDB records, two per patient, and labels.csv with
    age, sex and two 0/1 label columns."""
    raw.mkdir()
    config = SynthConfig(fs=500.0, length=5000)
    signals, meta, _ = generate_batch(n, config, np.random.default_rng(0))
    rows = []
    for i, (x, m) in enumerate(zip(signals, meta, strict=True)):
        wfdb.wrsamp(
            f"ecg{i:03d}", fs=500, units=["mV"] * 12, sig_name=list(STANDARD_LEADS),
            p_signal=x.T.astype(np.float64), fmt=["16"] * 12, write_dir=str(raw),
        )  # fmt: skip
        rows.append(
            {"record": f"ecg{i:03d}", "patient": f"p{i // 2}", "age": m["age"], "sex": m["sex"],
             "AF": int("AF" in m["labels_code"]), "RBBB": int("RBBB" in m["labels_code"])}
        )  # fmt: skip
    pd.DataFrame(rows).to_csv(raw / "labels.csv", index=False)


def test_own_data_path_runs_to_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _write_raw(tmp_path / "my_raw", 160)
    shutil.copy(EXAMPLES / "own_tasks.yaml", tmp_path)
    spec = yaml.safe_load((EXAMPLES / "own_data.yaml").read_text())
    for family in spec["families"]:
        family["sizes"] = family["sizes"][:1]
    spec.update(data_fractions=[1.0], budget={"samples": 64}, executor={"kind": "serial"})
    (tmp_path / "own_data.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ECGSCALE_TASKS", str(tmp_path / "own_tasks.yaml"))

    prepare = ["data", "prepare", "generic", "--src", "my_raw", "--out", "stores/mydata"]
    for argv in (
        [*prepare, "--fs", "100", "--length", "1000", "-o", "dataset=mydata"],
        ["tasks", "list", "--root", "stores"],
        ["study", "plan", "own_data.yaml", "--no-calibrate"],
        ["study", "run", "own_data.yaml"],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0, argv
        if argv[0] == "tasks":
            listed = capsys.readouterr().out
            assert "mydata_sex" in listed and "mydata_age" in listed and "mydata_labels" in listed

    results = results_of(load_spec(tmp_path / "own_data.yaml"))
    assert (results.runs()["status"] == "done").sum() == 2  # ResNet-SL and ResNet-SSL
    table = results.table()
    assert set(table["task"]) == {"mydata_sex", "mydata_age"}
    assert np.isfinite(table["ood_loss"]).all() and np.isfinite(table["id_loss"]).all()
