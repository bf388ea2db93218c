"""Model registry: `create_model(name, **config)`, `list_models()` and each family's size ladder.

Names are a family ("resnet") or, timm-style, a family and a size ("resnet-200K", "resnet-5K"):
`resolve_model` turns the second form into the family and the ladder config of that size.

A family registers itself with one decorator in its own module:

    @register_model("resnet", ladder=resnet_ladder, default_fs=400.0, default_length=4096)
    def resnet(**config) -> Encoder: ...

A ladder is a function returning `LadderPoint`s (a name, the target encoder parameter count and the
config that reaches it) for the default targets (20K-200M, half a decade apart) or for given ones;
`ladder_point(name, "5K")` solves the family's size rule for any target.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ecgscale.errors import ConfigError
from ecgscale.models.base import Encoder

# Modules that register models; imported lazily on first registry access.
_FAMILY_MODULES: tuple[str, ...] = (
    "ecgscale.models.resnet",
    "ecgscale.models.anynet",
    "ecgscale.models.baselines.inception",
    "ecgscale.models.baselines.xresnet",
    "ecgscale.models.baselines.patchtst",
    "ecgscale.models.beat_transformer",
)


@dataclass(frozen=True)
class LadderPoint:
    """One size of a family: `config` builds an encoder with about `target_params` parameters."""

    name: str
    target_params: int
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its factory, optional ladder and default input shape."""

    name: str
    factory: Callable[..., Encoder]
    ladder: Callable[[tuple[int, ...] | None], list[LadderPoint]] | None
    default_fs: float
    default_length: int
    input_kind: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    ladder: Callable[[tuple[int, ...] | None], list[LadderPoint]] | None = None,
    default_fs: float = 400.0,
    default_length: int = 4096,
    input_kind: str = "waveform",
) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    """Decorator registering an encoder factory under `name`."""

    def decorate(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelSpec(name, factory, ladder, default_fs, default_length, input_kind)
        return factory

    return decorate


def _load_families() -> None:
    for module in _FAMILY_MODULES:
        importlib.import_module(module)


def get_spec(name: str) -> ModelSpec:
    """The `ModelSpec` of `name`; an unknown name is a `ConfigError` listing the known ones."""
    _load_families()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; expected one of: {', '.join(list_models())}")
    return _REGISTRY[name]


def list_models(pattern: str = "*", *, sizes: bool = False) -> list[str]:
    """Names of the registered families matching the shell-style `pattern`, sorted; with `sizes`,
    each family followed by the points of its default ladder ("resnet-20K", ...)."""
    _load_families()
    literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]  # sizes of other families cannot match
    names = []
    for name in sorted(_REGISTRY):
        names.append(name)
        prefix = f"{name}-"
        could_match = prefix.startswith(literal) or literal.startswith(prefix)
        if sizes and could_match and _REGISTRY[name].ladder is not None:
            names += [p.name for p in ladder(name)]
    return fnmatch.filter(names, pattern)


def resolve_model(name: str) -> tuple[str, dict[str, Any]]:
    """`(family, config)` of a model name: a family gives an empty config, "FAMILY-SIZE" the
    config of that size (`ladder_point`: a ladder point or any parameter count)."""
    _load_families()
    if name in _REGISTRY:
        return name, {}
    family, sep, _ = name.rpartition("-")
    if not sep or family not in _REGISTRY:
        get_spec(name)  # raises the unknown-model error
    return family, dict(ladder_point(family, name).config)


def create_model(name: str, **config: Any) -> Encoder:
    """Build the encoder `name` (a family or "FAMILY-SIZE") with `config` (keyword arguments of
    its factory, overriding those of the size)."""
    family, base = resolve_model(name)
    config = {**base, **config}
    try:
        return get_spec(family).factory(**config)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: invalid configuration {config}: {exc}") from exc


def ladder(name: str, targets: Sequence[int] | None = None) -> list[LadderPoint]:
    """The size ladder of family `name` (its default targets, or `targets` encoder parameters)."""
    spec = get_spec(name)
    if spec.ladder is None:
        raise ConfigError(f"model {name!r} has no size ladder")
    return spec.ladder(None if targets is None else tuple(int(t) for t in targets))


def ladder_point(name: str, size: int | str) -> LadderPoint:
    """One size of family `name`: an index into its default ladder, a point name
    ("resnet-63K"), or a target parameter count ("5K", "resnet-5K", "1.5M") solved by the
    family's size rule. Anything else is a `ConfigError` naming the accepted forms."""
    from ecgscale.models.flops import parse_count

    points = ladder(name)
    if isinstance(size, int):
        if not 0 <= size < len(points):
            raise ConfigError(
                f"model {name!r}: size index {size} outside the ladder (0-{len(points) - 1})"
            )
        return points[size]
    by_name = {p.name: p for p in points}
    if size in by_name:
        return by_name[size]
    target = parse_count(size.removeprefix(f"{name}-"))
    if target is None:
        raise ConfigError(
            f"model {name!r}: unknown size {size!r}; expected a ladder point "
            f"({', '.join(by_name)}), an index or a parameter count such as 5K"
        )
    return ladder(name, [target])[0]
