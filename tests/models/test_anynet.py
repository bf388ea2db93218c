"""The design-space CNN against Jabareen et al.'s published networks and their sampled space."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ecgscale.errors import ConfigError
from ecgscale.models.anynet import AnyNetConfig, anynet, anynet_complexity, stage_shapes
from ecgscale.models.base import count_parameters
from ecgscale.models.flops import build_on_meta, forward_flops

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"
SPACE = REFERENCE / "design_space_jabareen"
HEAD_CLASSES = 26  # the reference's head: global average pool -> linear, 26 classes
MODEL_FIELDS = set(AnyNetConfig.__dataclass_fields__)


def _read(name: str) -> list[dict[str, str]]:
    path = SPACE / name
    assert path.is_file(), f"expected the reference design space at {path}"
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _best_rows() -> list[dict[str, str]]:
    rows = {
        row["optimizer"] + row["nparams"]: row
        for row in _read("best_configurations_per_optimizer.csv")
    }
    return list(rows.values())


def _config(row: dict[str, str]) -> dict[str, Any]:
    ints = ("depth", "w_init", "w_0", "w_a", "group_width", "init_kernel_size")
    config: dict[str, Any] = {k: int(row[k]) for k in ints}
    config |= {
        "w_m": float(row["w_m"]),
        "bottleneck_multiplier": float(row["bottleneck_multiplier"]),
    }
    config["se_ratio"] = float(row["se_ratio"]) or None  # 0.00 = SE off
    return config


@pytest.mark.parametrize("row", _best_rows(), ids=lambda r: f"{r['optimizer']}-{r['nparams']}")
def test_reference_best_networks_have_the_published_sizes(row: dict[str, str]) -> None:
    config = _config(row)
    model = build_on_meta(anynet, config)
    head = model.embed_dim * HEAD_CLASSES + HEAD_CLASSES
    assert count_parameters(model) + head == int(row["nparams"])
    complexity = anynet_complexity(1024, **config)
    assert complexity.embed_dim == model.embed_dim == int(row["fc_features"])
    assert complexity.last_inner_width == int(row["last_conv_channels"])
    assert complexity.stages == int(row["stages"])


def _sample_space(n: int, seed: int) -> list[dict[str, Any]]:
    """Uniform draws over the ranges of design_space_ranges.csv (w_0 raised to w_init, as the
    reference's sampler does); `kernel_size` and `residual`, fixed in the reference, vary too."""
    rng = np.random.default_rng(seed)
    rows = [r for r in _read("design_space_ranges.csv") if r["parameter"] in MODEL_FIELDS]
    assert {r["parameter"] for r in rows} >= {"depth", "w_0", "w_a", "w_m", "group_width"}
    configs = []
    for _ in range(n):
        config: dict[str, Any] = {}
        for r in rows:
            if r["kind"] == "categorical":
                choice = str(rng.choice(r["choices"].split("|")))
                config[r["parameter"]] = None if choice == "none" else float(choice)
            else:
                grid = np.arange(float(r["low"]), float(r["high"]) + 1e-9, float(r["step"]))
                config[r["parameter"]] = round(float(rng.choice(grid)), 1)
        for key in ("depth", "w_init", "w_0", "w_a", "group_width", "init_kernel_size"):
            config[key] = int(config[key])
        config["w_0"] = max(config["w_0"], config["w_init"])
        config["kernel_size"] = int(rng.choice([3, 5, 7, 9]))
        config["residual"] = bool(rng.random() < 0.75)
        configs.append(config)
    return configs


SAMPLE = _sample_space(30, seed=2024)


def test_sample_covers_the_space() -> None:
    values = {
        k: {c[k] for c in SAMPLE}
        for k in ("group_width", "bottleneck_multiplier", "se_ratio", "residual")
    }
    assert values["group_width"] == {1, 2, 4, 8, 16, 32}
    assert values["bottleneck_multiplier"] == {0.5, 1.0, 2.0, 4.0}
    assert values["se_ratio"] == {None, 0.25} and values["residual"] == {True, False}


@pytest.mark.parametrize("config", SAMPLE, ids=lambda c: f"d{c['depth']}w{c['w_0']}m{c['w_m']}")
def test_analytic_complexity_agrees_with_the_measured_count(config: dict[str, Any]) -> None:
    model = build_on_meta(anynet, config)
    for length in (1024, 5000):
        analytic = anynet_complexity(length, **config)
        assert analytic.params == count_parameters(model)
        measured = forward_flops(model, 12, length)
        assert abs(analytic.flops / measured - 1) < 0.01, (analytic.flops, measured)


@pytest.mark.parametrize("config", SAMPLE[:12], ids=lambda c: f"d{c['depth']}w{c['w_0']}")
def test_sampled_configuration_builds_and_runs(config: dict[str, Any]) -> None:
    model = anynet(**config).train()
    x = torch.randn(2, 12, 256, generator=torch.Generator().manual_seed(0))
    z = model.forward_features(x)
    assert z.shape == (2, model.embed_dim) and torch.isfinite(z).all()
    z.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_more_distinct_widths_than_stages_are_merged() -> None:
    # w_0 128, slope 10, w_m 1.1: capacities 0..7 give the widths 128 144 152 168 184 208 224 248
    # (8 distinct, one per k); the closest pair (144, 152) merges into one stage of width 148.
    config = AnyNetConfig(
        depth=12, w_init=32, w_0=128, w_a=10, w_m=1.1, group_width=1, bottleneck_multiplier=1.0
    )
    widths = [w for w, _, _ in stage_shapes(config)]
    assert widths == [128, 148, 168, 184, 208, 224, 248]
    assert sum(d for _, d, _ in stage_shapes(config)) == 12


def test_widths_are_adjusted_to_groups_and_bottleneck() -> None:
    # width 40: x0.5 -> inner 20, raised to a multiple of the group width 16 -> 32 -> width 64;
    # x4 -> inner 160, a multiple of 16 and of 4 -> unchanged; group width 32 > inner 20 is capped
    def shape(group_width: int, ratio: float) -> list[tuple[int, int, int]]:
        config = AnyNetConfig(
            depth=1, w_0=40, w_a=0, group_width=group_width, bottleneck_multiplier=ratio
        )
        return stage_shapes(config)

    assert shape(16, 0.5) == [(64, 1, 16)]
    assert shape(16, 4.0) == [(40, 1, 16)]
    assert shape(32, 0.5) == [(40, 1, 20)]


def test_residual_off_removes_every_skip() -> None:
    on = anynet(depth=6, residual=True)
    off = anynet(depth=6, residual=False)
    projections = sum(b.proj is not None for b in on.body)
    assert projections == len(stage_shapes(AnyNetConfig(depth=6)))  # one per stage
    assert all(b.proj is None and not b.residual for b in off.body)
    assert count_parameters(on) > count_parameters(off)


@pytest.mark.parametrize(
    "bad",
    [
        {"w_m": 1.0},
        {"depth": 0},
        {"kernel_size": 4},
        {"init_kernel_size": 2},
        {"se_ratio": 2.0},
        {"group_width": 0},
        {"w_0": -8},
    ],
)
def test_invalid_configuration_is_a_config_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="anynet"):
        anynet(**bad)
