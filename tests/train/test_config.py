"""TrainConfig: budgets, CUDA-only switches, objective options and pairings fail when the
configuration is built, with one clear line; the resolved config round-trips."""

from __future__ import annotations

import pytest

from ecgscale.errors import ConfigError
from ecgscale.train import TrainConfig

BASE = {"model": "resnet", "objective": "cmsc", "data": "store", "out": "run", "epochs": 1}


def _config(**fields) -> TrainConfig:
    return TrainConfig(**{**BASE, **fields})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"epochs": None}, "exactly one of epochs and samples"),
        ({"samples": 100}, "exactly one of epochs and samples"),
        ({"epochs": None, "samples": 100, "patience": 2}, "patience .* need an epochs budget"),
        ({"bf16": True}, "bf16 is a CUDA-only option"),
        ({"compile": True}, "compile is a CUDA-only option"),
        ({"device": "tpu"}, "device 'tpu'"),
        ({"model": "nope"}, "unknown model 'nope'"),
        ({"objective": "nope"}, "unknown objective 'nope'"),
        ({"objective_options": {"temprature": 0.2}}, "option temprature: Extra inputs"),
        ({"objective_options": {"temperature": -1}}, "option temperature"),
    ],
)
def test_invalid_configurations_fail_with_one_line(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _config(**fields)
    assert "\n" not in str(info.value)


def test_resolved_config_fills_objective_defaults_and_round_trips() -> None:
    config = _config(model_config={"width_multiplier": 0.5}, objective_options={"temperature": 0.2})
    assert config.model_options == {"width_multiplier": 0.5}
    assert config.objective_options["temperature"] == 0.2
    assert config.objective_options["segment_seconds"] == 2.5
    assert config.objective_options["same_patient_positives"] is True
    resolved = config.resolved()
    assert resolved["model_config"] == {"width_multiplier": 0.5}
    again = TrainConfig.model_validate(resolved)
    assert again == config and again.run_hash() == config.run_hash()
    defaults = TrainConfig(**{**BASE, "objective": "sl"})
    assert defaults.objective_options == {"head_dropout": 0.0}  # defaults resolved too
    assert _config(out="elsewhere").run_hash() == _config().run_hash()
    assert _config(lr=0.1).run_hash() != _config().run_hash()
