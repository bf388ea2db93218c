"""Masked beat modelling: the mask covers about half of the real tokens and never padding, padded
words cannot change the loss, only beat-token encoders pair with it, and the held-out
reconstruction error goes down on synthetic and real (PTB-XL) records."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ecgscale.errors import ConfigError
from ecgscale.models.registry import create_model
from ecgscale.objectives import ObjectiveBatch, ObjectiveContext, create_objective
from ecgscale.objectives.masked_beats import choose_mask
from ecgscale.train import TrainConfig

TINY_BEATS = {"width": 32, "depth": 2, "heads": 2}


def _setup(**options):
    torch.manual_seed(0)
    encoder = create_model("beat_transformer", **TINY_BEATS)
    context = ObjectiveContext(encoder, fs=100.0, length=1000)
    return encoder, create_objective("masked", options, context)


def _records(store, rows) -> tuple[np.ndarray, ObjectiveBatch]:
    x = store.batch(rows)
    return x, ObjectiveBatch(torch.from_numpy(x), None, np.asarray(rows), seed=(0, 0, 3))


def test_mask_takes_half_of_the_real_tokens_and_never_padding(synth_store) -> None:
    encoder, _ = _setup()
    tokens = encoder.tokenize(synth_store.batch(np.arange(16)))
    real = tokens.valid.sum(axis=1)
    assert len(set(real.tolist())) > 1  # sentences of different lengths: padding in the batch
    draws = np.random.default_rng(0).random(tokens.valid.shape)
    mask = choose_mask(tokens, draws, 0.5, "token")
    assert not (mask & ~tokens.valid).any()
    assert np.array_equal(mask.sum(axis=1), np.maximum(1, np.round(0.5 * real)))
    beat = choose_mask(tokens, draws, 0.5, "beat")
    assert not (beat & ~tokens.valid).any()
    for i in range(16):  # every lead of a chosen beat is masked, and half of the beats are
        b = int(tokens.beats[i])
        per_lead = beat[i, : 12 * b].reshape(12, b)
        assert (per_lead == per_lead[:1]).all()
        assert per_lead[0].sum() == max(1, round(0.5 * b))


def test_padding_is_never_scored(synth_store) -> None:
    encoder, masked = _setup()
    _, batch = _records(synth_store, np.arange(8))
    tokens = encoder.tokenize(batch.x)
    assert (~tokens.valid[:, : tokens.valid.sum(1).max()]).any()
    loss, metrics = masked.token_loss(encoder, tokens, batch)
    assert metrics["masked_fraction"] == pytest.approx(0.5, abs=0.01)
    words = tokens.words.copy()
    noise = np.random.default_rng(1).normal(0, 100.0, words.shape).astype(np.float32)
    words[~tokens.valid] = noise[~tokens.valid]  # change every padded target
    changed, _ = masked.token_loss(encoder, dataclasses.replace(tokens, words=words), batch)
    assert changed.item() == pytest.approx(loss.item(), rel=1e-6)
    words[tokens.valid] += 1.0  # while a change of the real words does change it
    moved, _ = masked.token_loss(encoder, dataclasses.replace(tokens, words=words), batch)
    assert abs(moved.item() - loss.item()) > 0.1


def test_only_beat_token_encoders_pair_with_masked_modelling() -> None:
    with pytest.raises(ConfigError, match="objective 'masked' trains encoders of input kind beats"):
        TrainConfig(model="resnet", objective="masked", data="s", out="o", epochs=1)
    TrainConfig(model="beat_transformer", objective="masked", data="s", out="o", epochs=1)
    with pytest.raises(ConfigError, match="mask_unit"):
        TrainConfig(
            model="beat_transformer",
            objective="masked",
            objective_options={"mask_unit": "lead"},
            data="s",
            out="o",
            epochs=1,
        )


@pytest.mark.parametrize("which", ["synthetic", "ptbxl"])
def test_heldout_reconstruction_error_goes_down(which, train, synth_store, request) -> None:
    store = synth_store if which == "synthetic" else request.getfixturevalue("ptbxl_100hz_store")
    result = train(
        store,
        "masked",
        model="beat_transformer",
        model_config=TINY_BEATS,
        samples=640,
        data_fraction=1.0 if which == "synthetic" else 0.5,
    )
    # The reconstruction head starts at zero: the untrained model predicts silence (nmse 1).
    assert result.initial_metrics["nmse"] == pytest.approx(1.0)
    assert result.best_val_loss < 0.85 * result.initial_metrics["loss"]
    assert result.best_metrics["nmse"] < 0.85
