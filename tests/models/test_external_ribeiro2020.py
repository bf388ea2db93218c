"""Ribeiro et al. 2020 adapter: the published parameter count, Keras HDF5 round trips (TF 2 and
Keras 2.2 layer names, any `layer_names` order), Keras conv/BN semantics against a numpy
reference, embeddings of store batches at the 400 Hz x 4096 contract, one-line bad-file errors."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ecgscale.models.external import get_adapter, load_external
from ecgscale.models.external.ribeiro2020 import RibeiroResNet
from fixtures.external_checkpoints import assert_same_tensors, perturbed, raises_one_line

ADAPTER = get_adapter("ribeiro2020")
SMALL = {"filters": (8, 16, 16), "n_classes": 3}  # two units, the second without a skip conv


def small(seed: int = 0) -> torch.nn.Module:
    return perturbed(ADAPTER.random(seed, **SMALL), seed)


def test_published_model_has_keras_parameter_count() -> None:
    with torch.device("meta"):
        net = RibeiroResNet()
    trainable = sum(p.numel() for p in net.parameters())
    moving = sum(b.numel() for n, b in net.named_buffers() if n.endswith(("_mean", "_var")))
    # Keras model.summary() of model.py: 6,425,638 total, 6,421,910 trainable, 3,728 not.
    assert (trainable, moving) == (6_421_910, 3_728)
    kinds = [type(m).__name__ for m in net.keras_layers()]
    assert (kinds.count("SameConv1d"), kinds.count("BatchNorm1d"), kinds.count("Linear")) == (
        13, 9, 1,
    )  # fmt: skip
    assert net.embed_dim == 16 * 320 and net.dense.weight.shape == (6, 5120)


def _datasets(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:

        def keep(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]

        f.visititems(keep)
    return out


def test_round_trip_keeps_every_tensor(tmp_path: Path) -> None:
    net = small()
    ADAPTER.save(net, tmp_path / "model.hdf5")
    loaded = ADAPTER.load(tmp_path / "model.hdf5")
    assert_same_tensors(net, loaded)
    ADAPTER.save(loaded, tmp_path / "again.hdf5")
    first, second = _datasets(tmp_path / "model.hdf5"), _datasets(tmp_path / "again.hdf5")
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert first["model_weights/conv1d_1/conv1d_1/kernel:0"].shape == (1, 8, 16)  # the skip
    x = torch.randn(2, 12, 4096)
    assert torch.equal(net(x), loaded(x))


def _as_keras22(src: Path, dst: Path) -> None:
    """The file Keras 2.2 would write: one-based names (`conv1d_1` first) and `layer_names` in
    the network's topological order rather than creation order (here: reversed)."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        group, out = f["model_weights"], g.create_group("model_weights")
        names = []
        for old in [n.decode() for n in group.attrs["layer_names"]][::-1]:
            kind, number = re.fullmatch(r"(.*?)(?:_(\d+))?", old).groups()
            new = f"{kind}_{int(number or 0) + 1}"
            layer = out.create_group(new)
            weights = [w.decode().split("/")[-1] for w in group[old].attrs["weight_names"]]
            for w in weights:
                layer.create_dataset(f"{new}/{w}", data=group[old][f"{old}/{w}"][()])
            layer.attrs["weight_names"] = np.array([f"{new}/{w}" for w in weights], dtype="S")
            names.append(new)
        for extra in ("activation_1", "dropout_1"):  # layers without weights are listed too
            out.create_group(extra).attrs["weight_names"] = np.array([], dtype="S")
            names.insert(3, extra)
        out.attrs["layer_names"] = np.array(names, dtype="S")
        out.attrs["keras_version"] = b"2.2.4"


def test_loads_keras22_names_in_any_listing_order(tmp_path: Path) -> None:
    net = small()
    ADAPTER.save(net, tmp_path / "tf2.hdf5")
    _as_keras22(tmp_path / "tf2.hdf5", tmp_path / "keras22.hdf5")
    assert_same_tensors(net, ADAPTER.load(tmp_path / "keras22.hdf5"))


def test_stem_follows_keras_conv_and_batch_norm() -> None:
    """Conv1D kernel (k, in, out) with 'same' padding (7 left, 8 right for k=16), then
    BatchNormalization with epsilon 1e-3, then ReLU - written out in numpy."""
    net = small()
    x = np.random.default_rng(0).standard_normal((1, 12, 40)).astype(np.float32)
    kernel = net.conv.weight.detach().numpy().transpose(2, 1, 0)  # Keras layout
    padded = np.pad(x[0].T, ((7, 8), (0, 0)))  # (samples, leads)
    conv = np.stack([np.einsum("ki,kio->o", padded[t : t + 16], kernel) for t in range(40)])
    bn = net.bn
    gamma, beta = bn.weight.detach().numpy(), bn.bias.detach().numpy()
    mean, var = bn.running_mean.numpy(), bn.running_var.numpy()
    expected = np.maximum((conv - mean) / np.sqrt(var + 1e-3) * gamma + beta, 0).T
    with torch.no_grad():
        got = torch.relu(net.bn(net.conv(torch.from_numpy(x))))[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize(("fs", "samples"), [(500, 5000), (100, 1000)])
def test_embeds_store_batches(tmp_path: Path, fs: int, samples: int) -> None:
    ADAPTER.save(small(), tmp_path / "model.hdf5")
    encoder = load_external(f"ribeiro2020:{tmp_path / 'model.hdf5'}", store_fs=fs)
    seen = []
    encoder.network.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    x = torch.randn(3, 12, samples) + 1.0
    with torch.no_grad():
        z = encoder.forward_features(x)
    assert z.shape == (3, 16 * 256) and encoder.embed_dim == 16 * 256  # 4096 / 4**2 samples
    # 10 s at 400 Hz = 4000 samples, zero-padded to 4096 in the middle; mV pass unscaled.
    network_input = seen[0]
    assert network_input.shape == (3, 12, 4096)
    assert torch.all(network_input[..., :48] == 0) and torch.all(network_input[..., -48:] == 0)
    assert abs(network_input[..., 48:-48].mean().item() - 1.0) < 0.05


def _drop_layer(src: Path, dst: Path, name: str) -> None:
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        f.copy("model_weights", g)
        group = g["model_weights"]
        del group[name]
        names = [n for n in group.attrs["layer_names"] if n.decode() != name]
        group.attrs["layer_names"] = np.array(names, dtype="S")


def test_bad_files_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.hdf5").write_text("not hdf5")
    pattern = r"notes\.hdf5: not a readable Keras HDF5 model \(Unable to "
    raises_one_line(pattern, ADAPTER.load, tmp_path / "notes.hdf5")

    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["tracings"] = np.zeros((2, 4096, 12), dtype=np.float32)
    raises_one_line(r"not a Keras HDF5 model \(no layer_names", ADAPTER.load, tmp_path / "plain.h5")

    ADAPTER.save(small(), tmp_path / "model.hdf5")
    _drop_layer(tmp_path / "model.hdf5", tmp_path / "short.hdf5", "conv1d_2")
    raises_one_line(
        r"5 conv1d layers; expected 6 for the Ribeiro", ADAPTER.load, tmp_path / "short.hdf5"
    )

    with h5py.File(tmp_path / "model.hdf5", "r+") as f:
        kernel = "model_weights/conv1d/conv1d/kernel:0"
        del f[kernel]
        f[kernel] = np.zeros((16, 8, 8), dtype=np.float32)  # 8 input leads
    raises_one_line(r"1 shape \(e\.g\. conv\.weight\)", ADAPTER.load, tmp_path / "model.hdf5")

    with h5py.File(tmp_path / "lstm.h5", "w") as f:
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = np.array([b"lstm"], dtype="S")
        layer = group.create_group("lstm")
        layer["lstm/recurrent_kernel:0"] = np.zeros((4, 16), dtype=np.float32)
        layer.attrs["weight_names"] = np.array([b"lstm/recurrent_kernel:0"], dtype="S")
    pattern = r"layer 'lstm' holds \['recurrent_kernel'\]; expected Conv1D, BatchNormalization"
    raises_one_line(pattern, ADAPTER.load, tmp_path / "lstm.h5")
