"""Heads are separate modules on the `(batch, embed_dim)` embedding."""

from __future__ import annotations

import pytest
import torch

from ecgscale.errors import ConfigError
from ecgscale.models.base import count_parameters
from ecgscale.models.heads import LinearHead, MLPProjectionHead
from ecgscale.models.registry import create_model


def test_linear_head_on_an_encoder() -> None:
    encoder = create_model("resnet", width_multiplier=0.1).eval()
    head = LinearHead(encoder.embed_dim, 6)
    assert count_parameters(head) == encoder.embed_dim * 6 + 6
    with torch.no_grad():
        logits = head(encoder.forward_features(torch.randn(3, 12, 512)))
    assert logits.shape == (3, 6)


def test_projection_head_layers() -> None:
    head = MLPProjectionHead(64, hidden_dim=32, out_dim=8, layers=3).train()
    assert head(torch.randn(4, 64)).shape == (4, 8)
    linears = [m for m in head.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 32), (32, 8)]
    assert MLPProjectionHead(64, out_dim=8, layers=1)(torch.randn(2, 64)).shape == (2, 8)


@pytest.mark.parametrize("bad", [{"num_classes": 0}, {"dropout": 1.5}])
def test_bad_head_is_a_config_error(bad: dict) -> None:
    with pytest.raises(ConfigError):
        LinearHead(**({"embed_dim": 8, "num_classes": 2} | bad))
