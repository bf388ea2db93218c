"""ID evaluation on the real PTB-XL store: an SL run is scored by its own head (equal to a direct
forward pass with the checkpoint's head), an SSL run by the probe on the source labels, both with
the probe and the pretext loss; a head that does not fit the label set is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ecgscale.errors import ConfigError
from ecgscale.evaluate.embeddings import embed
from ecgscale.evaluate.id_eval import evaluate_id, source_classes
from ecgscale.evaluate.metrics import auroc
from ecgscale.evaluate.probe import linear_probe
from ecgscale.train import TrainConfig, load_encoder, pretrain
from ecgscale.train.checkpoint import load_tensors, strip_prefix

TINY_RESNET = {"width_multiplier": 0.125, "kernel_size": 9}
GRID = [1e-2, 1e-1, 1.0]


def _train(store, out: Path, objective: str, **fields) -> Path:
    torch.set_num_threads(1)
    config = TrainConfig(
        model="resnet",
        model_config=TINY_RESNET,
        objective=objective,
        data=store.path,
        out=out,
        batch_size=32,
        samples=64,
        lr=3e-3,
        **fields,
    )
    pretrain(config, progress=False)
    return out


@pytest.fixture(scope="module")
def sl_run(ptbxl_100hz_store, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("id_sl")
    return _train(ptbxl_100hz_store, root / "sl", "sl", label_set="superdiagnostic")


def _best_val_loss(run: Path) -> float:
    return json.loads((run / "result.json").read_text())["best_val_loss"]


def test_sl_run_is_scored_by_its_own_head(sl_run: Path, ptbxl_100hz_store) -> None:
    store = ptbxl_100hz_store
    result = evaluate_id(sl_run, store, "superdiagnostic", c_grid=GRID)
    assert result.kind == "head"
    # The same quantity by hand: encoder forward pass on the test split, the checkpoint's head.
    test = store.split_indices("test")
    y = store.labels("superdiagnostic")[test].astype(np.float32)
    head = strip_prefix("objective.head.linear", load_tensors(sl_run / "best.safetensors")[0])
    with torch.no_grad():
        z = load_encoder(sl_run).eval().forward_features(torch.from_numpy(store.batch(test)))
        logits = z @ head["weight"].T + head["bias"]
    direct = float(F.binary_cross_entropy_with_logits(logits, torch.from_numpy(y)))
    assert result.loss == pytest.approx(direct, rel=1e-5)
    assert result.metrics["auroc"] == pytest.approx(auroc(y, logits.numpy()).macro, abs=1e-6)
    assert result.pretext_loss == pytest.approx(_best_val_loss(sl_run), rel=1e-12)
    # The probe on the same labels and splits, over the cached embeddings (which
    # test_embeddings checks against a direct forward pass).
    splits = [store.split_indices(s) for s in ("train", "val", "test")]
    probe = linear_probe(
        embed(sl_run, store), store.labels("superdiagnostic"), "multilabel", *splits, c_grid=GRID
    )
    assert result.probe_loss == probe.test_loss
    assert result.metrics["probe_auroc"] == probe.metrics["auroc"]


def test_ssl_run_is_scored_by_the_probe(ptbxl_100hz_store, tmp_path: Path) -> None:
    store = ptbxl_100hz_store
    run = _train(store, tmp_path / "cmsc", "cmsc")
    result = evaluate_id(run, store, "superdiagnostic", c_grid=GRID)
    assert result.kind == "probe"
    assert result.loss == result.probe_loss
    assert result.metrics["auroc"] == result.metrics["probe_auroc"] is not None
    assert result.pretext_loss == pytest.approx(_best_val_loss(run), rel=1e-12)
    # A probe on the source labels: below the loss of predicting every label's training rate.
    y = store.labels("superdiagnostic").astype(np.float64)
    rate = y[store.split_indices("train")].mean(axis=0)
    test = y[store.split_indices("test")]
    prior = -(test * np.log(rate) + (1 - test) * np.log1p(-rate)).mean()
    assert result.loss < prior


def test_source_classes_and_mismatched_heads(sl_run: Path, ptbxl_100hz_store) -> None:
    store = ptbxl_100hz_store
    # 'all' has statements without a training positive here: they must rank last, not first.
    counts = store.labels("all")[store.split_indices("train")].sum(axis=0).astype(int)
    names = store.label_sets["all"]
    assert (counts == 0).any()
    ranked = [counts[names.index(c)] for c in source_classes(store, "all", len(names))]
    assert ranked == sorted(counts, reverse=True)
    top3 = source_classes(store, "all", 3)
    assert [counts[names.index(c)] for c in top3] == sorted(counts, reverse=True)[:3]
    assert source_classes(store, "superdiagnostic", None) == store.label_sets["superdiagnostic"]
    with pytest.raises(ConfigError, match="SL head has 5 outputs but 'superdiagnostic' top 2"):
        evaluate_id(sl_run, store, "superdiagnostic", top_k=2, c_grid=GRID)
    with pytest.raises(ConfigError, match="no label set 'nope'"):
        evaluate_id(sl_run, store, "nope")
