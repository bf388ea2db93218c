"""The trainer: SL on PTB-XL superdiagnostic beats chance clearly, same seed gives bitwise the same
losses, the budgets and the accounting (N, D, samples, FLOPs), the schedule, the metrics log, early
stopping and the errors of an impossible run."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from ecgscale.data.splits import nested_subset
from ecgscale.errors import ConfigError, UserError
from ecgscale.evaluate.metrics import auroc
from ecgscale.models.base import count_parameters
from ecgscale.models.flops import train_flops
from ecgscale.objectives import ObjectiveContext, create_objective
from ecgscale.train import TrainConfig, load_encoder, pretrain
from ecgscale.train.checkpoint import load_tensors, strip_prefix
from ecgscale.train.trainer import learning_rate


def _log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _losses(out) -> list[float]:
    return [r["loss"] for r in _log(out) if r["kind"] == "train"]


def test_sl_on_ptbxl_superdiagnostic_beats_chance_clearly(ptbxl_100hz_store, tmp_path) -> None:
    store = ptbxl_100hz_store
    config = TrainConfig(
        model="resnet",
        model_config={"width_multiplier": 0.125, "kernel_size": 9},
        objective="sl",
        label_set="superdiagnostic",
        data=store.path,
        out=tmp_path / "sl",
        batch_size=32,
        lr=3e-3,
        epochs=2,
    )
    result = pretrain(config, progress=False)
    assert result.initial_metrics["auroc_macro"] < 0.65  # an untrained network is near chance
    assert result.best_metrics["auroc_macro"] > 0.75  # validation fold 9
    # The best checkpoint on the untouched test fold (10), with the trained head.
    encoder = load_encoder(config.out).eval()
    tensors, _ = load_tensors(config.out / "best.safetensors")
    context = ObjectiveContext(
        encoder, store.fs, store.length, classes=tuple(store.label_sets["superdiagnostic"])
    )
    head = create_objective("sl", config.objective_options, context).eval()
    head.load_state_dict(strip_prefix("objective", tensors))
    test = store.split_indices("test")
    with torch.no_grad():
        logits = head.head(encoder.forward_features(torch.from_numpy(store.batch(test))))
    labels = store.labels("superdiagnostic")[test]
    assert auroc(labels, logits.numpy()).macro > 0.75


def test_same_seed_gives_bitwise_identical_losses_and_weights(config, tmp_path) -> None:
    first = pretrain(config(out=tmp_path / "a"), progress=False)
    second = pretrain(config(out=tmp_path / "b"), progress=False)
    other = pretrain(config(out=tmp_path / "c", seed=1), progress=False)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    assert _losses(tmp_path / "a") != _losses(tmp_path / "c")
    assert first.best_val_loss == second.best_val_loss != other.best_val_loss
    wa, _ = load_tensors(tmp_path / "a" / "last.safetensors")
    wb, _ = load_tensors(tmp_path / "b" / "last.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_samples_budget_and_accounting(config, small_store) -> None:
    result = pretrain(config(samples=70, data_fraction=0.5), progress=False)
    train_rows = small_store.split_indices("train")
    patients = small_store.meta["patient_id"].to_numpy()
    subset = nested_subset(patients, train_rows, 0.5, 0)
    assert result.records == len(subset) < len(train_rows)
    assert result.steps == 5 and result.samples_seen == 80  # rounded up to whole batches
    assert result.epochs == pytest.approx(80 / len(subset))
    encoder = load_encoder(result.out)
    assert result.params == count_parameters(encoder)
    assert result.flops_per_record == train_flops(encoder, 12, 1000)
    assert result.train_flops == result.flops_per_record * 80
    assert json.loads((config().out / "result.json").read_text())["samples_seen"] == 80
    # the ID loss of studies: the objective on the test split with the best weights
    assert set(result.test_metrics) >= {"loss"} and np.isfinite(result.test_metrics["loss"])
    assert result.test_metrics["loss"] != pytest.approx(result.best_val_loss, rel=1e-9)


def test_schedule_warms_up_linearly_then_decays_by_cosine(config) -> None:
    cfg = config(lr=1e-3, warmup_fraction=0.1, min_lr_ratio=0.1)
    lrs = [learning_rate(step, 100, cfg) for step in range(100)]
    assert lrs[:10] == pytest.approx([1e-3 * (k + 1) / 10 for k in range(10)])
    assert lrs[10] == pytest.approx(1e-3)
    assert lrs[55] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert learning_rate(100, 100, cfg) == pytest.approx(1e-4)


def test_metrics_log_has_a_line_per_step_and_per_validation(config) -> None:
    cfg = config(epochs=2, warmup_fraction=0.2)
    result = pretrain(cfg, progress=False)
    log = _log(cfg.out)
    train = [r for r in log if r["kind"] == "train"]
    val = [r for r in log if r["kind"] == "val"]
    assert [r["step"] for r in train] == list(range(1, result.steps + 1))
    steps_per_epoch = result.steps // 2
    assert [r["step"] for r in val] == [0, steps_per_epoch, 2 * steps_per_epoch]
    for r in train:
        assert r["lr"] == pytest.approx(learning_rate(r["step"] - 1, result.steps, cfg))
        assert r["samples_per_s"] > 0 and np.isfinite(r["loss"]) and r["grad_norm"] >= 0
    assert val[0]["loss"] == result.initial_metrics["loss"]
    assert min(v["loss"] for v in val[1:]) == result.best_val_loss


def test_early_stopping_after_patience_epochs_without_improvement(config) -> None:
    cfg = config(epochs=12, patience=2, lr=1.0, grad_clip=None, warmup_fraction=0.0)
    result = pretrain(cfg, progress=False)
    val = [r for r in _log(cfg.out) if r["kind"] == "val" and r["step"] > 0]
    assert result.stopped_early and len(val) < 12
    best = [r["step"] for r in val].index(result.best_step)
    assert len(val) - 1 - best == 2  # exactly `patience` validations after the best one
    assert all(r["loss"] >= result.best_val_loss for r in val[best + 1 :])


def test_impossible_runs_fail_with_a_clear_message(config, small_store) -> None:
    with pytest.raises(ConfigError, match=r"exceeds the \d+ training records"):
        pretrain(config(batch_size=1000), progress=False)
    with pytest.raises(ConfigError, match="needs --label-set"):
        pretrain(config(label_set=None), progress=False)
    with pytest.raises(UserError, match="no label set 'nope'"):
        pretrain(config(label_set="nope"), progress=False)
    pretrain(config(samples=16), progress=False)
    with pytest.raises(UserError, match="already holds a run"):
        pretrain(config(samples=16), progress=False)
    with pytest.raises(ConfigError, match="different configuration \\(lr differ"):
        pretrain(config(samples=16, lr=0.1), progress=False, resume=True)
    again = pretrain(config(samples=16, lr=0.1), progress=False, overwrite=True)
    assert again.steps == 1


def test_max_samples_caps_an_epochs_budget(config) -> None:
    capped = pretrain(config(epochs=50, max_samples=100), progress=False)
    assert capped.steps == 7 and capped.samples_seen == 112  # 100 rounded up to whole batches
    with pytest.raises(ConfigError, match="need an epochs budget"):
        config(samples=100, max_samples=50)


@pytest.mark.parametrize("objective", ["sl", "masked"])
def test_cached_beat_tokens_give_the_trajectory_of_per_batch_tokenization(
    config, tmp_path, monkeypatch, objective
) -> None:
    import ecgscale.train.trainer as trainer

    fields = {
        "model": "beat_transformer",
        "model_config": {"width": 16, "depth": 1, "heads": 2},
        "objective": objective,
        "samples": 48,
    }
    cached = pretrain(config(out=tmp_path / "cached", **fields), progress=False)
    monkeypatch.setattr(trainer, "encoder_tokens", lambda encoder, store: None)
    direct = pretrain(config(out=tmp_path / "direct", **fields), progress=False)
    assert _losses(tmp_path / "cached") == _losses(tmp_path / "direct")
    assert cached.best_val_loss == direct.best_val_loss


def test_val_every_validates_and_counts_patience_in_records(config) -> None:
    cfg = config(epochs=12)
    pretrain(cfg, progress=False)
    spe = [r["step"] for r in _log(cfg.out) if r["kind"] == "val"][1]  # steps per epoch
    cfg = config(epochs=12, val_every=3 * spe * 16 - 5)  # 16 records a step: every 3rd epoch
    pretrain(cfg, overwrite=True, progress=False)
    steps = [r["step"] for r in _log(cfg.out) if r["kind"] == "val"]
    assert steps == [0, *range(3 * spe, 12 * spe + 1, 3 * spe)]
