"""InceptionTime, xresnet1d101 and PatchTST: reference sizes and structural properties."""

from __future__ import annotations

import torch

from ecgscale.models.base import count_parameters
from ecgscale.models.baselines.inception import inception_time
from ecgscale.models.baselines.patchtst import patchtst
from ecgscale.models.baselines.xresnet import xresnet1d


def test_inception_benchmark_network_size() -> None:
    model = inception_time()
    assert [c.kernel_size[0] for c in model.modules_[0].convs] == [39, 19, 9]
    # hand count, no biases: module 0 reads 12 leads, modules 1-5 read 128 channels
    first = 12 * 32 + 32 * 32 * (39 + 19 + 9) + 12 * 32 + 2 * 128
    later = 128 * 32 + 32 * 32 * (39 + 19 + 9) + 128 * 32 + 2 * 128
    shortcuts = (12 * 128 + 2 * 128) + (128 * 128 + 2 * 128)
    assert count_parameters(model) == first + 5 * later + shortcuts == 473_344
    assert model.embed_dim == 128


def test_xresnet101_structure_and_identity_start() -> None:
    model = xresnet1d().eval()
    assert len(model.body) == 3 + 4 + 23 + 3 and model.embed_dim == 2048
    x = torch.randn(1, 12, 1000)
    with torch.no_grad():
        features = model.body(model.stem(x))
        assert features.shape == (1, 2048, 32)  # 1000 -> 500 (stem) -> 250 (pool) -> /8
        # the last BN of every block starts at zero: blocks with identity skips start as identities
        h = torch.relu(torch.randn(1, 1024, 40))
        block = model.body[10]  # inside the third stage
        assert len(block.skip) == 0
        assert torch.equal(block(h), h)


def test_patchtst_is_channel_independent() -> None:
    model = patchtst(d_model=16, depth=1, heads=2, patch_len=16, stride=8).eval()
    x = torch.randn(2, 12, 200)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = model.forward_features(x).view(2, 12, 16)
        z_perm = model.forward_features(x[:, perm]).view(2, 12, 16)
    torch.testing.assert_close(z_perm, z[:, perm])
    assert model.embed_dim == 12 * 16
