"""Every registered model and every ladder point: the encoder contract and the ladder's sizes.

Parametrised over `list_models()`, so families registered later are checked too. Models run on
synthetic 12-lead ECGs (`ecgscale.data.synth`) of two lengths; ladder points up to 2.1M parameters
run on the CPU, and every point (up to 200M) is counted on the meta device.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ecgscale.data.synth import SynthConfig, generate
from ecgscale.models.base import Encoder, count_parameters
from ecgscale.models.flops import build_on_meta
from ecgscale.models.registry import LadderPoint, create_model, get_spec, ladder, list_models

CPU_MAX_PARAMS = 2_100_000
# Two short lengths per family (samples at the family's default rate); others use their default.
TEST_LENGTHS = {
    "resnet": (1024, 777),
    "anynet": (512, 333),
    "inception_time": (250, 333),
    "xresnet1d": (250, 333),
    "patchtst": (512, 400),
}


def _lengths(name: str) -> tuple[int, int]:
    default = get_spec(name).default_length
    return TEST_LENGTHS.get(name, (default, default // 2 + 1))


def _ecg(name: str, length: int, batch: int = 2) -> torch.Tensor:
    x, _ = generate(batch, SynthConfig(fs=get_spec(name).default_fs, length=length, seed=3))
    return torch.from_numpy(x)


def _build(name: str, config: dict, seed: int) -> Encoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(name, **config)


def _cpu_cases() -> list:
    return [
        pytest.param(name, point, id=point.name)
        for name in list_models()
        for point in ladder(name)
        if point.target_params <= CPU_MAX_PARAMS
    ]


CPU_CASES = _cpu_cases()


@pytest.mark.parametrize("name", list_models())
def test_ladder_spans_20k_to_200m_evenly_within_10_percent(name: str) -> None:
    points = ladder(name)
    targets = np.array([p.target_params for p in points], dtype=np.float64)
    assert len(points) >= 8
    assert targets.min() <= 25_000 and targets.max() >= 150_000_000
    steps = np.diff(np.log(targets))
    assert np.all(steps > 0) and steps.max() / steps.min() < 1.5, "not evenly spaced in log N"
    assert len({p.name for p in points}) == len(points)
    factory = get_spec(name).factory
    for point in points:
        n = count_parameters(build_on_meta(factory, point.config))
        assert abs(n / point.target_params - 1) <= 0.10, (point.name, n)


@pytest.mark.parametrize(("name", "point"), CPU_CASES)
def test_cpu_point_has_target_size_and_output_shapes_at_two_lengths(
    name: str, point: LadderPoint
) -> None:
    model = _build(name, point.config, seed=0).eval()
    assert isinstance(model, Encoder)
    assert abs(count_parameters(model) / point.target_params - 1) <= 0.10
    with torch.no_grad():
        for length in _lengths(name):
            z = model.forward_features(_ecg(name, length))
            assert z.shape == (2, model.embed_dim)
            assert torch.isfinite(z).all()
            assert not torch.allclose(z[0], z[1]), "two different records, one embedding"


@pytest.mark.parametrize(("name", "point"), CPU_CASES)
def test_gradients_reach_every_parameter(name: str, point: LadderPoint) -> None:
    model = _build(name, point.config, seed=1).train()
    # break zero initialisations (zero-gamma BN) that block gradients at step 0
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    z = model.forward_features(_ecg(name, _lengths(name)[0]))
    (z * torch.linspace(-1, 1, z.shape[1])).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{pname}: zero gradient"


@pytest.mark.parametrize(("name", "point"), CPU_CASES)
def test_same_seed_same_output(name: str, point: LadderPoint) -> None:
    x = _ecg(name, _lengths(name)[1])
    with torch.no_grad():
        outputs = [
            _build(name, point.config, seed).eval().forward_features(x) for seed in (5, 5, 6)
        ]
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.allclose(outputs[0], outputs[2])


@pytest.mark.parametrize("name", list_models())
def test_registered_default_builds_with_finite_size(name: str) -> None:
    spec = get_spec(name)
    model = build_on_meta(spec.factory, {})
    assert isinstance(model, Encoder) and model.embed_dim >= 1
    assert model.input_kind == spec.input_kind
    assert math.isfinite(count_parameters(model))
