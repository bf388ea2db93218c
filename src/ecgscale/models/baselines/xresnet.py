"""xresnet1d101-style CNN: the fastai "bag of tricks" ResNet (He et al. 2019) in 1-D.

The PTB-XL benchmark (Strodthoff et al. 2021, IEEE JBHI) found it one of its two strongest models.

Stem: three conv(kernel 5)-BN-ReLU layers with 32, 32, 64 channels, the first of stride 2, then a
max-pool (3, stride 2). Body: four stages of bottleneck blocks (expansion 4; `layers` blocks per
stage, (3, 4, 23, 3) for the 101-layer network) with inner widths 64, 128, 256, 512 and strides 1,
2, 2, 2. A block: 1x1 conv -> conv(kernel 5, stride) -> 1x1 conv, each with BN (the last BN's scale
starts at zero, so every block starts as the identity) and ReLU but the last; the skip is an
average pool (2, ceil mode) where the stride is 2, then a 1x1 conv + BN where the width changes;
ReLU after the sum. Every width (stem included) is multiplied by `widen`. The embedding is the
global average over time (`embed_dim` = 4 x 512 x `widen`); the benchmark's concat-pooling head is
a head.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from ecgscale.errors import ConfigError
from ecgscale.models.base import Encoder
from ecgscale.models.flops import cached_ladder, meta_param_count, width_ladder
from ecgscale.models.layers import (
    ConvBNAct,
    check_odd_kernel,
    check_positive,
    check_waveform,
    kaiming_init_,
)
from ecgscale.models.registry import LadderPoint, register_model

STEM_WIDTHS = (32, 32, 64)
STAGE_WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
XRESNET101_LAYERS = (3, 4, 23, 3)


class BottleneckBlock(nn.Module):
    """`(batch, c_in, n)` -> `(batch, c_out, ceil(n / stride))`, see the module docstring."""

    def __init__(self, c_in: int, inner: int, c_out: int, stride: int, kernel_size: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            ConvBNAct(c_in, inner, 1),
            ConvBNAct(inner, inner, kernel_size, stride),
            ConvBNAct(inner, c_out, 1, act=False),
        )
        last_bn = self.convs[-1][1]
        assert isinstance(last_bn, nn.BatchNorm1d)
        nn.init.zeros_(last_bn.weight)
        skip: list[nn.Module] = []
        if stride > 1:
            skip.append(nn.AvgPool1d(stride, ceil_mode=True))
        if c_in != c_out:
            skip.append(ConvBNAct(c_in, c_out, 1, act=False))
        self.skip = nn.Sequential(*skip)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.convs(x) + self.skip(x))


class XResNet1d(Encoder):
    """xresnet1d; `forward_features`: `(batch, leads, samples)` -> `(batch, embed_dim)`."""

    def __init__(
        self,
        leads: int = 12,
        layers: tuple[int, ...] | list[int] = XRESNET101_LAYERS,
        widen: float = 1.0,
        kernel_size: int = 5,
        stem_kernel_size: int = 5,
    ) -> None:
        super().__init__()
        check_positive(widen, "xresnet1d widen")
        check_odd_kernel(kernel_size, "xresnet1d kernel_size")
        check_odd_kernel(stem_kernel_size, "xresnet1d stem_kernel_size")
        if len(layers) != len(STAGE_WIDTHS) or min(layers) < 1:
            raise ConfigError(f"xresnet1d: expected 4 stages of >= 1 blocks, got layers={layers}")

        def scaled(width: int) -> int:
            return max(1, round(width * widen))

        self.leads = leads
        stem = [scaled(w) for w in STEM_WIDTHS]
        self.stem = nn.Sequential(
            ConvBNAct(leads, stem[0], stem_kernel_size, stride=2),
            ConvBNAct(stem[0], stem[1], stem_kernel_size),
            ConvBNAct(stem[1], stem[2], stem_kernel_size),
            nn.MaxPool1d(3, 2, padding=1),
        )
        blocks: list[nn.Module] = []
        c_in = stem[2]
        for stage, (width, n_blocks) in enumerate(zip(STAGE_WIDTHS, layers, strict=True)):
            inner, c_out = scaled(width), scaled(width) * EXPANSION
            for i in range(n_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BottleneckBlock(c_in, inner, c_out, stride, kernel_size))
                c_in = c_out
        self.body = nn.Sequential(*blocks)
        self.embed_dim = c_in
        kaiming_init_(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_waveform(x, self.leads, 1, "xresnet1d")
        return self.body(self.stem(x)).mean(dim=-1)


def xresnet1d(**config: Any) -> XResNet1d:
    """Factory of `XResNet1d` (keyword arguments as its constructor); defaults: xresnet1d101."""
    return XResNet1d(**config)


@functools.cache
def _reference_params() -> int:
    return meta_param_count(xresnet1d, {})


def _ladder_config(target: int, x: float) -> dict[str, Any]:
    scale = (target / _reference_params()) ** (1.0 / 3.0)
    layers = [max(1, round(n * scale)) for n in XRESNET101_LAYERS]
    return {"layers": layers, "widen": x}


@cached_ladder
def xresnet_ladder(targets: tuple[int, ...] | None = None) -> list[LadderPoint]:
    """xresnet1d sizes from 20K to 200M parameters.

    Rule: blocks per stage = round((3, 4, 23, 3) x (N / N_101)^(1/3)) (at least 1), N_101 = 33.0M
    being xresnet1d101's count, so that depth and width both grow as N^(1/3); `widen` is solved for
    the target N.
    """
    count = functools.partial(meta_param_count, xresnet1d)
    return width_ladder("xresnet1d", count, _ladder_config, bounds=(0.01, 20.0), targets=targets)


register_model("xresnet1d", ladder=xresnet_ladder, default_fs=100.0, default_length=1000)(xresnet1d)
