"""Expand a study spec into runs with stable ids, and estimate each run's compute up front.

A run's id is a hash of everything that determines its result (model and size configuration,
objective and options, store identity, label set and size, data fraction, seed, budget, optimiser
settings), so re-planning the same spec yields the same ids and finished runs are recognised.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ecgscale.errors import ConfigError
from ecgscale.models.registry import LadderPoint, ladder_point
from ecgscale.study.spec import FamilySpec, StoreSpec, StudySpec


@dataclass(frozen=True)
class Run:
    """One pre-training run of a study and what identifies it.

    Attributes:
        run_id: stable hash of `config`.
        family: the family's label (e.g. "ResNet-SL").
        size: ladder point name.
        target_params: the ladder's target N for this size.
        config: everything that determines the run (JSON-ready).
    """

    run_id: str
    family: str
    size: str
    target_params: int
    config: dict[str, Any] = field(hash=False)

    @property
    def model(self) -> str:
        return self.config["model"]

    @property
    def objective(self) -> str:
        return self.config["objective"]


def store_identity(spec: StoreSpec) -> dict[str, Any]:
    """What identifies a store in a run id: its synthetic config, or its resolved path."""
    if spec.synth is not None:  # label_noise only when set: earlier ids stay as they were
        return {
            "synth": spec.synth.model_dump(
                exclude=set() if spec.synth.label_noise else {"label_noise"}
            )
        }
    return {"path": str(Path(spec.path).resolve())}


def _size_points(family: FamilySpec) -> list[LadderPoint]:
    if family.configs:
        from ecgscale.models.flops import model_size

        return [
            LadderPoint(name, model_size(family.model, config).params, config)
            for name, config in family.configs.items()
        ]
    try:
        return [ladder_point(family.model, size) for size in family.sizes]
    except ConfigError as exc:
        raise ConfigError(f"family {family.name}: {exc}") from None


def plan(spec: StudySpec) -> list[Run]:
    """All runs of `spec`, in a deterministic order (family, size, fraction, labels, seed)."""
    runs = []
    label_sizes: list[int | None] = list(spec.label_set_sizes or [None])
    store = store_identity(spec.stores[spec.pretrain_store])
    for family in spec.families:
        for point, fraction, top_k, seed in itertools.product(
            _size_points(family), spec.data_fractions, label_sizes, spec.seeds
        ):
            if top_k is not None and family.objective != "sl":
                continue  # label scaling concerns supervised pre-training only
            config = {
                "model": family.model,
                "model_config": {**point.config, **family.model_options},
                "objective": family.objective,
                "objective_options": family.objective_options,
                "store": store,
                "label_set": spec.label_set,
                "label_top_k": top_k,
                "data_fraction": fraction,
                "seed": seed,
                "budget": spec.budget.run_config(),
                "lr": family.lr,
                "batch_size": family.batch_size,
            }
            if family.optimizer != "adamw":  # AdamW runs keep the ids they had before SGD existed
                config["optimizer"] = family.optimizer
            text = json.dumps(config, sort_keys=True)
            run_id = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
            label = family.group or family.name
            runs.append(Run(run_id, label, point.name, point.target_params, config))
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ConfigError("the spec lists the same run twice (duplicate sizes, fractions or seeds)")
    return runs


def run_record(run: Run) -> dict[str, Any]:
    """JSON-ready description of a run (stored with its results)."""
    return asdict(run)


@dataclass(frozen=True)
class StoreInfo:
    """What planning needs of the pre-training store.

    Attributes:
        fs: sampling rate in Hz.
        length: samples per record.
        leads: leads per record.
        train_records: records of the training split (synthetic stores: 80 %, folds 1-8 of 10).
        classes: class names of the study's label set (empty when the store lacks it).
    """

    fs: float
    length: int
    leads: int
    train_records: int
    classes: tuple[str, ...]


def store_info(spec: StudySpec) -> StoreInfo:
    """The pre-training store's input shape and size: from its manifest and split when it is
    prepared (`path`), from its configuration when the study generates it (`synth`)."""
    store = spec.stores[spec.pretrain_store]
    if store.synth is not None:
        from ecgscale.data.synth import LABEL_SETS

        classes = LABEL_SETS.get(spec.label_set, ())
        synth = store.synth
        return StoreInfo(synth.fs, synth.length, 12, round(0.8 * synth.records), classes)
    from ecgscale.data.store import Store

    opened = Store(store.path)
    return StoreInfo(
        fs=opened.fs,
        length=opened.length,
        leads=int(opened.signals.shape[1]),
        train_records=len(opened.split_indices("train")),
        classes=tuple(opened.label_sets.get(spec.label_set, ())),
    )


def estimate(runs: list[Run], info: StoreInfo) -> list[dict[str, Any]]:
    """Estimated N, D, FLOPs per record and training FLOPs of every run before anything starts.

    FLOPs are counted at the store's input (`info.fs`, `info.length`, `info.leads`). D is
    `data_fraction * info.train_records` (the realised patient-level subset differs slightly);
    `samples_seen` is the budget's records seen and training FLOPs are per-record training FLOPs
    times `samples_seen`.
    """
    from ecgscale.models.flops import model_size

    sizes: dict[str, Any] = {}
    rows = []
    for run in runs:
        key = json.dumps([run.model, run.config["model_config"]], sort_keys=True)
        if key not in sizes:
            sizes[key] = model_size(
                run.model,
                run.config["model_config"],
                fs=info.fs,
                length=info.length,
                leads=info.leads,
            )
        size = sizes[key]
        d = max(1, round(run.config["data_fraction"] * info.train_records))
        budget = run.config["budget"]
        seen = budget["samples"] if budget["samples"] else budget["epochs"] * d
        if budget.get("max_samples"):
            seen = min(seen, budget["max_samples"])
        rows.append(
            {
                "run_id": run.run_id,
                "family": run.family,
                "size": run.size,
                "fraction": run.config["data_fraction"],
                "top_k": run.config["label_top_k"],
                "seed": run.config["seed"],
                "n_params": size.params,
                "n_samples": d,
                "samples_seen": seen,
                "flops_per_record": size.train_flops,
                "train_flops": size.train_flops * seen,
            }
        )
    return rows
