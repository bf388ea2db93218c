"""ECGFounder adapter: Net1D's key layout and parameter count at the released configuration,
checkpoints as ECGFounder writes them (training state, numpy scalars, `module.` prefix), round
trips, embeddings of store batches, Net1D's residual semantics, and one-line bad-file errors."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ecgscale.models.external import get_adapter, load_external
from ecgscale.models.external.ecgfounder import Block
from fixtures.external_checkpoints import (
    assert_round_trip,
    assert_same_tensors,
    perturbed,
    raises_one_line,
)

# Three stages (1, 2, 1 blocks), widths 8-16, 4 channels per group: every block kind, fast.
SMALL = dict(base_filters=8, filter_list=(8, 16, 16), m_blocks_list=(1, 2, 1), groups_width=4)
ADAPTER = get_adapter("ecgfounder")


def small(seed: int = 0, **config) -> torch.nn.Module:
    return perturbed(ADAPTER.random(seed, **{**SMALL, "n_classes": 5, **config}), seed)


def test_released_configuration_has_net1d_keys_and_parameter_count() -> None:
    with torch.device("meta"):
        net = ADAPTER.build()
    state = net.state_dict()
    # Hand count from net1d.py: stem conv (bias) + first_bn; per block BN(c_in), 1x1 conv, BN,
    # grouped conv k16 (16 in-channels per group: groups_width 16, ratio 1), BN, 1x1 conv, SE
    # c -> c/2 -> c; dense 1024 -> 150. BN weight/bias count although use_bn is False.
    expected, c_in = 12 * 64 * 16 + 64 + 2 * 64, 64
    for c, m in zip((64, 160, 160, 400, 400, 1024, 1024), (2, 2, 2, 3, 3, 4, 4), strict=True):
        for b in range(m):
            cin = c_in if b == 0 else c
            expected += 2 * cin + (cin * c + c) + 2 * c + (c * 16 * 16 + c) + 2 * c + (c * c + c)
            expected += (c * (c // 2) + c // 2) + (c // 2 * c + c)
        c_in = c
    expected += 1024 * 150 + 150
    assert sum(p.numel() for p in net.parameters()) == expected == 30_819_014
    # 20 blocks x (3 BN x 5 + 3 convs x 2 + 2 SE x 2), stem conv + BN, dense.
    assert len(state) == 20 * 25 + 9
    assert state["first_conv.conv.weight"].shape == (64, 12, 16)
    assert state["stage_list.0.block_list.0.bn1.num_batches_tracked"].shape == ()
    assert state["stage_list.6.block_list.3.conv2.conv.weight"].shape == (1024, 16, 16)
    assert state["stage_list.3.block_list.0.se_fc1.weight"].shape == (200, 400)
    assert state["dense.weight"].shape == (150, 1024)
    assert net.embed_dim == 1024


def test_round_trip_keeps_every_tensor(tmp_path: Path) -> None:
    net = small()
    ADAPTER.save(net, tmp_path / "a.pth")
    raw = torch.load(tmp_path / "a.pth", weights_only=True)
    assert list(raw) == ["state_dict"] and raw["state_dict"].keys() == net.state_dict().keys()
    x = torch.randn(2, 12, 600)
    assert_round_trip(ADAPTER, net, tmp_path / "a.pth", tmp_path / "b.pth", x)


def _as_numpy1(path: Path) -> None:
    """Rewrite a torch zip checkpoint so numpy scalars name numpy 1.x's module."""
    entries = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            data = z.read(info)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            entries[info.filename] = data
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize("numpy1", [False, True])
def test_loads_the_training_checkpoint_layout(tmp_path: Path, numpy1: bool) -> None:
    """util.save_checkpoint's dict: epoch, step, state_dict (here DataParallel-prefixed),
    optimizer, scheduler and val_auroc, a numpy float (written by numpy 1 for the release)."""
    net = small()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(2, 12, 300)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max")
    scheduler.step(np.float64(0.9))
    torch.save(
        {
            "epoch": 3,
            "step": 10000,
            "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "val_auroc": np.float64(0.9204),
        },
        tmp_path / "checkpoint_10000_0.9204.pth",
    )
    if numpy1:
        _as_numpy1(tmp_path / "checkpoint_10000_0.9204.pth")
    assert_same_tensors(net, ADAPTER.load(tmp_path / "checkpoint_10000_0.9204.pth"))


@pytest.mark.parametrize(("fs", "samples"), [(500, 5000), (100, 1000)])
def test_embeds_store_batches(tmp_path: Path, fs: int, samples: int) -> None:
    ADAPTER.save(small(), tmp_path / "w.pth")
    encoder = load_external(f"ecgfounder:{tmp_path / 'w.pth'}", store_fs=fs)
    seen = []
    encoder.network.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape))
    x = torch.randn(3, 12, samples)
    with torch.no_grad():
        z = encoder.forward_features(x)
        # The record-wise z-score of dataset.py: the unit does not matter.
        z_uv = encoder.forward_features(1000 * x)
    assert z.shape == (3, 16) and encoder.embed_dim == 16
    assert seen[0] == (3, 12, 5000)
    torch.testing.assert_close(z, z_uv, atol=1e-4, rtol=1e-4)


def test_one_lead_model_reads_lead_i(tmp_path: Path) -> None:
    one = get_adapter("ecgfounder-1lead")
    one.save(perturbed(one.random(**SMALL)), tmp_path / "1_lead.pth")
    encoder = load_external(f"ecgfounder-1lead:{tmp_path / '1_lead.pth'}", store_fs=500)
    x = torch.randn(2, 12, 5000)
    other = x.clone()
    other[:, 1:] = torch.randn(2, 11, 5000)
    with torch.no_grad():
        assert torch.equal(encoder.forward_features(x), encoder.forward_features(other))
        other[:, 0] += 1.0 + torch.randn(2, 5000)
        assert not torch.allclose(encoder.forward_features(x), encoder.forward_features(other))
    pattern = r"1-lead ECGFounder checkpoint; adapter 'ecgfounder' reads 12 \(use ecgfounder-1lead:"
    raises_one_line(pattern, ADAPTER.load, tmp_path / "1_lead.pth")


def test_block_identity_is_zero_padded_max_pool_and_centred_channels() -> None:
    """With the main path zeroed, Net1D's block output is its shortcut: max-pool over the
    stride after zero padding on the right (zeros win over negative samples), input channels in
    the middle of the wider output."""
    block = Block(2, 4, kernel_size=3, stride=2, groups_width=1, ratio=1.0, first=False,
                  use_bn=False)  # fmt: skip
    for conv in (block.conv1.conv, block.conv2.conv, block.conv3.conv):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    x = torch.tensor([[[-1.0, -3.0, -2.0], [4.0, 5.0, 6.0]]])
    expected = torch.tensor([[[0.0, 0.0], [-1.0, 0.0], [5.0, 6.0], [0.0, 0.0]]])
    assert torch.equal(block(x), expected)


class Opaque:
    """Not a tensor: weights_only loading must refuse to build it."""


def test_bad_files_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    raises_one_line(r"notes\.pth: not a PyTorch checkpoint", ADAPTER.load, tmp_path / "notes.pth")

    torch.save({"state_dict": {"encoder.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    raises_one_line(
        r"do not match the architecture: .* missing", ADAPTER.load, tmp_path / "other.pth"
    )

    state = small().state_dict()
    state["stage_list.1.block_list.0.se_fc2.bias"] = torch.zeros(3)
    torch.save({"state_dict": state}, tmp_path / "shapes.pth")
    raises_one_line(
        r"1 shape \(e\.g\. stage_list\.1\.block_list\.0\.se_fc2\.bias\)",
        ADAPTER.load,
        tmp_path / "shapes.pth",
    )

    torch.save({"state_dict": Opaque()}, tmp_path / "pickle.pth")
    raises_one_line(r"weights_only=True", ADAPTER.load, tmp_path / "pickle.pth")

    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    raises_one_line(r"expected an ECGFounder checkpoint", ADAPTER.load, tmp_path / "list.pth")
