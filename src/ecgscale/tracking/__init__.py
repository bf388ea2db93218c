"""Experiment tracking, off by default: TensorBoard event files from the trainer
(`tensorboard_log`) and one MLflow run per ecgscale run (`mlflow_log`).

Neither library is imported until tracking is switched on (`TrainConfig.tensorboard`, a study's
`tracking:` block, `--tensorboard` / `--mlflow-uri`); switched on without the package installed,
it is one `ConfigError` line naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ecgscale.errors import ConfigError

INSTALL = "pip install 'ecgscale[track]'"


def require(module: str, what: str, package: str) -> ModuleType:
    """Import `module` for `what`, or raise a one-line `ConfigError` saying that it needs
    `package` and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{what} needs the {package} package: {INSTALL}") from None
