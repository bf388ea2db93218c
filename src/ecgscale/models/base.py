"""The encoder contract every model family follows.

An encoder maps a batch of ECGs `(batch, leads, samples)` (float32, mV) to a pooled representation
`(batch, embed_dim)` through `forward_features`. Heads (classification, projection) are separate
modules so that probes and objectives can replace them; N in every scaling fit counts the encoder's
parameters only.
"""

from __future__ import annotations

import torch
from torch import nn


class Encoder(nn.Module):
    """Base class of all encoders.

    Attributes:
        embed_dim: size of the pooled representation returned by `forward_features`.
        input_kind: "waveform" for models that read raw samples; "beats" for beat-token models,
            which tokenize the waveform themselves (see `ecgscale.models.beats`).
    """

    embed_dim: int
    input_kind: str = "waveform"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """`(batch, leads, samples)` -> `(batch, embed_dim)`."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of `module`."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
