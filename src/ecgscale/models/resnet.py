"""Ribeiro et al. 2020 residual ECG CNN, with a width multiplier and extra blocks per stage.

Source: "Automatic diagnosis of the 12-lead ECG using a deep neural network", Nat. Commun. 11:1760.

Architecture (12 x 4096 at 400 Hz in the paper): a stem conv (kernel 17, 64 channels) with BN and
ReLU, then four stages of pre-activation residual units. A unit takes the pair (x, y) of the
activated output and the pre-activation sum of the previous unit:

    x -> conv(k) -> BN -> ReLU -> dropout -> conv(k, stride s) -> (+ skip(y)) = y' -> BN -> ReLU
    -> dropout = x'

with skip(y) = max-pool(s) then a 1x1 conv where the width changes. The first unit of each stage
has stride 4 (the length shrinks 4x per stage, 4096 -> 16); widths: 64, 128, 196, 256, 320;
`extra_blocks` further units of stride 1 per stage add depth. Widths are the paper's times
`width_multiplier`. The embedding is the global average over time of the last x (`pool="avg"`, any
input length) or, as in the paper's head, the flattened last feature map (`pool="flatten"`, which
fixes the input length to `input_length`). Dropout 0.2 as in the paper (keep probability 0.8).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Literal

import torch
from torch import nn

from ecgscale.errors import ConfigError
from ecgscale.models.base import Encoder
from ecgscale.models.flops import cached_ladder, cube_root_depth, meta_param_count, width_ladder
from ecgscale.models.layers import (
    ConvBNAct,
    check_odd_kernel,
    check_positive,
    check_waveform,
    kaiming_init_,
)
from ecgscale.models.registry import LadderPoint, register_model

BASE_WIDTHS = (64, 128, 196, 256, 320)  # stem, then the output width of each of the four stages
DOWNSAMPLE = 4  # per stage


class ResidualUnit(nn.Module):
    """One pre-activation unit; `forward((x, y)) -> (x', y')`, see the module docstring."""

    def __init__(
        self, c_in: int, c_out: int, stride: int, kernel_size: int, dropout: float
    ) -> None:
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel_size, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel_size, stride=stride, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.dropout = nn.Dropout(dropout)
        self.relu = nn.ReLU(inplace=True)
        skip: list[nn.Module] = []
        if stride > 1:  # ceil_mode: ceil(n / s) samples, as the strided 'same' conv gives
            skip.append(nn.MaxPool1d(stride, stride, ceil_mode=True))
        if c_in != c_out:
            skip.append(nn.Conv1d(c_in, c_out, 1, bias=False))
        self.skip = nn.Sequential(*skip)

    def forward(self, xy: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = xy
        x = self.dropout(self.relu(self.bn1(self.conv1(x))))
        y = self.conv2(x) + self.skip(y)
        return self.dropout(self.relu(self.bn2(y))), y


class RibeiroResNet(Encoder):
    """Ribeiro et al.'s ResNet: `(batch, leads, samples)` -> `(batch, embed_dim)`."""

    def __init__(
        self,
        leads: int = 12,
        width_multiplier: float = 1.0,
        extra_blocks: int = 0,
        kernel_size: int = 17,
        dropout: float = 0.2,
        pool: Literal["avg", "flatten"] = "avg",
        input_length: int = 4096,
    ) -> None:
        super().__init__()
        check_positive(width_multiplier, "resnet width_multiplier")
        check_odd_kernel(kernel_size, "resnet kernel_size")
        if extra_blocks < 0 or not 0 <= dropout < 1 or pool not in ("avg", "flatten"):
            raise ConfigError(
                "resnet: expected extra_blocks >= 0, 0 <= dropout < 1 and pool in {avg, flatten}, "
                f"got {extra_blocks}, {dropout}, {pool!r}"
            )
        widths = [max(1, round(w * width_multiplier)) for w in BASE_WIDTHS]
        self.leads = leads
        self.pool = pool
        self.stem = ConvBNAct(leads, widths[0], kernel_size)
        units: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(widths):
            units.append(ResidualUnit(c_in, c_out, DOWNSAMPLE, kernel_size, dropout))
            units += [
                ResidualUnit(c_out, c_out, 1, kernel_size, dropout) for _ in range(extra_blocks)
            ]
        self.units = nn.Sequential(*units)
        stages = len(BASE_WIDTHS) - 1
        self.out_length = math.ceil(input_length / DOWNSAMPLE**stages)
        self.embed_dim = widths[-1] * (self.out_length if pool == "flatten" else 1)
        kaiming_init_(self)  # he_normal, as in the paper's Keras code

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_waveform(x, self.leads, 1, "resnet")
        x = self.stem(x)
        x, _ = self.units((x, x))
        if self.pool == "avg":
            return x.mean(dim=-1)
        if x.shape[-1] != self.out_length:
            raise ConfigError(
                f"model 'resnet' with pool='flatten' was built for {self.out_length} output "
                f"samples (input_length); got an input giving {x.shape[-1]}"
            )
        return x.flatten(1)


def resnet(**config: Any) -> RibeiroResNet:
    """Factory of `RibeiroResNet` (keyword arguments as its constructor)."""
    return RibeiroResNet(**config)


def _ladder_config(target: int, x: float) -> dict[str, Any]:
    blocks = cube_root_depth(target, _reference_params(), 1, 1, 8)
    return {"width_multiplier": x, "extra_blocks": blocks - 1}


@functools.cache
def _reference_params() -> int:
    return meta_param_count(resnet, {})


@cached_ladder
def resnet_ladder(targets: tuple[int, ...] | None = None) -> list[LadderPoint]:
    """ResNet sizes from 20K to 200M parameters.

    Rule: units per stage = round((N / N_paper)^(1/3)) (at least 1; the paper's network, N_paper =
    6.4M, has one unit per stage), so depth and width both grow as N^(1/3); the width multiplier is
    then solved so that the encoder has the target N.
    """
    count = functools.partial(meta_param_count, resnet)
    return width_ladder("resnet", count, _ladder_config, bounds=(0.01, 20.0), targets=targets)


register_model("resnet", ladder=resnet_ladder, default_fs=400.0, default_length=4096)(resnet)
