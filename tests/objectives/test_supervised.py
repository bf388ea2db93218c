"""Supervised objective: BCE against a hand computation, held-out loss and AUROC, and the loss
going down on synthetic and real (PTB-XL) records."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from ecgscale.errors import ConfigError
from ecgscale.models.base import Encoder
from ecgscale.objectives import ObjectiveBatch, ObjectiveContext, create_objective


class Flat(Encoder):
    """Mean of each lead: a fixed 12-dimensional representation."""

    embed_dim = 12

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(-1) * self.scale


def _objective(classes=("A", "B", "C")):
    torch.manual_seed(0)
    encoder = Flat()
    return encoder, create_objective(
        "sl", {}, ObjectiveContext(encoder, 100.0, 50, classes=classes)
    )


def test_loss_is_mean_binary_cross_entropy_and_evaluation_reports_macro_auroc() -> None:
    encoder, sl = _objective()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 12, 50, generator=g)
    y = (torch.rand(40, 3, generator=g) < 0.4).float()
    batch = ObjectiveBatch(x, y, np.arange(40))
    loss, _ = sl.loss(encoder, batch)
    z = sl.head(encoder(x)).detach().double()
    p = torch.sigmoid(z)
    expected = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    halves = [
        ObjectiveBatch(x[:25], y[:25], np.arange(25)),
        ObjectiveBatch(x[25:], y[25:], np.arange(25, 40)),
    ]
    metrics = sl.evaluate(encoder, halves)
    assert metrics["loss"] == pytest.approx(expected.item(), rel=1e-5)
    macro = np.mean([roc_auc_score(y[:, k], z[:, k]) for k in range(3)])
    assert metrics["auroc_macro"] == pytest.approx(macro)


def test_needs_labels_and_classes() -> None:
    encoder, sl = _objective()
    with pytest.raises(ConfigError, match="no labels"):
        sl.loss(encoder, ObjectiveBatch(torch.zeros(2, 12, 50), None, np.arange(2)))
    with pytest.raises(ConfigError, match="at least one class"):
        _objective(classes=())
    with pytest.raises(ConfigError, match="head_dropout"):
        create_objective("sl", {"head_dropout": 1.5}, ObjectiveContext(encoder, 100.0, 50, ("A",)))


def test_heldout_loss_goes_down_on_synthetic_records(train, synth_store) -> None:
    result = train(synth_store, "sl", label_set="code", epochs=3)
    assert result.best_val_loss < 0.8 * result.initial_metrics["loss"]
    assert result.best_metrics["auroc_macro"] > 0.7


def test_heldout_loss_goes_down_on_ptbxl(train, ptbxl_100hz_store) -> None:
    result = train(ptbxl_100hz_store, "sl", label_set="superdiagnostic", samples=640)
    assert result.steps == 20 and result.samples_seen == 640
    assert result.best_val_loss < 0.8 * result.initial_metrics["loss"]
