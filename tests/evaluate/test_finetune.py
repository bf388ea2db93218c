"""Fine-tuning on the real PTB-XL and Challenge 2021 stores: head-only and whole-encoder training
lower the test loss below the untrained head's (the training priors), same seed gives the same
result, the challenge score comes from the thresholded outputs, and the caller's random state is
left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ecgscale.data.prepare import prepare
from ecgscale.data.preprocess import PreprocessConfig
from ecgscale.errors import ConfigError
from ecgscale.evaluate.challenge2021 import (
    challenge_metrics,
    challenge_score,
    load_challenge_tables,
)
from ecgscale.evaluate.finetune import finetune, finetune_rows
from ecgscale.tasks import get_task
from ecgscale.train import TrainConfig, pretrain


@pytest.fixture(scope="module")
def run_dir(ptbxl_100hz_store, tmp_path_factory) -> Path:
    """A tiny SL ResNet (58K parameters) after two steps on PTB-XL superdiagnostic."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("finetune_run") / "sl"
    config = TrainConfig(
        model="resnet",
        model_config={"width_multiplier": 0.125, "kernel_size": 9},
        objective="sl",
        label_set="superdiagnostic",
        data=ptbxl_100hz_store.path,
        out=out,
        batch_size=32,
        samples=64,
        lr=3e-3,
    )
    pretrain(config, progress=False)
    return out


def _prior_loss(y: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    """Test BCE of predicting each label's Jeffreys-smoothed training rate."""
    p = (y[train].sum(axis=0) + 0.5) / (len(train) + 1.0)
    t = y[test]
    return float(-(t * np.log(p) + (1 - t) * np.log1p(-p)).mean())


def test_head_finetuning_lowers_the_loss_and_reports_auroc(
    run_dir: Path, ptbxl_100hz_store
) -> None:
    store = ptbxl_100hz_store
    result = finetune(
        run_dir, "ptbxl_superdiagnostic", store, mode="head", steps=150, eval_every=50
    )
    data = get_task("ptbxl_superdiagnostic").load(store)
    assert result.initial_test_loss == pytest.approx(
        _prior_loss(data.y, data.train, data.test), rel=1e-6
    )
    assert result.test_loss < result.initial_test_loss - 0.03
    assert result.metrics["auroc"] > 0.65
    assert [step for step, _ in result.val_checks] == [0, 50, 100, 150]
    losses = dict(result.val_checks)
    assert result.val_loss == min(losses.values()) == losses[result.best_step]
    assert (result.n_train, result.n_val, result.n_test) == tuple(
        map(len, (data.train, data.val, data.test))
    )
    rows = {(r["metric"], r["class"]): r["value"] for r in finetune_rows("m", result)}
    assert rows[("loss", "")] == result.test_loss
    assert rows[("initial_loss", "")] == result.initial_test_loss
    assert rows[("auroc", "NORM")] == result.per_class["auroc"][data.classes.index("NORM")]


def test_full_finetuning_is_deterministic_and_lowers_the_loss(
    run_dir: Path, ptbxl_100hz_store
) -> None:
    store = ptbxl_100hz_store
    before = torch.get_rng_state()
    options = dict(mode="full", steps=6, batch_size=32, lr=3e-3)
    first = finetune(run_dir, "ptbxl_superdiagnostic", store, seed=0, **options)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator is untouched
    again = finetune(run_dir, "ptbxl_superdiagnostic", store, seed=0, **options)
    other = finetune(run_dir, "ptbxl_superdiagnostic", store, seed=1, **options)
    assert again == first
    np.testing.assert_array_equal(again.test_outputs, first.test_outputs)
    assert other.train_losses != first.train_losses
    assert len(first.train_losses) == 6 and first.best_step == 6
    for result in (first, other):
        assert result.test_loss < result.initial_test_loss
        assert result.metrics["auroc"] is not None


def test_regression_target_is_standardised(run_dir: Path, ptbxl_100hz_store) -> None:
    result = finetune(run_dir, "ptbxl_age", ptbxl_100hz_store, mode="head", steps=100)
    data = get_task("ptbxl_age").load(ptbxl_100hz_store)
    age = data.y.astype(np.float64)
    standard = (age[data.test] - age[data.train].mean()) / age[data.train].std()
    # The untrained head predicts the training mean: its loss is the standardised test MSE.
    assert result.initial_test_loss == pytest.approx(float((standard**2).mean()), rel=1e-6)
    assert result.test_loss < result.initial_test_loss
    pred = result.test_outputs[:, 0]
    assert result.metrics["mae"] == pytest.approx(np.abs(pred - age[data.test]).mean(), rel=1e-9)
    assert result.metrics["r2"] > 0


def test_challenge_score_of_the_thresholded_outputs(
    run_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    scoring = shared_data / "physionet2021_scoring"
    store = prepare(
        "physionet2021",
        shared_data / "cinc2021",
        tmp_path / "cinc",
        PreprocessConfig(fs=100, length=1000),
        scoring=scoring,
    )
    result = finetune(run_dir, "physionet2021", store, mode="head", steps=30, scoring=scoring)
    data = get_task("physionet2021").load(store)
    tables = load_challenge_tables(scoring)
    # Labels from each record's raw SNOMED-CT codes, outputs from the task's class columns.
    codes = store.meta["dx"].to_numpy()[data.rows[data.test]]
    labels = tables.encode_labels([c.split(",") for c in codes])
    decisions = result.test_outputs >= np.asarray(result.thresholds)
    outputs, scores = tables.encode_outputs(
        list(result.label_names), decisions, result.test_outputs
    )
    assert result.metrics["challenge"] == pytest.approx(challenge_score(tables, labels, outputs))
    # the other official scores, over all 26 scored classes (not only the task's kept classes)
    official = challenge_metrics(tables, labels, outputs, scores)
    assert official.f_measure_per_class.shape == (26,) and len(result.label_names) < 26
    for name, value in official.scores().items():
        assert result.metrics[name] == pytest.approx(value), name


def test_bad_options_fail_in_one_line(run_dir: Path, ptbxl_100hz_store) -> None:
    with pytest.raises(ConfigError, match="mode 'linear'"):
        finetune(run_dir, "ptbxl_sex", ptbxl_100hz_store, mode="linear")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="steps=0"):
        finetune(run_dir, "ptbxl_sex", ptbxl_100hz_store, steps=0)


def test_finetuned_run_is_saved_and_reloads_to_the_same_outputs(
    run_dir: Path, ptbxl_100hz_store, tmp_path: Path
) -> None:
    from ecgscale.evaluate.embeddings import embed
    from ecgscale.evaluate.sources import ModelSource
    from ecgscale.train.checkpoint import load_tensors, strip_prefix

    store = ptbxl_100hz_store
    saved = tmp_path / "ft"
    options = dict(mode="full", steps=4, batch_size=32, lr=3e-3)
    result = finetune(run_dir, "ptbxl_superdiagnostic", store, run_out=saved, **options)
    tensors, meta = load_tensors(saved / "best.safetensors")
    assert meta["finetune"]["source"] == str(run_dir) and meta["finetune"]["steps"] == 4
    assert ModelSource.of(saved).trained_fs == store.fs  # still an ecgscale run
    # The saved encoder + head reproduce the reported test probabilities.
    data = get_task("ptbxl_superdiagnostic").load(store)
    z = np.asarray(embed(saved, store))[data.rows[data.test]]
    head = strip_prefix("head", tensors)
    logits = ((z - head["mean"].numpy()) / head["scale"].numpy()) @ head[
        "linear.weight"
    ].numpy().T + head["linear.bias"].numpy()
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), result.test_outputs, atol=2e-5)
    before = np.asarray(embed(run_dir, store))[data.rows[data.test]]
    assert not np.allclose(before, z)  # the encoder's weights were trained, and saved
    # ... and the saved run fine-tunes again like any run.
    again = finetune(saved, "ptbxl_superdiagnostic", store, mode="head", steps=5)
    assert again.test_loss < again.initial_test_loss


def test_label_fraction_trains_on_the_probe_protocols_subset(
    run_dir: Path, ptbxl_100hz_store
) -> None:
    from ecgscale.evaluate.probe import fraction_subsets

    store = ptbxl_100hz_store
    result = finetune(
        run_dir, "ptbxl_superdiagnostic", store, mode="head", steps=20, fraction=0.1, draw=1
    )
    data = get_task("ptbxl_superdiagnostic").load(store)
    subsets = fraction_subsets(data.y, data.kind, data.train, fractions=[0.1], draws=2, seed=0)
    assert result.n_train == len(subsets[1][2]) == round(0.1 * len(data.train))
    other = finetune(
        run_dir, "ptbxl_superdiagnostic", store, mode="head", steps=20, fraction=0.1, draw=0
    )
    assert other.train_losses != result.train_losses  # another draw, other records
