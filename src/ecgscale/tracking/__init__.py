"""Experiment tracking, off by default: TensorBoard event files from the trainer
(`tensorboard_log`) and one MLflow run per ecgscale run (`mlflow_log`).

Neither library is imported until tracking is switched on (`TrainConfig.tensorboard`, a study's
`tracking:` block, `--tensorboard` / `--mlflow-uri`); switched on without the package installed,
it is one `ConfigError` line naming the extra to install.
"""

from __future__ import annotations

import importlib
import numbers
from types import ModuleType
from typing import Any

from ecgscale.errors import ConfigError

INSTALL = "pip install 'ecgscale[track]'"


def require(module: str, what: str, package: str) -> ModuleType:
    """Import `module` for `what`, or raise a one-line `ConfigError` saying that it needs
    `package` and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{what} needs the {package} package: {INSTALL}") from None


def number(value: Any) -> float | None:
    """`value` as a float when it is a real number (not a bool); else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def record_scalars(record: dict[str, Any]) -> dict[str, float]:
    """`KIND/FIELD -> value` of the numeric fields of one trainer log record (`metrics.jsonl`)."""
    kind = record.get("kind", "train")
    values = ((key, number(value)) for key, value in record.items() if key not in ("kind", "step"))
    return {f"{kind}/{key}": value for key, value in values if value is not None}
