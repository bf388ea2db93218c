"""Small study specs for the study tests (tiny synthetic stores, 20K-60K parameter models)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

BASE: dict[str, Any] = {
    "name": "t",
    "stores": {
        "source": {"synth": {"records": 300, "fs": 100, "length": 1000, "seed": 0}},
        "shifted": {"synth": {"records": 200, "fs": 100, "length": 1000, "shift": 1.0, "seed": 1}},
    },
    "pretrain_store": "source",
    "label_set": "code",
    "ood": [{"task": "synth_extra", "store": "source"}, {"task": "synth_code", "store": "shifted"}],
    "families": [{"name": "ResNet-SL", "model": "resnet", "objective": "sl", "sizes": [0, 1]}],
    "data_fractions": [1.0],
    "budget": {"epochs": 1},
}


@pytest.fixture
def base_spec() -> dict[str, Any]:
    return copy.deepcopy(BASE)
