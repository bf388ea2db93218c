"""In-distribution (ID) evaluation on the pre-training store's held-out test split.

SL models are scored by their own head (mean BCE over the source labels, as trained); SSL models by
a linear probe on the source labels over frozen embeddings. Both get the probe too (`probe_loss`),
so SL and SSL models can also be compared on exactly the same quantity; the pretext loss (the
objective's best validation loss) is reported alongside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ecgscale.data.store import Store
from ecgscale.evaluate.embeddings import embed
from ecgscale.evaluate.metrics import auroc
from ecgscale.evaluate.probe import DEFAULT_C_GRID, linear_probe
from ecgscale.train.checkpoint import load_tensors, strip_prefix


@dataclass(frozen=True)
class IDResult:
    """ID evaluation of one run.

    Attributes:
        loss: the ID loss (SL: head BCE on the test split; SSL: probe test loss).
        kind: "head" or "probe", which produced `loss`.
        probe_loss: linear-probe test loss on the source labels (every run).
        pretext_loss: the objective's best validation loss.
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
    classes = list(store.label_sets[label_set])
    if top_k is None:
        return classes
    counts = store.labels(label_set)[store.split_indices("train")].sum(0)
    order = sorted(range(len(classes)), key=lambda k: (-counts[k], classes[k]))
    return [classes[k] for k in order[:top_k]]


def evaluate_id(
    run_dir: str | Path,
    store: Store,
    label_set: str,
    *,
    top_k: int | None = None,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    batch_size: int = 256,
) -> IDResult:
    """ID loss and metrics of the run in `run_dir` on `store`'s test split."""
    run_dir = Path(run_dir)
    tensors, meta = load_tensors(run_dir / "best.safetensors")
    classes = meta.get("classes") or source_classes(store, label_set, top_k)
    columns = [store.label_sets[label_set].index(c) for c in classes]
    y = store.labels(label_set)[:, columns].astype(np.float32)
    features = embed(run_dir, store, batch_size=batch_size)
    train, val, test = (store.split_indices(s) for s in ("train", "val", "test"))
    probe = linear_probe(
        features, y, "multilabel", train, val, test, c_grid=c_grid, label_names=classes
    )
    metrics: dict[str, float | None] = {f"probe_{k}": v for k, v in probe.metrics.items()}
    head = strip_prefix("objective.head.linear", tensors)
    pretext = float(meta.get("val", {}).get("loss", np.nan))
    if meta["config"]["objective"] == "sl" and head:
        z = torch.from_numpy(features[test]) @ head["weight"].T.float() + head["bias"].float()
        loss = float(F.binary_cross_entropy_with_logits(z, torch.from_numpy(y[test])))
        metrics["auroc"] = auroc(y[test].astype(np.uint8), z.numpy()).macro
        return IDResult(loss, "head", probe.test_loss, pretext, metrics)
    metrics["auroc"] = probe.metrics.get("auroc")
    return IDResult(probe.test_loss, "probe", probe.test_loss, pretext, metrics)
