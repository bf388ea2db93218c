"""`study plan`: FLOPs at the prepared store's own input, total compute, calibrated wall time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from ecgscale.cli import study as study_cli
from ecgscale.cli.main import main
from ecgscale.data.prepare import synthesize
from ecgscale.data.store import Store
from ecgscale.data.synth import SynthConfig
from ecgscale.models.flops import model_size
from ecgscale.study.calibrate import Calibration, Timing, calibrate, run_seconds, wall_seconds
from ecgscale.study.planner import estimate, plan, store_info
from ecgscale.study.spec import parse_spec


@pytest.fixture(scope="module")
def store_100hz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared store of 120 synthetic records, 100 Hz x 1000 samples."""
    out = tmp_path_factory.mktemp("prepared") / "store"
    synthesize(120, out, SynthConfig(fs=100.0, length=1000))
    return out


def _prepared_spec(base: dict[str, Any], store: Path) -> dict[str, Any]:
    return dict(base, stores={"source": {"path": str(store)}}, ood=[])


def test_plan_counts_flops_at_the_prepared_stores_input(base_spec, store_100hz: Path) -> None:
    spec = parse_spec(_prepared_spec(base_spec, store_100hz))
    info = store_info(spec)
    assert (info.fs, info.length, info.leads) == (100.0, 1000, 12)
    assert info.train_records == len(Store(store_100hz).split_indices("train"))
    assert info.classes == tuple(Store(store_100hz).label_sets["code"])
    runs = plan(spec)
    rows = estimate(runs, info)
    for run, row in zip(runs, rows, strict=True):
        config = run.config["model_config"]
        at_store = model_size("resnet", config, fs=100, length=1000).train_flops
        assert row["flops_per_record"] == at_store
        default = model_size("resnet", config).train_flops  # the ResNet's 400 Hz x 4096 input
        assert 3.5 < default / row["flops_per_record"] < 4.5
        assert row["n_samples"] == info.train_records
        assert row["train_flops"] == row["flops_per_record"] * row["samples_seen"]


def test_plan_prints_total_compute_and_wall_time(
    tmp_path: Path, base_spec, store_100hz: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(study_cli.console, "width", 250)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(_prepared_spec(base_spec, store_100hz)))
    for args, calibrated in (([], True), (["--no-calibrate"], False)):
        with pytest.raises(SystemExit) as exc:
            main(["study", "plan", str(path), *args])
        assert exc.value.code == 0
        printed = capsys.readouterr().out
        assert "total estimated training compute: " in printed
        assert "FLOP (inputs 12 x 1000 at 100 Hz)" in printed
        assert ("estimated wall time: " in printed) == calibrated
        assert ("measured here in " in printed) == calibrated
        assert ("train time" in printed) == calibrated


def test_calibration_times_each_familys_smallest_and_largest_model(
    base_spec, store_100hz: Path
) -> None:
    base_spec["families"][0]["sizes"] = [0, 1, 2]
    spec = parse_spec(_prepared_spec(base_spec, store_100hz))
    runs, info = plan(spec), store_info(spec)
    rows = estimate(runs, info)
    calibration = calibrate(spec, runs, rows, info, steps=2)
    assert [t.size for t in calibration.timings] == [runs[0].size, runs[-1].size]
    assert all(t.seconds_per_record > 0 and 1 <= t.steps <= 2 for t in calibration.timings)
    assert {t.batch_size for t in calibration.timings} == {32}  # the family's 64, capped
    assert calibration.threads == torch.get_num_threads()  # serial: this process's threads
    assert calibration.seconds < 30
    assert all(s > 0 for s in run_seconds(rows, calibration))


def test_seconds_per_record_interpolates_in_log_flops() -> None:
    timings = (
        Timing("a", "s", 1e6, 1e-3, 32, 3),
        Timing("a", "l", 1e8, 1e-2, 32, 3),
        Timing("b", "x", 1e6, 2e-3, 32, 3),
    )
    calibration = Calibration(timings, 1, "cpu", 1.0)
    assert calibration.seconds_per_record("a", 1e6) == pytest.approx(1e-3)
    assert calibration.seconds_per_record("a", 1e7) == pytest.approx(1e-3 * 10**0.5)
    assert calibration.seconds_per_record("a", 1e8) == pytest.approx(1e-2)
    assert calibration.seconds_per_record("b", 3e6) == pytest.approx(6e-3)  # one point: linear


def test_wall_time_schedules_runs_in_order_over_the_workers() -> None:
    assert wall_seconds([3.0, 1.0, 1.0, 1.0], 1) == 6.0
    assert wall_seconds([3.0, 1.0, 1.0, 1.0], 2) == 3.0
    assert wall_seconds([1.0, 1.0, 1.0, 3.0], 2) == 4.0  # the long run starts last
    assert wall_seconds([2.0], 4) == 2.0
