"""Encoders from other projects, loaded from weights the user holds locally (nothing downloads).

An adapter reads one project's checkpoint layout into a `torch.nn.Module` (the *network*) that maps
`(batch, leads, samples)` in the project's own units to `(batch, embed_dim)`, and writes it back in
the same layout (so a checkpoint round-trips tensor for tensor). Its `InputContract` says what the
network reads: sampling rate (Hz), window length (samples), lead order and units.
`AdaptedEncoder` wraps the network as an ecgscale `Encoder` whose input is a store batch (12
standard leads in mV at the store's rate and length): it picks the leads, resamples with a fixed
polyphase FIR filter (the `scipy.signal.resample_poly` design, applied as a convolution so it runs
on any device and inside fine-tuning), centre-crops or zero-pads to the window and scales the
units. Every external model can then be probed, fine-tuned and benchmarked like an ecgscale run.

A model reference names one:

    "hubert-ecg:/models/hubert_ecg_base"     registered adapter ":" local checkpoint path
    "mypkg.models:make_encoder"              a user factory returning a torch.nn.Module
    "mypkg.models:make_encoder@w.safetensors"   ... with weights loaded from a safetensors file

A user factory's module may declare `input_contract` (an `InputContract`) on the function; without
one the network reads the store's batches as they are. Checkpoints are read with safetensors or
`torch.load(weights_only=True)`, never as arbitrary pickles.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import pkgutil
import re
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from pickle import UnpicklingError
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from scipy import signal as sps
from torch import nn

from ecgscale.data.preprocess import STANDARD_LEADS
from ecgscale.errors import ConfigError, DataError
from ecgscale.models.base import Encoder


@dataclass(frozen=True)
class InputContract:
    """What a network reads.

    Attributes:
        fs: sampling rate in Hz.
        samples: window length in samples (None: any length; the resampled store length is kept).
        leads: lead names in the network's order, a subset of the 12 standard leads.
        scale: network units per mV (1000 for microvolts).
        units: name of those units, for messages and docs.
    """

    fs: float
    samples: int | None
    leads: tuple[str, ...] = STANDARD_LEADS
    scale: float = 1.0
    units: str = "mV"

    def __post_init__(self) -> None:
        unknown = [lead for lead in self.leads if lead not in STANDARD_LEADS]
        if unknown or not self.leads:
            raise ConfigError(f"input contract leads {list(self.leads)}: expected standard leads")

    def describe(self) -> str:
        length = "any length" if self.samples is None else f"{self.samples} samples"
        return f"{self.fs:g} Hz, {length}, {len(self.leads)} leads, {self.units}"


class Adapter(ABC):
    """One external project's checkpoint layout. Subclasses register with `@register_adapter`."""

    name: str
    contract: InputContract
    description: str = ""

    @abstractmethod
    def load(self, path: Path) -> nn.Module:
        """The network with the weights at `path`; it has an `embed_dim` attribute and maps
        `(batch, len(contract.leads), samples)` in contract units to `(batch, embed_dim)`.
        A file or folder that is not this project's checkpoint raises a one-line `DataError`."""

    @abstractmethod
    def save(self, network: nn.Module, path: Path) -> None:
        """Write `network` to `path` in the project's own layout (what `load` reads)."""

    def random(self, seed: int = 0, **config: Any) -> nn.Module:
        """A randomly initialised network in this layout (for tests and smoke runs); adapters
        with an architecture config take it as keyword arguments."""
        raise NotImplementedError(f"adapter {self.name!r} has no random initialisation")


_ADAPTERS: dict[str, Adapter] = {}


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: register an instance of `cls` under `cls.name`."""
    _ADAPTERS[cls.name] = cls()
    return cls


def _load_adapters() -> None:
    """Import every module of this package once: each registers its adapter."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def list_adapters() -> list[str]:
    """Names of the registered adapters, sorted."""
    _load_adapters()
    return sorted(_ADAPTERS)


def get_adapter(name: str) -> Adapter:
    _load_adapters()
    if name not in _ADAPTERS:
        raise ConfigError(
            f"unknown external model {name!r}; expected one of {', '.join(sorted(_ADAPTERS))} "
            "or module:function"
        )
    return _ADAPTERS[name]


# ----------------------------------------------------------------------------------------------
# Checkpoint reading without pickle


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; an unreadable file is a one-line `DataError`."""
    if not path.is_file():
        raise DataError(f"{path}: no such safetensors file")
    try:
        return load_file(str(path), device="cpu")
    except (OSError, SafetensorError) as exc:
        raise DataError(f"{path}: not a readable safetensors file ({exc})") from exc


_LOAD_ERRORS = (OSError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, UnpicklingError)


def load_state(path: Path) -> dict[str, Any]:
    """The object in a PyTorch checkpoint file, read with `weights_only=True` (tensors, dicts,
    lists, numbers and strings only); anything else is a one-line `DataError`."""
    if not path.is_file():
        raise DataError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{path}: not a PyTorch checkpoint that loads with weights_only=True ({first[:160]})"
        ) from exc


def load_strict(network: nn.Module, state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """`network` with `state` loaded; missing, unexpected or mis-shaped tensors are one line."""
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
        raise DataError(f"{path}: tensors do not match the architecture: {', '.join(parts)}")
    network.load_state_dict(state)
    return network


# ----------------------------------------------------------------------------------------------
# Store batch -> network input


class Resample(nn.Module):
    """Polyphase resampling along the last axis by `up / down`, as `scipy.signal.resample_poly`
    (Kaiser window, beta 5, half-length 10 x max(up, down), zero-padded edges): zero-stuff by
    `up`, convolve with the fixed low-pass, keep every `down`-th sample. `(..., n)` ->
    `(..., ceil(n * up / down))`."""

    def __init__(self, up: int, down: int) -> None:
        super().__init__()
        g = math.gcd(up, down)
        self.up, self.down = up // g, down // g
        taps = np.ones(1)
        if (self.up, self.down) != (1, 1):
            half = 10 * max(self.up, self.down)
            taps = sps.firwin(2 * half + 1, 1.0 / max(self.up, self.down), window=("kaiser", 5.0))
            taps = taps * self.up
        taps = torch.as_tensor(taps, dtype=torch.float32).view(1, 1, -1)
        self.register_buffer("taps", taps, persistent=False)  # depends on the store, not weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.up, self.down) == (1, 1):
            return x
        shape, n = x.shape[:-1], x.shape[-1]
        flat = x.reshape(-1, 1, n)
        if self.up > 1:
            stuffed = flat.new_zeros(flat.shape[0], 1, n * self.up)
            stuffed[..., :: self.up] = flat
            flat = stuffed
        half = (self.taps.shape[-1] - 1) // 2
        y = F.conv1d(flat, self.taps.to(flat.dtype), padding=half)[..., :: self.down]
        return y[..., : math.ceil(n * self.up / self.down)].reshape(*shape, -1)


def centre_window(x: torch.Tensor, samples: int) -> torch.Tensor:
    """Centre-crop or zero-pad the last axis to `samples` (as `preprocess.pad_or_crop`)."""
    n = x.shape[-1]
    if n >= samples:
        start = (n - samples) // 2
        return x[..., start : start + samples]
    left = (samples - n) // 2
    return F.pad(x, (left, samples - n - left))


class AdaptedEncoder(Encoder):
    """An external network behind the ecgscale encoder contract: store batches
    `(batch, 12, store samples)` in mV at `store_fs` -> `(batch, embed_dim)`."""

    def __init__(self, network: nn.Module, contract: InputContract | None, store_fs: float) -> None:
        super().__init__()
        self.network = network
        self.contract = contract
        self.embed_dim = int(network.embed_dim)
        leads = STANDARD_LEADS if contract is None else contract.leads
        self.register_buffer(
            "lead_index", torch.tensor([STANDARD_LEADS.index(lead) for lead in leads]),
            persistent=False,
        )  # fmt: skip
        ratio = Fraction(1) if contract is None else Fraction(contract.fs / store_fs)
        ratio = ratio.limit_denominator(1000)
        self.resample = Resample(ratio.numerator, ratio.denominator)

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """Store batch -> network input (leads, rate, window, units of the contract)."""
        if self.contract is None:
            return x
        y = self.resample(x.index_select(1, self.lead_index))
        if self.contract.samples is not None:
            y = centre_window(y, self.contract.samples)
        return y * self.contract.scale if self.contract.scale != 1.0 else y

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        z = self.network(self.adapt(x))
        if z.ndim != 2 or z.shape[1] != self.embed_dim:
            raise DataError(
                f"external network returned {tuple(z.shape)}; expected (batch, {self.embed_dim})"
            )
        return z


# ----------------------------------------------------------------------------------------------
# References


@dataclass(frozen=True)
class ExternalRef:
    """A parsed model reference: an adapter and a checkpoint path, or a user factory."""

    text: str
    adapter: str | None = None
    path: Path | None = None
    factory: str | None = None
    weights: Path | None = None

    @property
    def files(self) -> list[Path]:
        """The files whose bytes define the model (for cache keys): the checkpoint, or a
        factory's module source and its weights file."""
        roots = [p for p in (self.path, self.weights) if p is not None]
        if self.factory is not None:
            spec = importlib.util.find_spec(self.factory.partition(":")[0])
            if spec is not None and spec.origin and Path(spec.origin).is_file():
                roots.insert(0, Path(spec.origin))
        out: list[Path] = []
        for root in roots:
            out += sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root]
        return out


_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def parse_ref(text: str) -> ExternalRef | None:
    """The external reference in `text`, or None when it names no adapter or factory (then it
    is an ecgscale run folder)."""
    head, sep, rest = text.partition(":")
    if sep and head in list_adapters():
        if not rest:
            raise ConfigError(f"{text!r}: expected {head}:PATH to a local checkpoint")
        return ExternalRef(text, adapter=head, path=Path(rest).expanduser())
    target, at, weights = text.partition("@")
    if _FACTORY.match(target) and not Path(text).exists():
        return ExternalRef(text, factory=target, weights=Path(weights) if at else None)
    return None


def _call_factory(ref: ExternalRef) -> tuple[nn.Module, InputContract | None]:
    module_name, _, function = (ref.factory or "").partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{ref.text!r}: cannot import module {module_name!r} ({exc})") from exc
    factory: Callable[[], nn.Module] | None = getattr(module, function, None)
    if not callable(factory):
        raise ConfigError(f"{ref.text!r}: module {module_name!r} has no function {function!r}")
    network = factory()
    if not isinstance(network, nn.Module) or not isinstance(getattr(network, "embed_dim", 0), int):
        raise ConfigError(
            f"{ref.text!r}: the factory must return a torch.nn.Module with an int embed_dim"
        )
    if ref.weights is not None:
        load_strict(network, load_safetensors(ref.weights), ref.weights)
    return network, getattr(factory, "input_contract", None)


def load_network(ref: ExternalRef) -> tuple[nn.Module, InputContract | None]:
    """The network of a reference and its input contract."""
    if ref.factory is not None:
        return _call_factory(ref)
    adapter = get_adapter(ref.adapter or "")
    assert ref.path is not None
    if not ref.path.exists():
        raise DataError(f"{ref.path}: no such {adapter.name} checkpoint")
    return adapter.load(ref.path), adapter.contract


def load_external(ref: ExternalRef | str, store_fs: float) -> AdaptedEncoder:
    """The external model `ref` as an encoder of store batches sampled at `store_fs` Hz."""
    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    if parsed is None:
        raise ConfigError(f"{ref!r}: not an external model reference (ADAPTER:PATH or module:fn)")
    with torch.random.fork_rng(devices=[]):
        network, contract = load_network(parsed)
    return AdaptedEncoder(network, contract, store_fs)
