"""Write any reader's `Source`, or the synthetic generator, to a store."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecgscale.data.preprocess import PreprocessConfig, filter_signal
from ecgscale.data.readers import Skip, get_reader
from ecgscale.data.store import Store, StoreWriter
from ecgscale.data.synth import LABEL_SETS, SynthConfig, iter_synthetic
from ecgscale.errors import ConfigError

Progress = Callable[[int], None]


def prepare(
    name: str,
    src: str | Path,
    out: str | Path,
    config: PreprocessConfig,
    *,
    overwrite: bool = False,
    seed: int = 0,
    progress: Progress | None = None,
    **reader_options: Any,
) -> Store:
    """Read dataset `name` from `src` and write it, preprocessed by `config`, to a store at `out`.

    Unusable records are skipped and listed with their reason in the manifest; `progress` is called
    with the number of records handled since its last call.
    """
    reader = get_reader(name)
    if name == "ptbxl":
        reader_options.setdefault("target_fs", config.fs)
    unknown = sorted(set(reader_options) - set(inspect.signature(reader).parameters))
    if unknown:
        raise ConfigError(f"dataset {name!r} takes no option {', '.join(unknown)}")
    source = reader(Path(src), **reader_options)
    with StoreWriter(
        out,
        config,
        source.count,
        name=source.name,
        label_sets=source.label_sets,
        provenance=source.provenance,
        stratify_on=source.stratify_on,
        seed=seed,
        overwrite=overwrite,
        patient_ids=source.patient_ids,
    ) as writer:
        for item in source.records:
            if isinstance(item, Skip):
                writer.skip(item.record_id, item.reason)
            else:
                writer.add(item)
            if progress:
                progress(1)
    return Store(out)


def synthesize(
    records: int,
    out: str | Path,
    synth: SynthConfig,
    *,
    highpass_hz: float | None = 0.5,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Store:
    """Generate `records` synthetic ECGs (streamed in batches) into a store at `out`."""
    config = PreprocessConfig(fs=synth.fs, length=synth.length, highpass_hz=highpass_hz)
    with StoreWriter(
        out,
        config,
        records,
        name="synthetic",
        label_sets={name: list(labels) for name, labels in LABEL_SETS.items()},
        provenance={"generator": "ecgscale.data.synth", "synth": synth.model_dump()},
        stratify_on="code",
        seed=synth.seed,
        overwrite=overwrite,
        patient_ids={"synthetic": "source: simulated patients (ecgscale.data.synth)"},
    ) as writer:
        for x, rows in iter_synthetic(records, synth):
            if highpass_hz is not None:
                x = filter_signal(x, synth.fs, config)
            writer.add_prepared(x, rows)
            if progress:
                progress(len(rows))
    return Store(out)
