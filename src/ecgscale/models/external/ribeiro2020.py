"""The Ribeiro et al. 2020 ResNet, read from its released Keras HDF5 model (`model.hdf5`).

Sources: "Automatic diagnosis of the 12-lead ECG using a deep neural network", Nat. Commun. 11,
1760 (2020); code github.com/antonior92/automatic-ecg-diagnosis (`model.py`, README); weights
doi.org/10.5281/zenodo.3625017 (`model.zip` -> `model/model.hdf5`, other seeds alike).

Input contract (README): `(N, 4096, 12)` float32, 400 Hz (about 10 s; shorter exams zero-padded
to 4096 points), leads DI, DII, DIII, AVR, AVL, AVF, V1-V6. On units the README says "at the
scale 1e-4V: so if the signal is in V it should be multiplied by 1000"; the two halves disagree
and we follow the instruction (V x 1000 = mV), which is also how the CODE tracings it was trained
on read (the CODE-15% WFDB release takes them as mV). The network here reads `(batch, 12, 4096)`.

Architecture (`model.py`): conv(64, k16) -> BN -> ReLU, four pre-activation residual units to
widths 128, 196, 256, 320, each downsampling 4x (4096 -> 16 samples): conv(k16) -> BN -> ReLU ->
dropout -> conv(k16, stride 4) (+ skip: max-pool 4, then a 1x1 conv where the width changes) ->
BN -> ReLU -> dropout; then Flatten and Dense(6, sigmoid). Convolutions have no bias and
TensorFlow 'same' padding (kernel 16: 7 left, 8 right); BatchNormalization has epsilon 1e-3
(momentum 0.99, i.e. torch momentum 0.01); dropout rate 0.8 (Keras: the fraction dropped).
Embedding: the flattened last feature map (16 x 320 = 5120 features, Keras' channels-last
order), the input of the final dense layer.

HDF5 layout (what Keras writes; `save` writes the same): group `model_weights` (or the file root,
for `save_weights` files) with attribute `layer_names`; per layer a group with attribute
`weight_names` and datasets `<layer>/<layer>/kernel:0` (Conv1D: (k, in, out); Dense: (in, out),
`bias:0`) and `gamma:0`, `beta:0`, `moving_mean:0`, `moving_variance:0` (BatchNormalization).
Layers are matched by kind in creation order, the number in Keras' default names (`conv1d_3`),
so both the Keras 2.2 (`conv1d_1`, ...) and TF 2 (`conv1d`, `conv1d_1`, ...) names load; `save`
writes TF 2 names with `keras_version` 2.4.0, readable by Keras' `load_weights(path,
by_name=True)` into `model.py`'s model built in a fresh session. Nothing is unpickled.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecgscale.data.preprocess import STANDARD_LEADS
from ecgscale.errors import DataError
from ecgscale.models.external import Adapter, InputContract, load_strict, register_adapter
from ecgscale.models.layers import same_padding

SAMPLES = 4096
DOWNSAMPLE = 4  # per residual unit
FILTERS = (64, 128, 196, 256, 320)  # stem, then each residual unit
BN_KEYS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
           "moving_variance": "running_var"}  # fmt: skip


class SameConv1d(nn.Conv1d):
    """Bias-free Conv1D with TensorFlow 'same' padding (any kernel, any stride)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(c_in, c_out, kernel_size, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = same_padding(x.shape[-1], self.kernel_size[0], self.stride[0])
        return super().forward(F.pad(x, pad))


def batch_norm(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)


class ResidualUnit(nn.Module):
    """`(x, y) -> (x', y')`: x the activated output, y the pre-activation sum (module docstring)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.skip = SameConv1d(c_in, c_out, 1) if c_in != c_out else None
        self.conv1 = SameConv1d(c_in, c_out, kernel_size)
        self.bn1 = batch_norm(c_out)
        self.conv2 = SameConv1d(c_out, c_out, kernel_size, DOWNSAMPLE)
        self.bn2 = batch_norm(c_out)
        self.dropout = nn.Dropout(dropout)

    def keras_layers(self) -> list[nn.Module]:
        """The weighted layers in the order `model.py` creates them."""
        skip = [] if self.skip is None else [self.skip]
        return [*skip, self.conv1, self.bn1, self.conv2, self.bn2]

    def forward(self, xy: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = xy
        pad = same_padding(y.shape[-1], DOWNSAMPLE, DOWNSAMPLE)  # Keras pools ignore the padding
        y = F.max_pool1d(F.pad(y, pad, value=-torch.inf), DOWNSAMPLE)
        if self.skip is not None:
            y = self.skip(y)
        x = self.dropout(F.relu(self.bn1(self.conv1(x))))
        y = self.conv2(x) + y
        return self.dropout(F.relu(self.bn2(y))), y


class RibeiroResNet(nn.Module):
    """`(batch, 12, 4096)` in mV -> `(batch, embed_dim)`, the flattened last feature map; the
    diagnosis layer `dense` is kept for the checkpoint but not applied."""

    def __init__(
        self,
        filters: Sequence[int] = FILTERS,
        kernel_size: int = 16,
        n_classes: int = 6,
        dropout: float = 0.8,
    ) -> None:
        super().__init__()
        self.conv = SameConv1d(len(STANDARD_LEADS), filters[0], kernel_size)
        self.bn = batch_norm(filters[0])
        self.units = nn.ModuleList(
            ResidualUnit(c_in, c_out, kernel_size, dropout)
            for c_in, c_out in itertools.pairwise(filters)
        )
        self.embed_dim = filters[-1] * SAMPLES // DOWNSAMPLE ** len(self.units)
        self.dense = nn.Linear(self.embed_dim, n_classes)

    def keras_layers(self) -> list[nn.Module]:
        """Conv, BN and Dense layers in `model.py`'s creation order (the Keras name numbers)."""
        units = [layer for unit in self.units for layer in unit.keras_layers()]
        return [self.conv, self.bn, *units, self.dense]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        xy = (x, x)
        for unit in self.units:
            xy = unit(xy)
        return xy[0].transpose(1, 2).flatten(1)  # Keras Flatten of (samples, channels)


# ----------------------------------------------------------------------------------------------
# Keras HDF5 <-> torch


def _kind(module: nn.Module) -> str:
    return {SameConv1d: "conv1d", nn.BatchNorm1d: "batch_normalization", nn.Linear: "dense"}[
        type(module)
    ]


def _layer_kind(weights: dict[str, np.ndarray]) -> str | None:
    names = set(weights)
    if names == {"kernel"} and weights["kernel"].ndim == 3:
        return "conv1d"
    if names == set(BN_KEYS):
        return "batch_normalization"
    if names == {"kernel", "bias"} and weights["kernel"].ndim == 2:
        return "dense"
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_keras_layers(path: Path) -> dict[str, list[dict[str, np.ndarray]]]:
    """Weighted layers of a Keras HDF5 file by kind ("conv1d", "batch_normalization",
    "dense"), each in creation order; weights keyed by their short name ("kernel", "gamma")."""
    if not path.is_file():
        raise DataError(f"{path}: no such Keras HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in group.attrs:
                raise DataError(f"{path}: not a Keras HDF5 model (no layer_names attribute)")
            found: dict[str, list[tuple[int, dict[str, np.ndarray]]]] = {}
            for name in map(_text, group.attrs["layer_names"]):
                layer = group[name]
                weights = {
                    _text(w).rsplit("/", 1)[-1].split(":")[0]: np.asarray(layer[_text(w)])
                    for w in layer.attrs.get("weight_names", [])
                }
                if not weights:
                    continue  # activations, dropout, pooling, add, flatten, input
                kind = _layer_kind(weights)
                if kind is None:
                    raise DataError(
                        f"{path}: layer {name!r} holds {sorted(weights)}; expected Conv1D, "
                        "BatchNormalization or Dense weights of the Ribeiro et al. 2020 ResNet"
                    )
                number = re.search(r"_(\d+)$", name)
                found.setdefault(kind, []).append((int(number[1]) if number else 0, weights))
    except (OSError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable Keras HDF5 model ({first[:160]})") from exc
    return {kind: [w for _, w in sorted(ws, key=lambda t: t[0])] for kind, ws in found.items()}


def _state_from_keras(
    network: RibeiroResNet, layers: dict[str, list[dict[str, np.ndarray]]], path: Path
) -> dict[str, torch.Tensor]:
    """The torch state dict that `layers` (from `read_keras_layers`) give `network`."""
    state = dict(network.state_dict())  # num_batches_tracked: not in Keras, kept
    names = {id(m): name for name, m in network.named_modules()}
    modules = network.keras_layers()
    for kind in ("conv1d", "batch_normalization", "dense"):
        ours = [m for m in modules if _kind(m) == kind]
        theirs = layers.get(kind, [])
        if len(ours) != len(theirs):
            raise DataError(
                f"{path}: {len(theirs)} {kind} layers; expected {len(ours)} for the "
                "Ribeiro et al. 2020 ResNet"
            )
        for module, weights in zip(ours, theirs, strict=True):
            prefix = names[id(module)]
            if kind == "batch_normalization":
                pairs = {BN_KEYS[k]: v for k, v in weights.items()}
            elif kind == "conv1d":
                pairs = {"weight": weights["kernel"].transpose(2, 1, 0)}
            else:
                pairs = {"weight": weights["kernel"].T, "bias": weights["bias"]}
            for key, value in pairs.items():
                state[f"{prefix}.{key}"] = torch.from_numpy(np.ascontiguousarray(value))
    return state


def write_keras_layers(network: RibeiroResNet, path: Path) -> None:
    """Write `network` in the Keras HDF5 layout `read_keras_layers` reads (TF 2 layer names)."""
    counts: dict[str, int] = {}
    with h5py.File(path, "w") as f:
        group = f.create_group("model_weights")
        layer_names = []
        for module in network.keras_layers():
            kind = _kind(module)
            count = counts[kind] = counts.get(kind, -1) + 1
            name = kind if count == 0 else f"{kind}_{count}"
            if kind == "batch_normalization":
                weights = {k: getattr(module, v) for k, v in BN_KEYS.items()}
            elif kind == "conv1d":
                weights = {"kernel": module.weight.permute(2, 1, 0)}
            else:
                weights = {"kernel": module.weight.T, "bias": module.bias}
            layer = group.create_group(name)
            for short, value in weights.items():
                layer.create_dataset(f"{name}/{short}:0", data=value.detach().cpu().float().numpy())
            layer.attrs["weight_names"] = np.array([f"{name}/{w}:0" for w in weights], dtype="S")
            layer_names.append(name)
        for target in (f, group):
            target.attrs["keras_version"] = b"2.4.0"
            target.attrs["backend"] = b"tensorflow"
        group.attrs["layer_names"] = np.array(layer_names, dtype="S")


@register_adapter
class Ribeiro2020(Adapter):
    name = "ribeiro2020"
    contract = InputContract(fs=400.0, samples=SAMPLES, leads=STANDARD_LEADS, units="mV")
    description = "Ribeiro et al. 2020 ResNet, Keras model.hdf5 (6 CODE abnormalities)"

    def load(self, path: Path) -> nn.Module:
        layers = read_keras_layers(path)
        bns, convs, dense = (layers.get(k, []) for k in ("batch_normalization", "conv1d", "dense"))
        if len(bns) % 2 != 1 or not convs or len(dense) != 1:
            raise DataError(
                f"{path}: {len(convs)} Conv1D, {len(bns)} BatchNormalization and {len(dense)} "
                "Dense layers; expected the Ribeiro et al. 2020 ResNet (13, 9, 1)"
            )
        network = RibeiroResNet(
            filters=[len(bns[0]["gamma"])] + [len(bn["gamma"]) for bn in bns[2::2]],
            kernel_size=convs[0]["kernel"].shape[0],
            n_classes=dense[0]["kernel"].shape[1],
        )
        return load_strict(network, _state_from_keras(network, layers, path), path).eval()

    def save(self, network: nn.Module, path: Path) -> None:
        if not isinstance(network, RibeiroResNet):
            raise TypeError(f"expected a RibeiroResNet, got {type(network).__name__}")
        write_keras_layers(network, path)

    def random(self, seed: int = 0, **config: Any) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return RibeiroResNet(**config).eval()
