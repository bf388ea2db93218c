"""ecgscale: controlled scaling-law studies of ECG models.

One folder per pipeline stage (see docs/ARCHITECTURE.md): data -> models -> objectives/train ->
evaluate -> scaling -> study/report, with design-space exploration alongside. The names below are
the public API; each is imported on first use, so `import ecgscale` stays cheap.

    import ecgscale
    encoder = ecgscale.create_model("resnet-200K")
    features = encoder.embed(ecgscale.Store.open("store"))
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it.
_EXPORTS: dict[str, str] = {
    "Store": "ecgscale.data.store",
    "create_model": "ecgscale.models.registry",
    "list_models": "ecgscale.models.registry",
    "ladder": "ecgscale.models.registry",
    "TrainConfig": "ecgscale.train.config",
    "pretrain": "ecgscale.train.trainer",
    "load_encoder": "ecgscale.train.trainer",
    "embed": "ecgscale.evaluate.embeddings",
    "linear_probe": "ecgscale.evaluate.probe",
    "LinearProbe": "ecgscale.evaluate.estimator",
    "probe": "ecgscale.evaluate.estimator",
    "finetune": "ecgscale.evaluate.finetune",
    "BenchmarkConfig": "ecgscale.evaluate.benchmark",
    "run_benchmark": "ecgscale.evaluate.benchmark",
    "load_external": "ecgscale.models.external",
    "InputContract": "ecgscale.models.external",
    "fit_joint": "ecgscale.scaling.fits",
    "fit_axis": "ecgscale.scaling.fits",
    "Study": "ecgscale.study.study",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ecgscale' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
