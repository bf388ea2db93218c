"""In-distribution (ID) evaluation on the pre-training store's held-out test split.

SL models are scored by their own head (mean BCE over the source labels, as trained); SSL models by
a linear probe on the source labels over frozen embeddings. Both get the probe too (`probe_loss`),
so SL and SSL models can also be compared on exactly the same quantity; the pretext loss (the
objective's best validation loss) is reported alongside. Head and probe both read the cached
embeddings, so ID evaluation costs one encoder pass shared with the OOD probes of the same store.

Label scaling trains each run on its own top-k classes, so those ID losses are not comparable
across k. `evaluate_common` scores every run on one fixed set of classes instead (`LabelGroups`:
the classes every run was trained on, "frequent", and the rest, "tail") with a linear probe on the
cached embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ecgscale.data.store import Store
from ecgscale.errors import ConfigError
from ecgscale.evaluate.embeddings import embed
from ecgscale.evaluate.metrics import DEFAULT_BOOTSTRAP, Bootstrap, auroc
from ecgscale.evaluate.probe import DEFAULT_C_GRID, ProbeResult, bce_per_label, linear_probe
from ecgscale.train.checkpoint import load_tensors, strip_prefix

SL_HEAD = "objective.head.linear"
"""Checkpoint prefix of the supervised objective's linear head (`weight`, `bias`)."""


@dataclass(frozen=True)
class IDResult:
    """ID evaluation of one run.

    Attributes:
        loss: the ID loss (SL: head BCE on the test split; SSL: probe test loss).
        kind: "head" or "probe", which produced `loss`.
        probe_loss: linear-probe test loss on the source labels (every run).
        pretext_loss: the objective's best validation loss (NaN when not recorded).
        metrics: test metrics (auroc of the head or probe, probe metrics prefixed `probe_`).
    """

    loss: float
    kind: str
    probe_loss: float
    pretext_loss: float
    metrics: dict[str, float | None] = field(default_factory=dict)


def source_classes(store: Store, label_set: str, top_k: int | None) -> list[str]:
    """The source classes a run is trained on: the label set, or its `top_k` most frequent
    classes in the training split (ties broken by name)."""
    if top_k is None:
        return list(store.label_sets[label_set])
    return store.top_classes(label_set, top_k)


@dataclass(frozen=True)
class LabelGroups:
    """The common evaluation classes of a label-scaling study, most frequent first.

    Attributes:
        frequent: the `k_min` most frequent classes in the training split (every run of the
            study was trained on them), as far as they can be evaluated.
        tail: the other classes that can be evaluated.
    """

    frequent: tuple[str, ...]
    tail: tuple[str, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        """All common classes: frequent, then tail."""
        return self.frequent + self.tail

    def items(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(group name, classes) of "all", "frequent" and "tail"."""
        return (("all", self.classes), ("frequent", self.frequent), ("tail", self.tail))


def common_label_groups(
    store: Store, label_set: str, k_min: int, *, min_positives: int = 1
) -> LabelGroups:
    """Classes of `label_set` with at least `min_positives` positive and negative records in each
    of the train, val and test splits, split into the top-`k_min` classes of the training split
    (`Store.top_classes`, the classes of the smallest label-scaling run) and the rest."""
    ranked = store.top_classes(label_set, len(store.label_sets[label_set]))
    labels = store.labels(label_set)
    vocabulary = list(store.label_sets[label_set])
    columns = [vocabulary.index(c) for c in ranked]
    enough = np.ones(len(ranked), dtype=bool)
    for split in ("train", "val", "test"):
        y = labels[store.split_indices(split)][:, columns]
        positives = y.sum(axis=0, dtype=np.int64)
        enough &= (positives >= min_positives) & (len(y) - positives >= min_positives)
    kept = [(rank, c) for rank, c in enumerate(ranked) if enough[rank]]
    return LabelGroups(
        frequent=tuple(c for rank, c in kept if rank < k_min),
        tail=tuple(c for rank, c in kept if rank >= k_min),
    )


def _label_probe(
    features: np.ndarray,
    store: Store,
    label_set: str,
    classes: Sequence[str],
    c_grid: Sequence[float],
    bootstrap: Bootstrap | None = DEFAULT_BOOTSTRAP,
) -> tuple[np.ndarray, ProbeResult]:
    """0/1 targets `(records, classes)` of `classes` and the multi-label linear probe of
    `(records, embed_dim)` features on them over the store's splits (metric intervals with
    `bootstrap`)."""
    columns = [store.label_sets[label_set].index(c) for c in classes]
    y = store.labels(label_set)[:, columns].astype(np.float32)
    train, val, test = (store.split_indices(s) for s in ("train", "val", "test"))
    probe = linear_probe(
        features, y, "multilabel", train, val, test, c_grid=c_grid, label_names=list(classes),
        bootstrap=bootstrap,
    )  # fmt: skip
    return y, probe


def head_loss(
    features: np.ndarray, y: np.ndarray, head: dict[str, torch.Tensor]
) -> tuple[float, np.ndarray]:
    """Mean BCE of a linear head over `(records, embed_dim)` features and `(records, classes)`
    0/1 targets, computed in float64; returns the loss and the logits."""
    z = torch.from_numpy(np.asarray(features, np.float64)) @ head["weight"].double().T
    z = z + head["bias"].double()
    loss = F.binary_cross_entropy_with_logits(z, torch.from_numpy(np.asarray(y, np.float64)))
    return float(loss), z.numpy()


def evaluate_id(
    run_dir: str | Path,
    store: Store,
    label_set: str,
    *,
    top_k: int | None = None,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> IDResult:
    """ID loss and metrics of the run in `run_dir` on `store`'s test split.

    The source classes are the checkpoint's own (`classes` in its metadata) when it records
    them, else `source_classes(store, label_set, top_k)`; an SL head whose width differs from
    their number is a `ConfigError`.
    """
    run_dir = Path(run_dir)
    tensors, meta = load_tensors(run_dir / "best.safetensors")
    if label_set not in store.label_sets:
        raise ConfigError(
            f"{store.path}: no label set {label_set!r} to evaluate {run_dir} on; "
            f"available: {', '.join(store.label_sets) or 'none'}"
        )
    recorded = meta["config"].get("classes")
    if recorded and top_k is not None and len(recorded) != top_k:
        raise ConfigError(
            f"{run_dir}: the SL head has {len(recorded)} outputs but {label_set!r} top {top_k} "
            "was asked for"
        )
    classes = list(recorded or source_classes(store, label_set, top_k))
    features = embed(run_dir, store, batch_size=batch_size, cache_dir=cache_dir, device=device)
    y, probe = _label_probe(features, store, label_set, classes, c_grid)
    test = store.split_indices("test")
    metrics: dict[str, float | None] = {f"probe_{k}": v for k, v in probe.metrics.items()}
    pretext = float(meta.get("val", {}).get("loss", np.nan))
    head = strip_prefix(SL_HEAD, tensors)
    if meta["config"]["objective"] == "sl" and head:
        width = int(head["weight"].shape[0])
        if width != len(classes):
            raise ConfigError(
                f"{run_dir}: the SL head has {width} outputs but {label_set!r}"
                + (f" top {top_k}" if top_k is not None else "")
                + f" gives {len(classes)} classes; evaluate with the run's label set"
            )
        loss, logits = head_loss(np.asarray(features[test]), y[test], head)
        macro = auroc(y[test].astype(np.uint8), logits).macro
        metrics["auroc"] = None if np.isnan(macro) else macro
        return IDResult(loss, "head", probe.test_loss, pretext, metrics)
    metrics["auroc"] = probe.metrics.get("auroc")
    return IDResult(probe.test_loss, "probe", probe.test_loss, pretext, metrics)


def evaluate_common(
    run_dir: str | Path,
    store: Store,
    label_set: str,
    groups: LabelGroups,
    *,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Common-label-set ID loss of the run in `run_dir`: one linear probe over its frozen
    embeddings on all of `groups.classes`, and the test BCE of each class (mean over test
    records) averaged over the classes of each group ("all", "frequent", "tail"; empty groups are
    left out). Natural logarithms; `store`'s train/val/test splits."""
    if not groups.classes:
        raise ConfigError(f"{store.path}: no class of {label_set!r} can be evaluated")
    features = embed(run_dir, store, batch_size=batch_size, cache_dir=cache_dir, device=device)
    # only the per-class test losses are used: no intervals
    y, probe = _label_probe(features, store, label_set, groups.classes, c_grid, bootstrap=None)
    losses = bce_per_label(y[store.split_indices("test")], probe.test_outputs)
    per_class = dict(zip(groups.classes, losses, strict=True))
    return {
        name: float(np.mean([per_class[c] for c in members]))
        for name, members in groups.items()
        if members
    }
