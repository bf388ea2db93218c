"""Pre-training objectives: one protocol, a name -> class registry, and the batch they consume.

An objective owns its heads (classification, projection, reconstruction) and turns an encoder and a
batch into a scalar loss and a few float metrics:

    loss, metrics = objective.loss(encoder, batch)

It declares the encoder input kinds it can train (`input_kinds`, matched against the model's
registered `input_kind`) so that an impossible pairing fails when the training configuration is
built (`check_pairing`), and its options as a pydantic model (`Options`) so that they are validated
and resolved (defaults filled in) at the same time.

Randomness inside an objective (segment positions, masks) is a function of `ObjectiveBatch.seed` and
the store row of each record only: the same record at the same step draws the same numbers whatever
its position in the batch, on one process or sharded over several, and after a resume.

Registered objectives: "sl" (`supervised.py`), "cmsc" (`cmsc.py`), "masked" (`masked_beats.py`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pydantic
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from ecgscale.errors import ConfigError
from ecgscale.models.base import Encoder
from ecgscale.models.flops import train_flops

if TYPE_CHECKING:
    from ecgscale.models.beats import BeatTokens

# Modules that register objectives; imported lazily on first registry access.
_OBJECTIVE_MODULES: tuple[str, ...] = (
    "ecgscale.objectives.supervised",
    "ecgscale.objectives.cmsc",
    "ecgscale.objectives.masked_beats",
)

TRAIN_PHASE = 0
VAL_PHASE = 1


@dataclass
class ObjectiveBatch:
    """What an objective's `loss` receives.

    Attributes:
        x: `(batch, leads, samples)` float32 mV, on the training device.
        y: `(batch, classes)` float32 multi-hot labels, or None when the objective needs none.
        index: `(batch,)` store rows of the records.
        seed: `(run seed, phase, step)`; with a record's row it seeds that record's draws.
        sharded: True when this is one rank's shard of a global batch under DDP; objectives whose
            loss couples records (contrastive negatives, token-count normalisation) then gather or
            reduce across ranks so that the loss equals the single-process one.
        tokens: the records' beat tokens, precomputed for a beat-token encoder (the trainer
            passes them to objectives with `whole_records`), else None.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    index: np.ndarray
    seed: tuple[int, ...] = (0, TRAIN_PHASE, 0)
    sharded: bool = False
    tokens: BeatTokens | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def records(self) -> torch.Tensor | BeatTokens:
        """The whole records as the encoder reads them: the precomputed `tokens`, else `x`."""
        return self.x if self.tokens is None else self.tokens

    def uniform(self, size: int) -> np.ndarray:
        """`(batch, size)` float64 uniform draws in [0, 1), one seeded stream per record."""
        return np.stack(
            [np.random.default_rng([*self.seed, int(row)]).random(size) for row in self.index]
        )


@dataclass(frozen=True)
class ObjectiveContext:
    """What an objective needs to build its heads.

    Attributes:
        encoder: the encoder it will train (for `embed_dim` and token sizes).
        fs: sampling rate of the store in Hz.
        length: samples per record.
        leads: leads per record.
        classes: class names of the label set (supervised objectives), else empty.
        patient_codes: `(records,)` int64 patient code of every store row (same patient, same code).
    """

    encoder: Encoder
    fs: float
    length: int
    leads: int = 12
    classes: tuple[str, ...] = ()
    patient_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


class Objective(nn.Module):
    """Base class of the objectives; subclasses set the class attributes and `loss`.

    Attributes:
        name: registry name.
        input_kinds: encoder input kinds it can train ("waveform", "beats").
        needs_labels: whether batches must carry `y` from a label set.
        whole_records: whether it encodes whole records (not crops), so that a beat-token
            encoder's tokens can be computed once per store and passed as `ObjectiveBatch.tokens`.
        Options: pydantic model of its options (extra keys forbidden).
    """

    name: ClassVar[str]
    input_kinds: ClassVar[frozenset[str]]
    needs_labels: ClassVar[bool] = False
    whole_records: ClassVar[bool] = False
    Options: ClassVar[type[BaseModel]]

    def __init__(self, options: BaseModel, context: ObjectiveContext) -> None:
        super().__init__()
        self.options = options

    def loss(
        self, encoder: Encoder, batch: ObjectiveBatch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss (mean over the batch) and float metrics of one batch."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, encoder: Encoder, batches: Iterable[ObjectiveBatch]) -> dict[str, float]:
        """Held-out metrics over `batches` (eval mode is the caller's): the record-weighted means
        of the loss and of each batch metric."""
        totals: dict[str, float] = {}
        count = 0
        for batch in batches:
            loss, metrics = self.loss(encoder, batch)
            n = len(batch)
            for key, value in {"loss": float(loss), **metrics}.items():
                totals[key] = totals.get(key, 0.0) + value * n
            count += n
        if count == 0:
            raise ConfigError(f"objective {self.name!r}: no held-out records to evaluate")
        return {key: value / count for key, value in totals.items()}

    def train_flops_per_record(self, encoder: Encoder, leads: int, length: int) -> int:
        """Encoder forward + backward FLOPs spent on one training record (heads not counted, as
        N counts the encoder only); objectives that encode crops or tokens override this."""
        return train_flops(encoder, leads, length)


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective class."""

    name: str
    cls: type[Objective]


_REGISTRY: dict[str, ObjectiveSpec] = {}


def register_objective(name: str) -> Callable[[type[Objective]], type[Objective]]:
    """Class decorator registering an `Objective` subclass under `name`."""

    def decorate(cls: type[Objective]) -> type[Objective]:
        if name in _REGISTRY:
            raise RuntimeError(f"objective {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = ObjectiveSpec(name, cls)
        return cls

    return decorate


def _load() -> None:
    for module in _OBJECTIVE_MODULES:
        importlib.import_module(module)


def list_objectives() -> list[str]:
    """Names of all registered objectives, sorted."""
    _load()
    return sorted(_REGISTRY)


def get_objective(name: str) -> ObjectiveSpec:
    """The spec of objective `name`; an unknown name is a `ConfigError` listing the known ones."""
    _load()
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown objective {name!r}; expected one of: {', '.join(list_objectives())}"
        )
    return _REGISTRY[name]


def resolve_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """Validate objective `name`'s options and return them complete (defaults filled in)."""
    cls = get_objective(name).cls
    try:
        return cls.Options.model_validate(options or {}).model_dump(mode="json")
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(
            f"objective {name!r} option {where}: {err['msg']} (got {err.get('input')!r})"
        ) from exc


def check_pairing(objective: str, model: str, input_kind: str) -> None:
    """Raise `ConfigError` if objective `objective` cannot train model `model` (of `input_kind`)."""
    cls = get_objective(objective).cls
    if input_kind not in cls.input_kinds:
        kinds = ", ".join(sorted(cls.input_kinds))
        raise ConfigError(
            f"objective {objective!r} trains encoders of input kind {kinds}; model {model!r} "
            f"reads {input_kind!r} (choose another objective or model)"
        )


def create_objective(name: str, options: dict[str, Any] | None, context: ObjectiveContext):
    """Build objective `name` with validated `options` for the encoder in `context`."""
    cls = get_objective(name).cls
    check_pairing(name, type(context.encoder).__name__, context.encoder.input_kind)
    return cls(cls.Options.model_validate(resolve_options(name, options)), context)


class OptionsModel(BaseModel):
    """Base of every objective's options: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)
