"""Design-space CNN of Jabareen et al. 2026: a 1-D AnyNet/RegNet (Radosavovic et al. 2020).

Sources: Jabareen et al., "Learning to scale", Eur. Heart J. Digit. Health 2026; Radosavovic et
al., "Designing network design spaces", CVPR 2020.

Parameter names and meanings follow the design space of the public code (NabJa/scaling-ecg-models,
see /work/shared/reference/design_space_jabareen/DESIGN_SPACE.md), so that its sampled and best
configurations build unchanged:

* stem: conv(`leads` -> `w_init`, kernel `init_kernel_size`, stride 2) -> BN -> ReLU;
* block widths: u_j = `w_0` + `w_a` * j for j < `depth`; each is snapped to `w_0` * `w_m`^k with
  k = round(log(u_j / w_0) / log(w_m)), k capped at log2(`input_resolution`) - 3, and rounded to a
  multiple of `width_quantum`; runs of equal widths are stages; more than `max_stages` distinct
  widths are merged by 1-D k-means (here solved exactly, where the reference ran sklearn's
  k-means++); each stage's width is then raised so that its inner width is divisible by the group
  width (capped at the inner width) and by the numerator of `bottleneck_multiplier`;
* block: 1x1 conv to the inner width w_b = round(w * `bottleneck_multiplier`) (> 1: inverted
  bottleneck) -> conv(`kernel_size`, stride 2 in a stage's first block, `group_width` channels per
  group, 1 = depthwise) -> optional squeeze-and-excitation (squeeze width `se_ratio` x block input
  width) -> 1x1 conv back to w (no activation) -> + skip (identity, or a strided 1x1 conv + BN where
  the shape changes) when `residual` -> ReLU; every conv is followed by BN (and ReLU but the last);
* embedding: global average pool of the last stage, `embed_dim` = its width.

Two choices the reference fixes are free here: `kernel_size` (the reference: 3) and `residual`
(the reference: always on). `anynet_complexity` gives the exact parameter count and forward FLOPs
(module `ecgscale.models.flops` convention) without building the network.

Float arithmetic of the width rule runs in float32 torch ops, as in the reference, so that ties in
the rounding resolve the same way.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch
from torch import nn

from ecgscale.errors import ConfigError
from ecgscale.models.base import Encoder
from ecgscale.models.flops import cached_ladder, cube_root_depth, width_ladder
from ecgscale.models.layers import ConvBNAct, check_odd_kernel, check_waveform, kaiming_init_
from ecgscale.models.registry import LadderPoint, register_model


@dataclass(frozen=True)
class AnyNetConfig:
    """One point of the design space; defaults are Jabareen et al.'s best AdamW network."""

    depth: int = 18
    w_init: int = 64
    w_0: float = 64
    w_a: float = 40
    w_m: float = 2.0
    group_width: int = 4
    bottleneck_multiplier: float = 2.0
    se_ratio: float | None = None
    init_kernel_size: int = 3
    kernel_size: int = 3
    residual: bool = True
    input_resolution: int | None = 1024
    max_stages: int = 7
    width_quantum: int = 8
    leads: int = 12

    def __post_init__(self) -> None:
        problems = []
        if int(self.depth) != self.depth or self.depth < 1:
            problems.append(f"depth={self.depth} (an integer >= 1)")
        if not self.w_0 > 0 or not self.w_a >= 0 or not self.w_m > 1:
            problems.append(
                f"w_0={self.w_0}, w_a={self.w_a}, w_m={self.w_m} (w_0 > 0, w_a >= 0, w_m > 1)"
            )
        for name in ("w_init", "group_width", "max_stages", "width_quantum", "leads"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                problems.append(f"{name}={value} (an integer >= 1)")
        if not self.bottleneck_multiplier > 0:
            problems.append(f"bottleneck_multiplier={self.bottleneck_multiplier} (> 0)")
        if self.se_ratio is not None and not 0 <= self.se_ratio <= 1:
            problems.append(f"se_ratio={self.se_ratio} (None or in [0, 1]; 0 = off)")
        if self.input_resolution is not None and self.input_resolution < 16:
            problems.append(f"input_resolution={self.input_resolution} (None or >= 16)")
        if problems:
            raise ConfigError(f"anynet: invalid {'; '.join(problems)}")
        check_odd_kernel(self.init_kernel_size, "anynet init_kernel_size")
        check_odd_kernel(self.kernel_size, "anynet kernel_size")


@dataclass(frozen=True)
class BlockSpec:
    """The resolved shape of one block; `se_width` 0 means no squeeze-and-excitation."""

    w_in: int
    w_out: int
    stride: int
    w_b: int
    group_width: int
    se_width: int
    kernel_size: int
    residual: bool

    @property
    def groups(self) -> int:
        return self.w_b // self.group_width

    @property
    def projects(self) -> bool:
        return self.residual and (self.w_in != self.w_out or self.stride != 1)


def _kmeans_1d(values: list[int], k: int) -> list[int]:
    """Centres (truncated to int, ascending) of the optimal k-means partition of sorted `values`."""
    n = len(values)

    def sse(i: int, j: int) -> float:
        part = values[i:j]
        mean = sum(part) / len(part)
        return sum((v - mean) ** 2 for v in part)

    @functools.cache
    def best(i: int, clusters: int) -> tuple[float, tuple[int, ...]]:
        if clusters == 1:
            return sse(i, n), (n,)
        options = []
        for j in range(i + 1, n - clusters + 2):
            cost, cuts = best(j, clusters - 1)
            options.append((sse(i, j) + cost, (j, *cuts)))
        return min(options)

    cuts = (0, *best(0, k)[1])
    return [int(sum(values[a:b]) / (b - a)) for a, b in itertools.pairwise(cuts)]


def stage_shapes(config: AnyNetConfig) -> list[tuple[int, int, int]]:
    """`(width, depth, group_width)` of every stage, by the width rule in the module docstring."""
    c, q = config, config.width_quantum
    widths_cont = torch.arange(c.depth, dtype=torch.float32, device="cpu") * c.w_a + c.w_0
    capacity = torch.round(torch.log(widths_cont / c.w_0) / math.log(c.w_m))
    if c.input_resolution is not None:
        capacity = torch.clamp(capacity, max=math.log2(c.input_resolution) - 3)
    widths = (torch.round(c.w_0 * torch.pow(c.w_m, capacity) / q) * q).int().tolist()
    widths = [max(q, w) for w in widths]
    distinct = sorted(set(widths))
    if len(distinct) > c.max_stages:
        centres = _kmeans_1d(distinct, c.max_stages)
        widths = [min(centres, key=lambda centre, w=w: abs(centre - w)) for w in widths]
    stages: list[list[int]] = []  # [width, depth]
    for w in widths:
        if stages and stages[-1][0] == w:
            stages[-1][1] += 1
        else:
            stages.append([w, 1])
    ratio = c.bottleneck_multiplier
    numerator = Fraction(ratio).limit_denominator().numerator
    shapes = []
    for w, d in stages:
        w_bot = max(1, int(w * ratio))
        g = min(c.group_width, w_bot)
        step = g * numerator // math.gcd(g, numerator)
        w_bot = -(-w_bot // step) * step
        shapes.append((round(w_bot / ratio), d, g))
    return shapes


def block_specs(config: AnyNetConfig) -> list[BlockSpec]:
    """Every block of the body, in order."""
    specs = []
    w_in = config.w_init
    for width, depth, group_width in stage_shapes(config):
        for j in range(depth):
            block_in = w_in if j == 0 else width
            se_width = 0
            if config.se_ratio:
                se_width = max(1, round(config.se_ratio * block_in))
            specs.append(
                BlockSpec(
                    w_in=block_in,
                    w_out=width,
                    stride=2 if j == 0 else 1,
                    w_b=round(width * config.bottleneck_multiplier),
                    group_width=group_width,
                    se_width=se_width,
                    kernel_size=config.kernel_size,
                    residual=config.residual,
                )
            )
        w_in = width
    return specs


class SqueezeExcite(nn.Module):
    """Channel gating: x * sigmoid(W2 relu(W1 mean_t(x))), W as 1x1 convs with bias."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool1d(1),
            nn.Conv1d(channels, squeeze, 1),
            nn.ReLU(inplace=True),
            nn.Conv1d(squeeze, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class AnyBlock(nn.Module):
    """Bottleneck block of a `BlockSpec` (module docstring)."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            ConvBNAct(spec.w_in, spec.w_b, 1),
            ConvBNAct(spec.w_b, spec.w_b, spec.kernel_size, spec.stride, spec.groups),
        ]
        if spec.se_width:
            layers.append(SqueezeExcite(spec.w_b, spec.se_width))
        layers.append(ConvBNAct(spec.w_b, spec.w_out, 1, act=False))
        self.f = nn.Sequential(*layers)
        self.residual = spec.residual
        self.proj = (
            ConvBNAct(spec.w_in, spec.w_out, 1, spec.stride, act=False) if spec.projects else None
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.f(x)
        if self.residual:
            out = out + (x if self.proj is None else self.proj(x))
        return self.act(out)


class AnyNet(Encoder):
    """Design-space CNN; `forward_features`: `(batch, leads, samples)` -> `(batch, embed_dim)`."""

    def __init__(self, config: AnyNetConfig) -> None:
        super().__init__()
        self.config = config
        self.stem = ConvBNAct(config.leads, config.w_init, config.init_kernel_size, stride=2)
        specs = block_specs(config)
        self.body = nn.Sequential(*(AnyBlock(spec) for spec in specs))
        self.embed_dim = specs[-1].w_out
        kaiming_init_(self, mode="fan_out")  # as the reference: N(0, 2 / (k * c_out))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_waveform(x, self.config.leads, 1, "anynet")
        return self.body(self.stem(x)).mean(dim=-1)


def anynet(**config: Any) -> AnyNet:
    """Factory of `AnyNet`; keyword arguments are the fields of `AnyNetConfig`."""
    return AnyNet(AnyNetConfig(**config))


@dataclass(frozen=True)
class Complexity:
    """Analytic size of an AnyNet: encoder parameters, forward FLOPs per record, stage summary."""

    params: int
    flops: int
    embed_dim: int
    stages: int
    last_inner_width: int


def _conv_out(length: int, kernel: int, stride: int) -> int:
    return (length + 2 * ((kernel - 1) // 2) - kernel) // stride + 1


def anynet_complexity(length: int = 1024, **config: Any) -> Complexity:
    """Parameters and forward FLOPs per record `(leads, length)` of `anynet(**config)`, counted
    from the block shapes (conv FLOPs = 2 x output samples x c_out x c_in / groups x kernel; BN has
    2 parameters per channel; the convs of SE carry biases)."""
    c = AnyNetConfig(**config)
    length_out = _conv_out(length, c.init_kernel_size, 2)
    params = c.leads * c.w_init * c.init_kernel_size + 2 * c.w_init
    flops = 2 * length_out * c.leads * c.w_init * c.init_kernel_size
    specs = block_specs(c)
    for s in specs:
        length_in, length_out = length_out, _conv_out(length_out, s.kernel_size, s.stride)
        mac_a, mac_c = s.w_in * s.w_b, s.w_b * s.w_out
        mac_b = s.w_b * s.group_width * s.kernel_size
        mac_se = 2 * s.w_b * s.se_width
        mac_proj = s.w_in * s.w_out if s.projects else 0
        params += mac_a + mac_b + mac_c + mac_se + mac_proj + 2 * (2 * s.w_b + s.w_out)
        params += (s.se_width + s.w_b if s.se_width else 0) + (2 * s.w_out if s.projects else 0)
        flops += 2 * (length_in * mac_a + length_out * (mac_b + mac_c + mac_proj) + mac_se)
    return Complexity(params, flops, specs[-1].w_out, len(stage_shapes(c)), specs[-1].w_b)


# The ladder's family: Jabareen et al.'s best AdamW choices (w_m 2, w_a / w_0 = 40 / 64, group
# width 4, inverted bottleneck x2) with SE 0.25 and a stem kernel of 9 (their best network below
# 1e7 FLOPs).
LADDER_FAMILY: dict[str, Any] = {
    "w_m": 2.0,
    "group_width": 4,
    "bottleneck_multiplier": 2.0,
    "se_ratio": 0.25,
    "init_kernel_size": 9,
}
LADDER_SLOPE = 40 / 64  # w_a / w_0
LADDER_REF_DEPTH = 18


@functools.cache
def _reference_params() -> int:
    return anynet_complexity().params


def _ladder_config(target: int, x: float) -> dict[str, Any]:
    depth = cube_root_depth(target, _reference_params(), LADDER_REF_DEPTH, 4, 20)
    return {
        **LADDER_FAMILY,
        "depth": depth,
        "w_init": max(1, round(x)),
        "w_0": x,
        "w_a": LADDER_SLOPE * x,
    }


@cached_ladder
def anynet_ladder(targets: tuple[int, ...] | None = None) -> list[LadderPoint]:
    """AnyNet sizes from 20K to 200M parameters within one family of the design space.

    Rule: depth = round(18 (N / N_ref)^(1/3)) clipped to the design space's 4..20, N_ref being the
    reference's best network (depth 18, 14.6M encoder parameters); w_0 = w_init = x and
    w_a = 0.625 x, with x solved for the target N (the stages follow from the width rule).
    """
    return width_ladder(
        "anynet", _analytic_params, _ladder_config, bounds=(1.0, 4096.0), targets=targets
    )


def _analytic_params(config: dict[str, Any]) -> int:
    return anynet_complexity(**config).params


register_model("anynet", ladder=anynet_ladder, default_fs=500.0, default_length=1024)(anynet)
