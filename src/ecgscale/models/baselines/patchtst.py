"""PatchTST-style channel-independent patch transformer (Nie et al. 2023) for ECG records.

Source: Nie et al., "A time series is worth 64 words", ICLR 2023.

Each lead is cut into patches of `patch_len` samples every `stride` samples (after repeating the
last sample `stride` times at the end, as PatchTST does) and handled as its own sequence by one
shared transformer (channel independence): patches -> linear embedding + sinusoidal positions ->
`depth` pre-LayerNorm blocks (multi-head self-attention, GELU MLP of `mlp_ratio` x width) ->
LayerNorm -> mean over patches. The embedding concatenates the leads' vectors, in lead order, so
that the lead identity that the shared transformer never sees is kept: `embed_dim` = leads x
`d_model`. Positions are sinusoidal (not PatchTST's learned table) so that any input length works.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ecgscale.errors import ConfigError
from ecgscale.models.base import Encoder
from ecgscale.models.flops import cached_ladder, cube_root_depth, meta_param_count, width_ladder
from ecgscale.models.layers import check_waveform
from ecgscale.models.registry import LadderPoint, register_model


def sinusoidal_positions(n: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """`(n, dim)` fixed sine/cosine position codes (Vaswani et al. 2017)."""
    position = torch.arange(n, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim)
    )
    codes = torch.zeros(n, dim, device=device)
    codes[:, 0::2] = torch.sin(position * freq)
    codes[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return codes


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attention(LN(x)), then x + MLP(LN(x)); `(batch, tokens, dim)`."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"transformer: width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = max(1, round(dim * mlp_ratio))
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(self.norm1(x)).view(batch, tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        attn = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(batch, tokens, dim)))
        return x + self.drop(self.mlp(self.norm2(x)))


class PatchTST(Encoder):
    """Channel-independent patch transformer: `(batch, leads, samples)` ->
    `(batch, leads x d_model)`."""

    def __init__(
        self,
        leads: int = 12,
        patch_len: int = 64,
        stride: int = 32,
        d_model: int = 128,
        depth: int = 3,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if min(patch_len, stride, d_model, depth, heads) < 1 or mlp_ratio <= 0:
            raise ConfigError(
                "patchtst: expected patch_len, stride, d_model, depth, heads >= 1 and mlp_ratio "
                f"> 0, got {patch_len}, {stride}, {d_model}, {depth}, {heads}, {mlp_ratio}"
            )
        self.leads, self.patch_len, self.stride, self.d_model = leads, patch_len, stride, d_model
        self.patch_embed = nn.Linear(patch_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *(TransformerBlock(d_model, heads, mlp_ratio, dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(d_model)
        self.embed_dim = leads * d_model

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_waveform(x, self.leads, max(1, self.patch_len - self.stride), "patchtst")
        batch = x.shape[0]
        x = torch.cat([x, x[..., -1:].expand(-1, -1, self.stride)], dim=-1)
        patches = x.unfold(-1, self.patch_len, self.stride)  # (batch, leads, n, patch_len)
        n = patches.shape[2]
        tokens = self.patch_embed(patches.reshape(batch * self.leads, n, self.patch_len))
        tokens = self.drop(tokens + sinusoidal_positions(n, self.d_model, tokens.device))
        pooled = self.norm(self.blocks(tokens)).mean(dim=1)  # (batch x leads, d_model)
        return pooled.reshape(batch, self.leads * self.d_model)


def patchtst(**config: Any) -> PatchTST:
    """Factory of `PatchTST` (keyword arguments as its constructor)."""
    return PatchTST(**config)


@functools.cache
def _reference_params() -> int:
    return meta_param_count(patchtst, {})


HEAD_WIDTH = 64  # target width per attention head along the ladder


def _ladder_config(target: int, x: float) -> dict[str, Any]:
    depth = cube_root_depth(target, _reference_params(), 3, 1, 48)
    heads = max(1, round(x / HEAD_WIDTH))
    return {"d_model": heads * max(1, round(x / heads)), "depth": depth, "heads": heads}


@cached_ladder
def patchtst_ladder(targets: tuple[int, ...] | None = None) -> list[LadderPoint]:
    """PatchTST sizes from 20K to 200M parameters.

    Rule: depth = round(3 (N / N_ref)^(1/3)) blocks (at least 1), N_ref being PatchTST's default
    (3 blocks of width 128, MLP 256: 0.4M parameters), so that depth and width both grow as
    N^(1/3); heads = round(width / 64) (at least 1) and the width, a multiple of the heads, is
    solved for the target N.
    """
    count = functools.partial(meta_param_count, patchtst)
    return width_ladder("patchtst", count, _ladder_config, bounds=(1.0, 16384.0), targets=targets)


register_model("patchtst", ladder=patchtst_ladder, default_fs=400.0, default_length=4096)(patchtst)
