"""`TrainConfig`: everything that determines a pre-training run, validated when it is built.

Validation resolves what can be resolved without the data: the model name and its input kind, the
objective and its options (defaults filled in), the pairing of the two, the budget (exactly one of
`epochs` and `samples`) and the CUDA-only switches. Problems that need the store (label set,
record length, batch size versus training records) are checked when training starts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ecgscale.errors import ConfigError
from ecgscale.models.registry import get_spec, resolve_model
from ecgscale.objectives import check_pairing, resolve_options

# Fields that leave the trajectory unchanged: not in `run_hash`, free to differ on resume.
NOT_IDENTITY = ("out", "prefetch", "tensorboard")


class TrainConfig(BaseModel):
    """A pre-training run.

    Attributes:
        model: registered model name (`ecgscale.models.registry`); a size name such as
            "resnet-200K" is stored as its family with the size's config under `model_options`.
        model_options: keyword arguments of the model's factory (alias `model_config` in YAML,
            JSON and the CLI; `fs` is filled in from the store for factories that take it).
        objective: registered objective: "sl", "cmsc" or "masked".
        objective_options: the objective's options (validated; stored resolved).
        data: path of the store to train on.
        label_set: label set of the store for supervised objectives.
        label_top_k: train on the `label_top_k` most frequent classes of the label set in the
            training split (label-scaling studies); None: all classes.
        data_fraction: fraction of the training patients used (nested patient-level subsets).
        data_seed: seed of the patient ordering behind `data_fraction`.
        batch_size: global batch size in records (split evenly over DDP ranks).
        optimizer: "adamw" (default), "sgd" (plain) or "sgdm" (SGD with `momentum`); all use the
            same warm-up + cosine schedule, clipping and decoupled-from-norms weight decay.
        momentum: momentum of "sgdm".
        lr: peak learning rate.
        weight_decay: AdamW decoupled weight decay, applied to weights of rank >= 2 only (not to
            biases and normalisation parameters).
        betas: AdamW moment coefficients.
        warmup_fraction: fraction of the planned steps of linear warm-up from 0 to `lr`.
        min_lr_ratio: the cosine decay ends at `lr * min_lr_ratio`.
        epochs: budget as passes over the training records (with `patience`: early stopping on
            the validation loss, checked after every epoch).
        patience: validations without a new best validation loss before stopping (None: never).
        val_every: validate (and checkpoint) every this many training records, rounded up to
            whole epochs (None: every epoch); on small subsets this keeps validation from
            dominating the cost and early stopping from reacting to single steps.
        samples: budget as training records seen (rounded up to whole global batches).
        max_samples: with an epochs budget, a cap on training records seen (rounded up to whole
            global batches): small subsets train for all `epochs` (or until early stopping),
            large ones stop at the cap (None: no cap).
        grad_clip: clip the global gradient L2 norm to this (None: no clipping).
        seed: seed of initialisation, record order, dropout and the objective's draws.
        device: "cpu", "cuda" or "cuda:N" (under torchrun each rank takes cuda:LOCAL_RANK).
        bf16: bf16 autocast of the forward pass (CUDA only).
        compile: `torch.compile` the encoder (CUDA only).
        checkpoint_every: steps between mid-epoch checkpoints (0: at the end of epochs only).
        prefetch: batches the loader prepares ahead in a background thread.
        tensorboard: write TensorBoard event files of the log (train loss, lr, ... per step;
            validation metrics per validation): True: under `out/tb`; a path: that folder;
            False (default): none. Needs the `tensorboard` package (`ecgscale[track]`).
        out: run directory (config, checkpoints, metrics log, result).
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, protected_namespaces=(), populate_by_name=True
    )

    model: str
    model_options: dict[str, Any] = Field(default_factory=dict, alias="model_config")
    objective: str
    objective_options: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    data: Path
    label_set: str | None = None
    label_top_k: int | None = Field(None, ge=1)
    data_fraction: float = Field(1.0, gt=0.0, le=1.0)
    data_seed: int = 0
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adamw", "sgd", "sgdm"] = "adamw"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    epochs: int | None = Field(None, ge=1)
    patience: int | None = Field(None, ge=1)
    samples: int | None = Field(None, ge=1)
    max_samples: int | None = Field(None, ge=1)
    val_every: int | None = Field(None, ge=1)
    grad_clip: float | None = Field(1.0, gt=0.0)
    seed: int = 0
    device: str = "cpu"
    bf16: bool = False
    compile: bool = False
    checkpoint_every: int = Field(0, ge=0)
    prefetch: int = Field(2, ge=0)
    tensorboard: bool | Path = False
    out: Path

    @model_validator(mode="before")
    @classmethod
    def _family(cls, data: Any) -> Any:
        """ "FAMILY-SIZE" -> model FAMILY with the size's config under the given options."""
        if not isinstance(data, dict) or not isinstance(data.get("model"), str):
            return data
        family, config = resolve_model(data["model"])
        key = "model_options" if "model_options" in data else "model_config"
        return {**data, "model": family, key: {**config, **(data.get(key) or {})}}

    @model_validator(mode="after")
    def _resolve(self) -> TrainConfig:
        if (self.epochs is None) == (self.samples is None):
            raise ConfigError("training budget: give exactly one of epochs and samples")
        if self.epochs is None and (self.patience is not None or self.max_samples is not None):
            raise ConfigError(
                "patience (early stopping) and max_samples need an epochs budget, not samples"
            )
        try:
            device = torch.device(self.device)
        except RuntimeError as exc:
            raise ConfigError(f"device {self.device!r}: expected cpu, cuda or cuda:N") from exc
        if device.type not in ("cpu", "cuda"):
            raise ConfigError(f"device {self.device!r}: expected cpu, cuda or cuda:N")
        for flag in ("bf16", "compile"):
            if getattr(self, flag) and device.type != "cuda":
                raise ConfigError(
                    f"{flag} is a CUDA-only option (device is {self.device!r}); drop it on CPU"
                )
        check_pairing(self.objective, self.model, get_spec(self.model).input_kind)
        return self

    @field_validator("objective_options")
    @classmethod
    def _options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "objective" not in info.data:  # the objective field itself failed validation
            return value
        return resolve_options(info.data["objective"], value)

    def resolved(self) -> dict[str, Any]:
        """JSON-ready dict of every field (the objective's options complete)."""
        return self.model_dump(mode="json", by_alias=True)

    def run_hash(self) -> str:
        """Stable id of what determines the trajectory (every field but `NOT_IDENTITY`)."""
        fields = {k: v for k, v in self.resolved().items() if k not in NOT_IDENTITY}
        text = json.dumps(fields, sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
