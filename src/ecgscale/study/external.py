"""External models as points on a study's scaling plots.

Each model named in the spec's `external` (a run folder, `ADAPTER:PATH` or `module:function`) is
probed on every OOD task exactly as the study's runs are (`probe_task` with the spec's probe
settings, on the same stores), so its OOD loss is comparable with theirs; N is its encoder's
parameter count. Results are cached in `<out>/external/` under a key of the model's weights and the
stores' checksums (embeddings in `<out>/external/embeddings/`), so a report rebuilds them only when
a model or store changes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from ecgscale.data.store import Store
from ecgscale.evaluate.sources import ModelSource
from ecgscale.fileio import atomic_write
from ecgscale.study.spec import StudySpec

COLUMNS: tuple[str, ...] = ("name", "ref", "n_params", "task", "ood_loss", "auroc")


def _key(source: ModelSource, spec: StudySpec, stores: dict[str, Store]) -> str:
    text = json.dumps(
        [
            source.content_hash(),
            [(o.task, stores[o.store].checksum) for o in spec.ood],
            spec.probe.model_dump(),
        ]
    )
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def external_points(spec: StudySpec, store_paths: dict[str, Path]) -> pd.DataFrame:
    """One row per external model x OOD task (`COLUMNS`); empty without external models."""
    from ecgscale.evaluate.tasks import probe_task

    rows: list[dict] = []
    if not spec.external or not spec.ood:
        return pd.DataFrame(rows, columns=list(COLUMNS))
    stores = {name: Store(path) for name, path in store_paths.items()}
    folder = spec.out / "external"
    for name, ref in spec.external.items():
        source = ModelSource.of(ref)
        cached = folder / f"{name}-{_key(source, spec, stores)}.json"
        if cached.is_file():
            rows += json.loads(cached.read_text())
            continue
        found = []
        n_params = source.parameters(stores[spec.ood[0].store].fs)
        for item in spec.ood:
            probe = probe_task(
                source, item.task, stores[item.store], c_grid=spec.probe.c_grid,
                batch_size=spec.probe.batch_size, cache_dir=folder / "embeddings",
                device=spec.device,
            )  # fmt: skip
            found.append(
                {
                    "name": name, "ref": ref, "n_params": n_params, "task": item.task,
                    "ood_loss": probe.test_loss, "auroc": probe.metrics.get("auroc"),
                }
            )  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(cached, json.dumps(found, allow_nan=True))
        rows += found
    return pd.DataFrame(rows, columns=list(COLUMNS))
