"""Probing a run on a named task: embeddings of the task's store, then a linear probe."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ecgscale.data.store import Store
from ecgscale.evaluate.embeddings import embed
from ecgscale.evaluate.probe import DEFAULT_C_GRID, ProbeResult, linear_probe
from ecgscale.tasks import get_task


def probe_task(
    run_dir: str | Path,
    task: str,
    store: Store,
    *,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    batch_size: int = 256,
    which: str = "best",
) -> ProbeResult:
    """Linear probe of the run's frozen encoder on `task` over `store` (train/val/test splits of
    the task); the test loss is the OOD loss of scaling studies."""
    data = get_task(task).load(store)
    features = embed(run_dir, store, which=which, batch_size=batch_size)[data.rows]
    return linear_probe(
        features,
        data.y,
        data.kind,
        data.train,
        data.val,
        data.test,
        c_grid=c_grid,
        label_names=list(data.classes),
    )
