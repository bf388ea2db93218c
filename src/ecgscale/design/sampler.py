"""Seeded, FLOP-stratified rejection sampling of a design space, and the study that trains it.

Strata: the FLOP range `[flops.min, flops.max]` is cut at every decade (or finer, with
`strata_per_decade`), crossed with the values of the space's `stratify` parameters (e.g. one
stratum per optimiser and decade). `n` networks are shared out evenly over the strata (the first
strata get one more when `n` does not divide). Draws from the prior (`DesignSpace.draw`) are kept
when their exact analytic forward FLOPs per record fall in a stratum that is not full yet, so each
stratum holds draws of the prior conditioned on it; a stratum that the prior almost never reaches
stops sampling with a `ConfigError` naming it.

`design_study` turns the sampled networks into a `StudySpec` for `ecgscale.study.runner`: one
family per network (grouped by its optimiser, carrying its learning rate and batch size; the
network's configuration is the family's only `configs` entry) and one family per baseline model
(ladder points inside the FLOP bounds). `write_design` writes `design.yaml` (the study),
`samples.csv` (one row per network: sampled values, derived size, stratum) and `space.yaml`.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ecgscale.design.space import DesignSpace, Scalar
from ecgscale.errors import ConfigError, UserError
from ecgscale.models.anynet import anynet_complexity

SAMPLES_FILE = "samples.csv"
STUDY_FILE = "design.yaml"
SPACE_FILE = "space.yaml"
DERIVED: tuple[str, ...] = ("params", "flops", "stages", "final_width")
"""Derived columns of every sample: encoder parameters N, forward FLOPs per record, number of
stages, final (embedding) width."""


@dataclass(frozen=True)
class Sample:
    """One sampled network.

    Attributes:
        name: "net000", "net001", ... in order of acceptance.
        values: every parameter of the space (None where inactive).
        config: its AnyNet options (fixed options, active model parameters, `leads`).
        optimizer, lr, batch_size: training choices (None: the study's defaults).
        params, flops, stages, final_width: derived size (`anynet_complexity` at the input).
        stratum: label of the stratum it was accepted into.
    """

    name: str
    values: dict[str, Scalar]
    config: dict[str, Any]
    optimizer: str | None
    lr: float | None
    batch_size: int | None
    params: int
    flops: int
    stages: int
    final_width: int
    stratum: str


@dataclass(frozen=True)
class Stratum:
    """A FLOP interval `[low, high)` (the last one closed) and the stratify values it requires."""

    low: float
    high: float
    key: tuple[Scalar, ...]
    quota: int

    def label(self, names: list[str]) -> str:
        parts = [
            f"[{self.low:.3g}, {self.high:.3g})",
            *(f"{n}={v}" for n, v in zip(names, self.key, strict=True)),
        ]
        return " ".join(parts)


@dataclass(frozen=True)
class SampleSet:
    """A sampled design: the networks and the bookkeeping of the rejection sampler.

    Attributes:
        samples: accepted networks.
        strata: every stratum with its quota.
        draws: prior draws made; `invalid`: draws whose configuration does not build;
            `out_of_bounds`: draws outside the FLOP bounds; `full`: draws of a full stratum.
        seed, length, leads: what the draws depend on.
    """

    space: DesignSpace
    samples: list[Sample]
    strata: list[Stratum]
    draws: int
    invalid: int
    out_of_bounds: int
    full: int
    seed: int
    length: int
    leads: int = field(default=12)

    def frame(self) -> pd.DataFrame:
        """One row per network: name, stratum, training choices, every parameter, derived size,
        the input shape and the configuration as JSON."""
        rows = []
        for s in self.samples:
            row: dict[str, Any] = {
                "name": s.name,
                "stratum": s.stratum,
                "optimizer": s.optimizer,
                "lr": s.lr,
                "batch_size": s.batch_size,
            }
            row |= {k: v for k, v in s.values.items() if k not in row}
            row |= {k: getattr(s, k) for k in DERIVED}
            row |= {"length": self.length, "leads": self.leads, "config": json.dumps(s.config)}
            rows.append(row)
        return pd.DataFrame(rows)


def make_strata(space: DesignSpace, n: int) -> list[Stratum]:
    """FLOP intervals x stratify values, with `n` shared out evenly (first strata get the rest)."""
    edges = space.flops.edges()
    keys = list(itertools.product(*(space.choice_values(k) for k in space.stratify)))
    cells = [(lo, hi, key) for lo, hi in itertools.pairwise(edges) for key in keys]
    base, extra = divmod(n, len(cells))
    return [Stratum(lo, hi, key, base + (k < extra)) for k, (lo, hi, key) in enumerate(cells)]


def _stratum_index(strata: list[Stratum], edges: list[float], flops: float, key: tuple) -> int:
    band = min(bisect.bisect_right(edges, flops) - 1, len(edges) - 2)
    width = len(strata) // (len(edges) - 1)
    keys = [s.key for s in strata[:width]]
    return band * width + keys.index(key)


def sample_space(
    space: DesignSpace,
    n: int,
    *,
    seed: int = 0,
    length: int | None = None,
    max_draws: int | None = None,
) -> SampleSet:
    """`n` networks of `space`, stratified over FLOP strata (module docstring).

    Args:
        space: the design space.
        n: networks to sample (>= 1).
        seed: seed of the one `numpy.random.Generator` all draws come from.
        length: samples per record at which FLOPs are counted (default: the space's input).
        max_draws: prior draws allowed before giving up (default: 500 per network).
    """
    if n < 1:
        raise ConfigError(f"number of networks: expected >= 1, got {n}")
    length = space.input.length if length is None else length
    leads = space.input.leads
    strata = make_strata(space, n)
    edges = space.flops.edges()
    max_draws = 500 * n if max_draws is None else max_draws
    rng = np.random.default_rng(seed)
    filled = [0] * len(strata)
    samples: list[Sample] = []
    draws = invalid = out_of_bounds = full = 0
    while len(samples) < n:
        if draws >= max_draws:
            lacking = [
                f"{s.label(space.stratify)}: {f} of {s.quota}"
                for s, f in zip(strata, filled, strict=True)
                if f < s.quota
            ]
            raise ConfigError(
                f"space {space.name}: {draws} draws did not fill {'; '.join(lacking)} "
                "(the prior rarely reaches them); change the FLOP bounds or the ranges"
            )
        values = space.draw(rng)
        draws += 1
        config = {"leads": leads, **space.anynet_config(values)}
        try:
            size = anynet_complexity(length, **config)
        except ConfigError:
            invalid += 1
            continue
        if not space.flops.min <= size.flops <= space.flops.max:
            out_of_bounds += 1
            continue
        key = tuple(values[k] for k in space.stratify)
        k = _stratum_index(strata, edges, size.flops, key)
        if filled[k] >= strata[k].quota:
            full += 1
            continue
        filled[k] += 1
        samples.append(
            Sample(
                name=f"net{len(samples):03d}",
                values=values,
                config=config,
                optimizer=values.get("optimizer"),  # type: ignore[arg-type]
                lr=values.get("lr"),  # type: ignore[arg-type]
                batch_size=values.get("batch_size"),  # type: ignore[arg-type]
                params=size.params,
                flops=size.flops,
                stages=size.stages,
                final_width=size.embed_dim,
                stratum=strata[k].label(space.stratify),
            )
        )
    return SampleSet(
        space, samples, strata, draws, invalid, out_of_bounds, full, seed, length, leads
    )


# ---------------------------------------------------------------------------------------------
# The study that trains the sample.


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaselineSpec(_Strict):
    """Reference models trained with the same protocol: up to `per_model` ladder points of each
    model whose forward FLOPs per record lie inside the space's bounds, spread in log FLOPs (the
    point nearest to the bounds when none lies inside)."""

    models: list[str] = Field(default_factory=lambda: ["inception_time", "xresnet1d", "resnet"])
    per_model: int = Field(2, ge=1)
    lr: float = Field(3e-3, gt=0)


class StudyBase(_Strict):
    """How a sampled design is trained and evaluated (the `study:` section of a space file).

    Stores, label set, budget, probe, executor and device mean what they mean in a `StudySpec`;
    `lr`, `batch_size` and `optimizer` apply where the space does not sample them.
    """

    name: str | None = None
    stores: dict[str, Any] = Field(min_length=1)
    pretrain_store: str
    label_set: str
    objective: str = "sl"
    budget: dict[str, Any]
    probe: dict[str, Any] = Field(default_factory=dict)
    executor: dict[str, Any] = Field(default_factory=dict)
    device: str = "cpu"
    seed: int = 0
    optimizer: str = "adamw"
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    baselines: BaselineSpec | None = None


def parse_study_base(data: dict[str, Any], base_dir: Path, source: str) -> StudyBase:
    """Validate a `study:` mapping; relative store paths are relative to `base_dir`."""
    try:
        base = StudyBase.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{source}: study.{where}: {err['msg']}") from None
    stores = {}
    for name, item in base.stores.items():
        item = dict(item) if isinstance(item, dict) else item
        if isinstance(item, dict) and item.get("path") and not Path(item["path"]).is_absolute():
            item["path"] = str((base_dir / item["path"]).resolve())
        stores[name] = item
    return base.model_copy(update={"stores": stores})


def store_length(base: StudyBase) -> int:
    """Samples per record of the pre-training store (a synthetic store's setting, or the
    prepared store's manifest, which must exist)."""
    item = base.stores.get(base.pretrain_store)
    if item is None:
        raise ConfigError(f"study.pretrain_store {base.pretrain_store!r} is not a store")
    if item.get("synth") is not None:
        return int(item["synth"].get("length", 1000))
    from ecgscale.data.store import Store

    path = Path(item.get("path", ""))
    if not (path / "manifest.json").is_file():
        raise UserError(
            f"{path}: no prepared store; prepare it first (`ecgscale data prepare ...`)"
        )
    return Store(path).length


@dataclass(frozen=True)
class ForwardSize:
    """Encoder parameters N, forward FLOPs per record and embedding width of a registered model."""

    params: int
    flops: int
    embed_dim: int


def forward_size(model: str, config: dict[str, Any], leads: int, length: int) -> ForwardSize:
    """`ForwardSize` of `model` with `config`, counted on the meta device (forward pass only)."""
    from ecgscale.models.base import count_parameters
    from ecgscale.models.flops import build_on_meta, forward_flops
    from ecgscale.models.registry import get_spec

    encoder = build_on_meta(get_spec(model).factory, config)
    return ForwardSize(
        count_parameters(encoder), forward_flops(encoder, leads, length), int(encoder.embed_dim)
    )


def baseline_points(base: BaselineSpec, space: DesignSpace, length: int) -> dict[str, list[str]]:
    """Ladder points chosen for each baseline model (docstring of `BaselineSpec`)."""
    from ecgscale.models.registry import ladder

    low, high = math.log10(space.flops.min), math.log10(space.flops.max)
    chosen: dict[str, list[str]] = {}
    for model in base.models:
        inside, nearest, distance = [], None, math.inf
        for point in ladder(model):
            flops = math.log10(forward_size(model, point.config, space.input.leads, length).flops)
            if low <= flops <= high:
                inside.append(point.name)
            elif max(low - flops, flops - high) < distance:
                nearest, distance = point.name, max(low - flops, flops - high)
            if flops > high:
                break  # ladders grow
        inside = inside or [nearest]
        picks = np.unique(np.round(np.linspace(0, len(inside) - 1, base.per_model)).astype(int))
        chosen[model] = [inside[k] for k in picks]
    return chosen


def design_study(sampled: SampleSet, base: StudyBase, out: Path):
    """The `StudySpec` that trains `sampled` (and the baselines) into `out`."""
    from ecgscale.study.spec import parse_spec

    families: list[dict[str, Any]] = []
    for s in sampled.samples:
        families.append(
            {
                "name": s.name,
                "group": s.optimizer or base.optimizer,
                "model": "anynet",
                "optimizer": s.optimizer or base.optimizer,
                "objective": base.objective,
                "configs": {s.name: s.config},
                "lr": s.lr or base.lr,
                "batch_size": s.batch_size or base.batch_size,
            }
        )
    if base.baselines is not None:
        points = baseline_points(base.baselines, sampled.space, sampled.length)
        for model, sizes in points.items():
            families.append(
                {
                    "name": f"baseline-{model}",
                    "model": model,
                    "objective": base.objective,
                    "sizes": sizes,
                    "lr": base.baselines.lr,
                    "batch_size": base.batch_size,
                }
            )
    data = {
        "name": base.name or f"design-{sampled.space.name}",
        "out": str(out.resolve()),
        "stores": base.stores,
        "pretrain_store": base.pretrain_store,
        "label_set": base.label_set,
        "families": families,
        "seeds": [base.seed],
        "budget": base.budget,
        "probe": base.probe,
        "executor": base.executor,
        "device": base.device,
    }
    return parse_spec(data, "design study")


def write_design(
    sampled: SampleSet, out: str | Path, space_path: Path, base: StudyBase | None = None
) -> dict[str, Path]:
    """Write `samples.csv`, `space.yaml` and (with `base`) `design.yaml` into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {"samples": out / SAMPLES_FILE, "space": out / SPACE_FILE}
    sampled.frame().to_csv(written["samples"], index=False)
    if space_path.resolve() != written["space"].resolve():
        shutil.copyfile(space_path, written["space"])
    if base is not None:
        spec = design_study(sampled, base, out)
        written["study"] = out / STUDY_FILE
        text = yaml.safe_dump(spec.model_dump(mode="json", by_alias=True), sort_keys=False)
        written["study"].write_text(text)
    return written


def read_samples(path: str | Path) -> pd.DataFrame:
    """A `samples.csv` written by `write_design`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no samples file (written by `ecgscale design sample`)")
    frame = pd.read_csv(path)
    missing = sorted({"name", "config", *DERIVED} - set(frame.columns))
    if missing:
        raise UserError(f"{path}: missing columns {missing}; expected a design samples file")
    return frame
