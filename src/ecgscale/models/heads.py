"""Heads: small modules on top of an encoder's `(batch, embed_dim)` embedding, kept apart from the
encoder so that probes and objectives can replace them and N counts the encoder only."""

from __future__ import annotations

import torch
from torch import nn

from ecgscale.errors import ConfigError


class LinearHead(nn.Module):
    """Classification head: `(batch, embed_dim)` -> logits `(batch, num_classes)`, with optional
    dropout on the embedding."""

    def __init__(self, embed_dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim < 1 or num_classes < 1 or not 0 <= dropout < 1:
            raise ConfigError(
                "linear head: expected embed_dim, num_classes >= 1 and 0 <= dropout < 1, "
                f"got {embed_dim}, {num_classes}, {dropout}"
            )
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(embed_dim, num_classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(z))


class MLPProjectionHead(nn.Module):
    """Projection head of contrastive pre-training (SimCLR, Chen et al. 2020): `(batch, embed_dim)`
    -> [Linear -> BN -> ReLU] x (`layers` - 1) -> Linear -> `(batch, out_dim)`."""

    def __init__(
        self, embed_dim: int, hidden_dim: int = 512, out_dim: int = 128, layers: int = 2
    ) -> None:
        super().__init__()
        if min(embed_dim, hidden_dim, out_dim) < 1 or layers < 1:
            raise ConfigError(
                "projection head: expected embed_dim, hidden_dim, out_dim, layers >= 1, "
                f"got {embed_dim}, {hidden_dim}, {out_dim}, {layers}"
            )
        blocks: list[nn.Module] = []
        width = embed_dim
        for _ in range(layers - 1):
            blocks += [
                nn.Linear(width, hidden_dim, bias=False),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(inplace=True),
            ]
            width = hidden_dim
        blocks.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
