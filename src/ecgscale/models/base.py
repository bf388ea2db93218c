"""The encoder contract every model family follows.

An encoder maps a batch of ECGs `(batch, leads, samples)` (float32, mV) to a pooled representation
`(batch, embed_dim)` through `forward_features`. Heads (classification, projection) are separate
modules so that probes and objectives can replace them; N in every scaling fit counts the encoder's
parameters only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ecgscale.errors import UserError

if TYPE_CHECKING:
    from ecgscale.data.store import Store


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

    @torch.inference_mode()
    def embed(
        self,
        data: Store | np.ndarray | torch.Tensor,
        *,
        batch_size: int = 256,
        device: str | torch.device = "cpu",
    ) -> np.ndarray:
        """Float32 `(records, embed_dim)` embeddings, in eval mode, of every record of a store
        or of an array `(records, leads, samples)` in mV (at the rate the model was trained at)."""
        from ecgscale.data.store import Store
        from ecgscale.evaluate.embeddings import encode

        self.to(device)
        if isinstance(data, Store):
            return encode(self, data, np.arange(len(data)), batch_size, device=device)
        self.eval()
        x = torch.as_tensor(np.asarray(data, dtype=np.float32))
        if x.ndim != 3:
            raise UserError(f"embed: expected (records, leads, samples), got {tuple(x.shape)}")
        parts = [self.forward_features(b.to(device)).float().cpu() for b in x.split(batch_size)]
        return torch.cat(parts).numpy() if parts else np.empty((0, self.embed_dim), np.float32)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of `module`."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
