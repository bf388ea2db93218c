"""TensorBoard event files of the trainer (`TrainConfig.tensorboard`), read back with
TensorBoard's own event reader: the scalars are the trainer's log, step for step, also after an
interrupted run resumed; off by default, and one line when the package is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ecgscale.errors import ConfigError
from ecgscale.train import pretrain, trainer

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)


def _events(path: Path) -> dict[str, list[tuple[int, float]]]:
    reader = EventAccumulator(str(path), size_guidance={"scalars": 0})  # 0: keep every event
    reader.Reload()
    return {
        tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]
    }


def _log(out: Path) -> dict[str, list[tuple[int, float]]]:
    """The metrics log as `KIND/FIELD -> [(step, value as float32)]`."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key not in ("kind", "step"):
                tag = f"{record['kind']}/{key}"
                scalars.setdefault(tag, []).append((record["step"], float(np.float32(value))))
    return scalars


def test_scalars_are_the_trainers_log(config) -> None:
    cfg = config(tensorboard=True)
    result = pretrain(cfg, progress=False)
    events = _events(cfg.out / "tb")
    log = _log(cfg.out)
    for tag in ("train/loss", "train/lr", "train/grad_norm", "val/loss", "val/auroc_macro"):
        assert tag in events
    # every log field at every step, equal to the float32 that TensorBoard stores
    assert {t: v for t, v in events.items() if not t.startswith("test/")} == log
    assert [step for step, _ in events["train/loss"]] == list(range(1, result.steps + 1))
    assert [step for step, _ in events["val/loss"]] == [0, 8, 16]  # start and each epoch
    assert events["test/loss"] == [(result.steps, float(np.float32(result.test_metrics["loss"])))]


def test_resumed_run_replaces_the_events_past_its_checkpoint(config, monkeypatch) -> None:
    cfg = config(tensorboard=True, checkpoint_every=3)
    original = trainer._Run.train_step

    def fail_at_step_5(self, raw):
        if self.state.step == 5:  # steps 4 and 5 logged after the checkpoint at step 3
            raise KeyboardInterrupt
        return original(self, raw)

    monkeypatch.setattr(trainer._Run, "train_step", fail_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, progress=False)
    assert [s for s, _ in _events(cfg.out / "tb")["train/loss"]] == [1, 2, 3, 4, 5]
    monkeypatch.setattr(trainer._Run, "train_step", original)
    result = pretrain(cfg, resume=True, progress=False)
    events = _events(cfg.out / "tb")
    assert [s for s, _ in events["train/loss"]] == list(range(1, result.steps + 1))
    assert {t: v for t, v in events.items() if not t.startswith("test/")} == _log(cfg.out)


def test_a_path_setting_writes_there_and_off_writes_nothing(config, tmp_path) -> None:
    cfg = config(samples=32, tensorboard=tmp_path / "events")
    pretrain(cfg, progress=False)
    assert _events(tmp_path / "events")["train/loss"] == _log(cfg.out)["train/loss"]
    assert not (cfg.out / "tb").exists()
    plain = config(samples=32, out=tmp_path / "plain")
    assert plain.tensorboard is False
    pretrain(plain, progress=False)
    assert not (plain.out / "tb").exists()


def test_tensorboard_is_not_part_of_the_run_identity(config) -> None:
    assert config(tensorboard=True).run_hash() == config().run_hash()
    pretrain(config(samples=32), progress=False)
    resumed = pretrain(config(samples=32, tensorboard=True), resume=True, progress=False)
    assert resumed.steps == 2  # the same run, continued (here: already finished)


def test_missing_package_is_one_line(config, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    cfg = config(samples=32, tensorboard=True)
    with pytest.raises(ConfigError, match=r"needs the tensorboard package: pip install") as info:
        pretrain(cfg, progress=False)
    assert "ecgscale[track]" in str(info.value) and "\n" not in str(info.value)
    assert not cfg.out.exists()  # refused before anything was written
