"""Ribeiro et al.'s ResNet: the paper's shapes and size, any input length, the flatten option."""

from __future__ import annotations

import pytest
import torch

from ecgscale.errors import ConfigError
from ecgscale.models.base import count_parameters
from ecgscale.models.resnet import RibeiroResNet, resnet


def _paper_params(kernel: int = 17) -> int:
    """Hand count: stem conv + BN; per unit two k-tap convs, two BNs and the 1x1 skip conv."""
    total = 12 * 64 * kernel + 2 * 64
    for c_in, c_out in ((64, 128), (128, 196), (196, 256), (256, 320)):
        total += kernel * c_in * c_out + kernel * c_out * c_out + 4 * c_out + c_in * c_out
    return total


def test_paper_network_size_and_shapes() -> None:
    model = resnet(pool="flatten").eval()
    assert count_parameters(model) == _paper_params() == 6_780_064
    x = torch.randn(1, 12, 4096)
    lengths = []
    hooks = [
        u.register_forward_hook(lambda _m, _i, out: lengths.append(out[0].shape))
        for u in model.units
    ]
    with torch.no_grad():
        z = model.forward_features(x)
    for hook in hooks:
        hook.remove()
    assert [tuple(s[1:]) for s in lengths] == [(128, 1024), (196, 256), (256, 64), (320, 16)]
    assert z.shape == (1, 320 * 16) and model.embed_dim == 5120


def test_extra_blocks_and_width_multiplier() -> None:
    model = resnet(width_multiplier=0.5, extra_blocks=2)
    assert len(model.units) == 4 * 3
    assert model.embed_dim == 160
    assert [u.conv1.out_channels for u in model.units[::3]] == [64, 98, 128, 160]
    # extra units keep width and length: identity skip paths, no parameters on them
    assert all(len(u.skip) == 0 for i, u in enumerate(model.units) if i % 3)


@pytest.mark.parametrize("length", [4096, 1001, 300])
def test_average_pool_works_at_any_length(length: int) -> None:
    model = resnet(width_multiplier=0.1).eval()
    with torch.no_grad():
        z = model.forward_features(torch.randn(2, 12, length))
    assert z.shape == (2, model.embed_dim) and torch.isfinite(z).all()


def test_flatten_needs_the_built_length() -> None:
    model = resnet(width_multiplier=0.1, pool="flatten", input_length=1024).eval()
    assert model.embed_dim == 32 * 4
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 12, 1024)).shape == (1, 128)
        with pytest.raises(ConfigError, match="input_length"):
            model.forward_features(torch.randn(1, 12, 2048))


def test_wrong_leads_and_bad_options_are_config_errors() -> None:
    model = resnet(width_multiplier=0.1)
    with pytest.raises(ConfigError, match=r"\(batch, 12, samples"):
        model.forward_features(torch.randn(1, 8, 1024))
    for bad in (
        {"kernel_size": 16},
        {"extra_blocks": -1},
        {"pool": "max"},
        {"dropout": 1.0},
        {"width_multiplier": 0},
    ):
        with pytest.raises(ConfigError):
            RibeiroResNet(**bad)
