"""FLOP and size accounting against hand-counted truths; ladder helpers on synthetic counts."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from ecgscale.errors import ConfigError
from ecgscale.models.base import count_parameters
from ecgscale.models.baselines.patchtst import patchtst
from ecgscale.models.flops import (
    build_on_meta,
    count_flops,
    cube_root_depth,
    format_count,
    ladder_targets,
    model_size,
    parse_count,
    solve_width,
    train_flops,
)
from ecgscale.models.registry import create_model, ladder, ladder_point


def test_conv_and_linear_forward_flops_are_two_per_mac() -> None:
    conv = nn.Conv1d(12, 64, 17, stride=4, padding=8, bias=True)
    x = torch.zeros(3, 12, 1000)  # 250 output samples
    assert count_flops(conv, x) == 2 * 3 * 250 * 64 * 12 * 17  # bias not counted
    linear = nn.Linear(100, 7)
    assert count_flops(linear, torch.zeros(5, 100)) == 2 * 5 * 100 * 7


@pytest.mark.parametrize("groups", [1, 4, 64])
def test_backward_of_a_grouped_conv_costs_two_forwards(groups: int) -> None:
    def conv() -> nn.Conv1d:
        return nn.Conv1d(64, 64, 3, padding=1, groups=groups, bias=False)

    forward = 2 * 2 * 100 * 64 * (64 // groups) * 3
    x = torch.zeros(2, 64, 100, requires_grad=True)
    assert count_flops(conv(), x) == forward
    assert count_flops(conv(), x, train=True) == 2 * forward  # weight gradient, not the input's
    # the second conv also passes the gradient back to the first one's output
    assert count_flops(nn.Sequential(conv(), conv()), x, train=True) == 5 * forward


def test_attention_is_counted_the_same_on_cpu_and_meta() -> None:
    config = {"d_model": 32, "depth": 2, "heads": 2, "patch_len": 16, "stride": 8}
    cpu, meta = patchtst(**config), build_on_meta(patchtst, config)
    tokens, dim, heads = 1000 // 8, 32, 2  # patches per lead after end padding
    attention = 2 * 2 * 12 * heads * tokens * tokens * (dim // heads)  # QK^T and AV, 12 leads
    linear = 12 * tokens * 2 * (16 * dim + 2 * (4 * dim * dim + 2 * dim * 2 * dim))
    for model in (cpu, meta):
        assert count_flops(model, torch.zeros(1, 12, 1000, device=_device(model))) == (
            linear + 2 * attention
        )
    assert train_flops(cpu, 12, 1000) == train_flops(meta, 12, 1000)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def test_zero_padded_narrow_heads_count_at_their_true_size(monkeypatch) -> None:
    import ecgscale.models.beat_transformer as bt

    model = create_model("beat_transformer", width=22, depth=2, heads=2)  # heads of 11
    d, hidden, tokens = 22, 88, 144  # the example input: 12 beats on 12 leads
    seq = tokens + 1  # and the CLS token
    block = 2 * seq * d * (3 * d + d + 2 * hidden) + 2 * 2 * 2 * seq * seq * (d // 2)
    x = model.example_input(12, 1000, "cpu")
    assert count_flops(model, x) == 2 * tokens * 60 * d + 2 * block
    padded = train_flops(model, 12, 1000)
    monkeypatch.setattr(bt, "MIN_HEAD_SIZE", 1)  # no padding
    assert train_flops(model, 12, 1000) == padded


def test_count_flops_leaves_the_model_as_it_was() -> None:
    model = create_model("resnet", width_multiplier=0.1).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_flops(model, torch.randn(2, 12, 512), train=True)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_model_size_matches_a_real_build() -> None:
    config = {"width_multiplier": 0.25, "extra_blocks": 1}
    size = model_size("resnet", config, length=2048, num_classes=5)
    real = create_model("resnet", **config)
    assert size.params == count_parameters(real)
    assert size.embed_dim == real.embed_dim == 80
    assert size.head_params == 80 * 5 + 5
    assert size.length == 2048 and size.fs == 400.0
    assert size.forward_flops == count_flops(real, torch.zeros(1, 12, 2048))
    assert 2 * size.forward_flops < size.train_flops <= 3 * size.forward_flops


def test_model_size_rejects_a_bad_shape() -> None:
    with pytest.raises(ConfigError, match="length"):
        model_size("resnet", length=0)


def test_ladder_targets_are_log_even_from_20k_to_200m() -> None:
    targets = ladder_targets()
    assert targets[0] == 20_000 and targets[-1] == 200_000_000 and len(targets) == 9
    assert targets[4] == 2_000_000 and targets[1] == 63_000
    ratios = [math.log10(b / a) for a, b in itertools.pairwise(targets)]
    assert all(abs(r - 0.5) < 0.01 for r in ratios)


def test_solve_width_finds_the_nearest_step() -> None:
    def count(x: float) -> int:  # 100 x round(x)^2: steps at half-integers
        return 100 * round(x) ** 2

    assert round(solve_width(count, 10_000, 0.5, 1000.0)) == 10
    assert round(solve_width(count, 11_500, 0.5, 1000.0)) == 11  # 12100 is nearer than 10000
    assert solve_width(count, 11_500, 1, 1000, integer=True) == 11
    with pytest.raises(ConfigError, match="reaches"):
        solve_width(count, 10**9, 1.0, 10.0)


def test_cube_root_depth_rule() -> None:
    assert cube_root_depth(8_000_000, 1_000_000, 3, 1, 100) == 6  # 8x N -> 2x depth
    assert cube_root_depth(1_000, 1_000_000, 3, 2, 100) == 2  # clipped below
    assert cube_root_depth(10**12, 1_000_000, 3, 1, 20) == 20  # clipped above


def test_format_count() -> None:
    assert [format_count(n) for n in (950, 20_000, 6_300_000, 2e8, 1.2e12)] == [
        "950",
        "20K",
        "6.3M",
        "200M",
        "1.2T",
    ]


def test_parse_count_inverts_format_count() -> None:
    for n in (950, 2_000, 6_300, 20_000, 6_300_000, 200_000_000):
        assert parse_count(format_count(n)) == n
    assert parse_count("1.5k") == 1500
    assert [parse_count(t) for t in ("", "K", "abc", "-5K", "5X", "nanK")] == [None] * 6


@pytest.mark.parametrize("family", ["resnet", "beat_transformer"])
def test_ladder_point_solves_any_target_by_the_family_rule(family: str) -> None:
    default = ladder(family)
    assert ladder_point(family, 1) == default[1]
    assert ladder_point(family, default[2].name) == default[2]
    assert ladder_point(family, "63K") == default[1]  # a default target by count gives that point
    small = ladder_point(family, f"{family}-2K")
    assert small.name == f"{family}-2K" and small.target_params == 2_000
    n = count_parameters(create_model(family, **small.config))
    assert abs(n / 2_000 - 1) < 0.1
    with pytest.raises(ConfigError, match="a parameter count such as 5K"):
        ladder_point(family, "tiny")
