"""InceptionTime (Ismail Fawaz et al. 2020) as `inception1d` of the PTB-XL benchmark.

The PTB-XL benchmark (Strodthoff et al. 2021, IEEE JBHI) found it one of its two strongest models.

A module: 1x1 bottleneck conv (`bottleneck_size` channels) -> three parallel convs with kernels
`kernel_size` - 1, `kernel_size` // 2 - 1, `kernel_size` // 4 - 1 (odd, 39/19/9 for 40), each with
`filters` channels, concatenated with a max-pool(3) -> 1x1 conv (`filters`) branch of the module's
input -> BN -> ReLU; output 4 x `filters` channels. Every third module closes a residual shortcut
(1x1 conv + BN of the shortcut's input, added, ReLU). No convolution has a bias. The embedding is
the global average over time (`embed_dim` = 4 x `filters`); the benchmark's concat-pooling head is a
head, not part of the encoder.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from ecgscale.errors import ConfigError
from ecgscale.models.base import Encoder
from ecgscale.models.flops import cached_ladder, cube_root_depth, meta_param_count, width_ladder
from ecgscale.models.layers import check_waveform
from ecgscale.models.registry import LadderPoint, register_model

BRANCHES = 4  # three convolutions and the pooling branch


def _conv(c_in: int, c_out: int, kernel_size: int) -> nn.Conv1d:
    return nn.Conv1d(c_in, c_out, kernel_size, padding=(kernel_size - 1) // 2, bias=False)


class InceptionModule(nn.Module):
    """`(batch, c_in, samples)` -> `(batch, 4 filters, samples)`."""

    def __init__(self, c_in: int, filters: int, bottleneck: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        self.bottleneck = _conv(c_in, bottleneck, 1)
        self.convs = nn.ModuleList(_conv(bottleneck, filters, k) for k in kernels)
        self.pool_branch = nn.Sequential(nn.MaxPool1d(3, 1, padding=1), _conv(c_in, filters, 1))
        self.bn_relu = nn.Sequential(nn.BatchNorm1d(len(kernels) * filters + filters), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bottled = self.bottleneck(x)
        branches = [conv(bottled) for conv in self.convs] + [self.pool_branch(x)]
        return self.bn_relu(torch.cat(branches, dim=1))


class InceptionTime(Encoder):
    """InceptionTime; `forward_features`: `(batch, leads, samples)` -> `(batch, 4 filters)`."""

    def __init__(
        self,
        leads: int = 12,
        filters: int = 32,
        bottleneck_size: int = 32,
        depth: int = 6,
        kernel_size: int = 40,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if min(filters, bottleneck_size, depth) < 1 or kernel_size < 8:
            raise ConfigError(
                "inception_time: expected filters, bottleneck_size, depth >= 1 and "
                f"kernel_size >= 8, got {filters}, {bottleneck_size}, {depth}, {kernel_size}"
            )
        kernels = tuple(
            k - 1 if k % 2 == 0 else k for k in (kernel_size, kernel_size // 2, kernel_size // 4)
        )
        width = BRANCHES * filters
        self.leads = leads
        self.residual = residual
        self.modules_ = nn.ModuleList(
            InceptionModule(leads if d == 0 else width, filters, bottleneck_size, kernels)
            for d in range(depth)
        )
        self.shortcuts = nn.ModuleList(
            nn.Sequential(_conv(leads if s == 0 else width, width, 1), nn.BatchNorm1d(width))
            for s in range(depth // 3 if residual else 0)
        )
        self.relu = nn.ReLU()
        self.embed_dim = width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_waveform(x, self.leads, 1, "inception_time")
        shortcut_input = x
        for d, module in enumerate(self.modules_):
            x = module(x)
            if self.residual and d % 3 == 2:
                x = self.relu(x + self.shortcuts[d // 3](shortcut_input))
                shortcut_input = x
        return x.mean(dim=-1)


def inception_time(**config: Any) -> InceptionTime:
    """Factory of `InceptionTime` (keyword arguments as its constructor)."""
    return InceptionTime(**config)


@functools.cache
def _reference_params() -> int:
    return meta_param_count(inception_time, {})


def _ladder_config(target: int, x: float) -> dict[str, Any]:
    depth = 3 * cube_root_depth(target, _reference_params(), 2, 1, 16)
    return {"filters": int(x), "bottleneck_size": int(x), "depth": depth}


@cached_ladder
def inception_ladder(targets: tuple[int, ...] | None = None) -> list[LadderPoint]:
    """InceptionTime sizes from 20K to 200M parameters.

    Rule: depth = 3 x round(2 (N / N_ref)^(1/3)) modules (at least 3), N_ref being the benchmark's
    network (6 modules, 32 filters, 0.47M parameters); filters = bottleneck size = the width solved
    for the target N.
    """
    count = functools.partial(meta_param_count, inception_time)
    return width_ladder(
        "inception_time", count, _ladder_config, bounds=(1, 4096), integer=True, targets=targets
    )


register_model("inception_time", ladder=inception_ladder, default_fs=100.0, default_length=1000)(
    inception_time
)
