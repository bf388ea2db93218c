"""A design space of AnyNet CNNs in YAML: sampled parameters, conditions, FLOP bounds.

A space file (see `spaces/jabareen2026.yaml`, the space of Jabareen et al. 2026, and
examples/design_space.yaml) holds:

    name: jabareen2026
    model: anynet                      # the design-space CNN (exact analytic FLOPs)
    input: {leads: 12, length: 1024}   # FLOPs are forward FLOPs per record of this shape
    flops: {min: 1.0e6, max: 1.0e9, strata_per_decade: 1}
    stratify: [optimizer]              # choice parameters crossed with the FLOP strata
    fixed: {kernel_size: 3}            # model options every network shares
    parameters:                        # sampled in this order
      depth: {type: int, low: 4, high: 20}
      w_0: {type: int, low: 32, high: 128, step: 8, at_least: w_init}
      se_ratio: {type: choice, choices: [0.25, null]}
      lr:                              # alternatives: the first whose `when` holds is drawn
        - {type: float, low: 1.0e-4, high: 1.0e-2, log: true, target: train,
           when: {optimizer: adamw}}
        - {type: float, low: 1.0e-3, high: 1.0e-1, log: true, target: train}
    study: {...}                       # optional: how to run it (`ecgscale.design.sampler`)

Parameter kinds: `int` (low..high on a `step` grid, optionally log-uniform), `float` (uniform or
log-uniform, optionally on a `step` grid), `choice` (uniform over `choices`; `null` allowed) and
`fixed` (`value`). `target` says where a value goes: `model` (an `AnyNetConfig` field), `train`
(`optimizer`, `lr`, `batch_size`) or `none` (a switch that only other parameters' `when` read).
`when: {param: value or [values]}` makes a parameter conditional on parameters drawn before it;
a parameter with no applicable alternative is inactive: its value is `null` and the model keeps
its default. `at_least: other` raises an int to at least an earlier parameter's value (the
reference's w_0 := max(w_0, w_init)).
"""

from __future__ import annotations

import math
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ecgscale.errors import ConfigError, UserError
from ecgscale.models.anynet import AnyNetConfig

OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd", "sgdm")
"""Optimisers a space may name: AdamW, plain SGD and SGD with momentum 0.9 (the reference's)."""

TRAIN_TARGETS: tuple[str, ...] = ("optimizer", "lr", "batch_size")
DEFAULT_SPACE = "jabareen2026"
Scalar = bool | int | float | str | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Param(_Strict):
    target: Literal["model", "train", "none"] = "model"
    when: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)

    def applies(self, drawn: dict[str, Any]) -> bool:
        """Whether every condition of `when` holds for the values drawn so far."""
        for name, wanted in self.when.items():
            options = wanted if isinstance(wanted, list) else [wanted]
            if drawn.get(name) not in options:
                return False
        return True


class IntParam(_Param):
    """Integers low..high (inclusive) on a `step` grid; uniform, or log-uniform when `log`."""

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False
    at_least: str | None = None

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        if self.high < self.low or (self.log and self.low < 1):
            raise ValueError(f"expected 0 < low <= high (log) or low <= high, got {self.low}..")
        return self

    def draw(self, rng: np.random.Generator) -> int:
        grid = np.arange(self.low, self.high + 1, self.step)
        if not self.log:
            return int(grid[rng.integers(len(grid))])
        x = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return int(grid[np.argmin(np.abs(grid - x))])


class FloatParam(_Param):
    """Floats in [low, high]: uniform or log-uniform, snapped to a `step` grid when given."""

    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        if self.high < self.low or (self.log and self.low <= 0):
            raise ValueError(f"expected low <= high (and low > 0 when log), got {self.low}..")
        return self

    def draw(self, rng: np.random.Generator) -> float:
        if self.step is not None:
            count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
            return round(self.low + int(rng.integers(count)) * self.step, 10)
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))


class ChoiceParam(_Param):
    """One of `choices`, uniformly."""

    type: Literal["choice"]
    choices: list[Scalar] = Field(min_length=1)

    def draw(self, rng: np.random.Generator) -> Scalar:
        return self.choices[int(rng.integers(len(self.choices)))]


class FixedParam(_Param):
    """Always `value` (useful conditionally, e.g. a momentum that only SGD has)."""

    type: Literal["fixed"]
    value: Scalar

    def draw(self, rng: np.random.Generator) -> Scalar:
        return self.value


Param = Annotated[IntParam | FloatParam | ChoiceParam | FixedParam, Field(discriminator="type")]


class InputSpec(_Strict):
    """Record shape at which FLOPs are counted (`leads`, `length` samples)."""

    leads: int = Field(12, ge=1)
    length: int = Field(1024, ge=16)


class FlopBounds(_Strict):
    """Forward FLOPs per record allowed, and strata per decade for stratified sampling."""

    min: float = Field(gt=0)
    max: float = Field(gt=0)
    strata_per_decade: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _order(self) -> FlopBounds:
        if self.max <= self.min:
            raise ValueError(f"expected min < max, got {self.min:g} and {self.max:g}")
        return self

    def edges(self) -> list[float]:
        """Stratum edges: `min`, every 10^(k / strata_per_decade) strictly inside, `max`."""
        s = self.strata_per_decade
        lo, hi = math.log10(self.min) * s, math.log10(self.max) * s
        inner = [10 ** (k / s) for k in range(math.floor(lo) + 1, math.ceil(hi))]
        return [self.min, *(e for e in inner if self.min < e < self.max), self.max]


class DesignSpace(_Strict):
    """A parsed space file (module docstring); `study` is validated by the sampler."""

    name: str
    description: str = ""
    model: Literal["anynet"] = "anynet"
    input: InputSpec = Field(default_factory=InputSpec)
    flops: FlopBounds
    stratify: list[str] = Field(default_factory=list)
    fixed: dict[str, Scalar] = Field(default_factory=dict)
    parameters: dict[str, list[Param]] = Field(min_length=1)
    study: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _listify(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("parameters"), dict):
            params = {k: v if isinstance(v, list) else [v] for k, v in data["parameters"].items()}
            data = {**data, "parameters": params}
        return data

    @model_validator(mode="after")
    def _references(self) -> DesignSpace:
        model_fields = {f.name for f in fields(AnyNetConfig)}
        seen: list[str] = []
        for name, alternatives in self.parameters.items():
            targets = {a.target for a in alternatives}
            if len(targets) != 1:
                raise ValueError(f"parameter {name}: alternatives name different targets")
            target = targets.pop()
            if target == "model" and name not in model_fields:
                raise ValueError(
                    f"parameter {name}: not an anynet option; expected one of: "
                    f"{', '.join(sorted(model_fields))}"
                )
            if target == "train" and name not in TRAIN_TARGETS:
                raise ValueError(
                    f"parameter {name}: not a training option; expected one of: "
                    f"{', '.join(TRAIN_TARGETS)}"
                )
            for alt in alternatives:
                refs = [*alt.when, *([alt.at_least] if getattr(alt, "at_least", None) else [])]
                for ref in refs:
                    if ref not in seen:
                        raise ValueError(
                            f"parameter {name}: refers to {ref!r}, which is not a parameter "
                            "listed before it"
                        )
            if name == "optimizer":
                for alt in alternatives:
                    if not isinstance(alt, ChoiceParam | FixedParam):
                        raise ValueError("parameter optimizer: expected type choice or fixed")
                    values = alt.choices if isinstance(alt, ChoiceParam) else [alt.value]
                    bad = [v for v in values if v not in OPTIMIZERS]
                    if bad:
                        raise ValueError(
                            f"parameter optimizer: unknown {bad}; expected: {', '.join(OPTIMIZERS)}"
                        )
            seen.append(name)
        for name in self.stratify:
            alts = self.parameters.get(name)
            if not alts or len(alts) != 1 or not isinstance(alts[0], ChoiceParam) or alts[0].when:
                raise ValueError(f"stratify: {name!r} is not an unconditional choice parameter")
        unknown = sorted(set(self.fixed) - model_fields)
        if unknown:
            raise ValueError(f"fixed: {unknown} are not anynet options")
        clash = sorted(set(self.fixed) & set(self.parameters))
        if clash:
            raise ValueError(f"fixed: {clash} are also sampled parameters")
        return self

    def target_of(self, name: str) -> str:
        return self.parameters[name][0].target

    def draw(self, rng: np.random.Generator) -> dict[str, Scalar]:
        """One point of the prior: every parameter in file order (inactive ones are None)."""
        drawn: dict[str, Scalar] = {}
        for name, alternatives in self.parameters.items():
            alt = next((a for a in alternatives if a.applies(drawn)), None)
            value = None if alt is None else alt.draw(rng)
            if isinstance(alt, IntParam) and alt.at_least is not None:
                floor = drawn.get(alt.at_least)
                value = value if floor is None else max(int(value), int(floor))
            drawn[name] = value
        return drawn

    def anynet_config(self, values: dict[str, Scalar]) -> dict[str, Scalar]:
        """The AnyNet options of a drawn point: fixed options, then active model parameters."""
        config = dict(self.fixed)
        for name, value in values.items():
            if self.target_of(name) == "model" and (
                value is not None or self._explicit_null(name, values)
            ):
                config[name] = value
        return config

    def _explicit_null(self, name: str, values: dict[str, Scalar]) -> bool:
        """True when `null` was drawn as a choice (e.g. SE off), not because `name` is inactive."""
        return any(a.applies(values) for a in self.parameters[name])

    def choice_values(self, name: str) -> list[Scalar]:
        """All values a choice parameter can take (for stratification)."""
        alt = self.parameters[name][0]
        assert isinstance(alt, ChoiceParam)
        return list(alt.choices)


def _error(exc: ValidationError, source: str) -> ConfigError:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function")) or "top"
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    elif err["type"] not in ("value_error",) and "input" in err:
        message += f" (got {err['input']!r})"
    return ConfigError(f"{source}: {where}: {message}")


def parse_space(data: dict[str, Any], source: str = "space") -> DesignSpace:
    """Validate a space mapping; a problem is one `ConfigError` line with its key path."""
    try:
        return DesignSpace.model_validate(data)
    except ValidationError as exc:
        raise _error(exc, source) from None


def default_space_path() -> Path:
    """The packaged space of Jabareen et al. 2026 (`ecgscale/design/spaces/jabareen2026.yaml`)."""
    return Path(str(resources.files("ecgscale.design") / "spaces" / f"{DEFAULT_SPACE}.yaml"))


def load_space(path: str | Path | None = None) -> tuple[DesignSpace, Path]:
    """Read a space file (None: the packaged default); returns the space and its path."""
    path = default_space_path() if path is None else Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such design-space file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with name, flops and parameters")
    return parse_space(data, str(path)), path
