"""The design-space file: the packaged default reproduces Jabareen et al.'s space; conditions,
floors and the errors a user sees."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from ecgscale.design.space import (
    ChoiceParam,
    FloatParam,
    IntParam,
    load_space,
    parse_space,
)
from ecgscale.errors import ConfigError

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"
SPACE_DIR = REFERENCE / "design_space_jabareen"
ALIASES = {"init_lr": "lr"}  # the reference's name -> ours


def _reference(name: str) -> list[dict[str, str]]:
    path = SPACE_DIR / name
    assert path.is_file(), f"expected the reference design space at {path}"
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_default_space_reproduces_the_reference_ranges() -> None:
    space, path = load_space()
    assert path.name == "jabareen2026.yaml" and path.is_file()
    assert space.fixed == {"kernel_size": 3, "residual": True}
    for row in _reference("design_space_ranges.csv"):
        param = space.parameters[ALIASES.get(row["parameter"], row["parameter"])][0]
        if row["kind"] == "int":
            assert isinstance(param, IntParam)
            assert (param.low, param.high, param.step) == (
                int(row["low"]),
                int(row["high"]),
                int(row["step"]),
            )
        elif row["kind"] == "float" and row["step"]:
            assert isinstance(param, FloatParam)
            assert (param.low, param.high, param.step) == (
                float(row["low"]),
                float(row["high"]),
                float(row["step"]),
            )
        elif row["kind"] == "float":  # init_lr: uniform 1e-3 .. 1e-2
            assert isinstance(param, FloatParam) and not param.log and param.step is None
            assert (param.low, param.high) == (float(row["low"]), float(row["high"]))
        else:
            assert isinstance(param, ChoiceParam)
            expected = [None if c == "none" else c for c in row["choices"].split("|")]
            got = [None if c is None else str(c) for c in param.choices]
            assert sorted(map(str, got)) == sorted(map(str, expected)), row["parameter"]
    assert space.parameters["w_0"][0].at_least == "w_init"  # w_0 := max(w_0, w_init)
    assert space.stratify == ["optimizer"]


@pytest.mark.parametrize("row", _reference("best_configurations_per_optimizer.csv")[:3])
def test_published_best_networks_lie_in_the_default_space(row: dict[str, str]) -> None:
    space, _ = load_space()
    for name in ("depth", "w_init", "w_0", "w_a", "w_m", "group_width", "init_kernel_size"):
        param = space.parameters[name][0]
        value = float(row[name])
        if isinstance(param, ChoiceParam):
            assert value in param.choices, name
        else:
            assert param.low <= value <= param.high, name
    assert float(row["init_lr"]) <= space.parameters["lr"][0].high
    assert row["optimizer"] in space.parameters["optimizer"][0].choices


def _space(**parameters) -> dict:
    return {"name": "t", "flops": {"min": 1e6, "max": 1e9}, "parameters": parameters}


def test_conditional_parameters_and_floors() -> None:
    space = parse_space(
        _space(
            w_init={"type": "int", "low": 32, "high": 64, "step": 8},
            w_0={"type": "int", "low": 8, "high": 40, "step": 8, "at_least": "w_init"},
            se={"type": "choice", "choices": [True, False], "target": "none"},
            se_ratio={"type": "choice", "choices": [0.125, 0.25], "when": {"se": True}},
            optimizer={"type": "choice", "choices": ["adamw", "sgdm"], "target": "train"},
            lr=[
                {
                    "type": "float",
                    "low": 1e-4,
                    "high": 1e-3,
                    "log": True,
                    "target": "train",
                    "when": {"optimizer": "adamw"},
                },
                {"type": "float", "low": 0.1, "high": 0.5, "target": "train"},
            ],
        )
    )
    rng = np.random.default_rng(0)
    draws = [space.draw(rng) for _ in range(400)]
    assert all(d["w_0"] >= d["w_init"] for d in draws)
    assert all((d["se_ratio"] is None) == (not d["se"]) for d in draws)
    assert {d["se_ratio"] for d in draws} == {None, 0.125, 0.25}
    for d in draws:
        lo, hi = (1e-4, 1e-3) if d["optimizer"] == "adamw" else (0.1, 0.5)
        assert lo <= d["lr"] <= hi
    config = space.anynet_config(draws[0])
    assert set(config) <= {"w_init", "w_0", "se_ratio"}  # switches and training choices stay out
    off = next(d for d in draws if not d["se"])
    assert "se_ratio" not in space.anynet_config(off)  # inactive: the model keeps its default


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"depht": {"type": "int", "low": 1, "high": 3}}, "parameter depht: not an anynet option"),
        (
            {
                "depth": {"type": "int", "low": 1, "high": 3, "when": {"later": 1}},
                "later": {"type": "int", "low": 1, "high": 3},
            },
            "refers to 'later'",
        ),
        (
            {"optimizer": {"type": "choice", "choices": ["adam"], "target": "train"}},
            "unknown ['adam']",
        ),
        ({"depth": {"type": "int", "low": 5, "high": 3}}, "expected"),
        ({"depth": {"type": "integer", "low": 1, "high": 3}}, "parameters.depth"),
        ({"lr": {"type": "float", "low": 0.1, "high": 1, "target": "model"}}, "not an anynet"),
    ],
)
def test_invalid_spaces_name_the_problem(parameters: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_space(_space(**parameters), "my.yaml")
    assert message in str(err.value) and str(err.value).startswith("my.yaml:")
    assert "\n" not in str(err.value)


def test_unknown_keys_and_files(tmp_path: Path) -> None:
    bad = _space(depth={"type": "int", "low": 1, "high": 3}) | {"flop": 1}
    with pytest.raises(ConfigError, match="flop: unknown key"):
        parse_space(bad)
    with pytest.raises(ConfigError, match="stratify: 'depth'"):
        parse_space(_space(depth={"type": "int", "low": 1, "high": 3}) | {"stratify": ["depth"]})
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_space(path)
    with pytest.raises(Exception, match="no such design-space file"):
        load_space(tmp_path / "missing.yaml")


def test_reference_flops_column_counts_a_one_sample_input() -> None:
    """The published `flops` (29.2M for the best network) are forward FLOPs of a 1-sample input
    (every convolution output one sample long) plus the 26-class head, i.e. about 2 N; the
    space's FLOP bounds count a whole 1024-sample record (1.0e9 for the same network)."""
    from ecgscale.models.anynet import anynet_complexity

    rows = [r for r in _reference("best_configurations_per_optimizer.csv") if r["flops"]]
    assert len(rows) == 3
    for row in rows:
        config = {k: int(row[k]) for k in ("depth", "w_init", "w_0", "w_a", "group_width")}
        config |= {k: float(row[k]) for k in ("w_m", "bottleneck_multiplier")}
        config |= {"init_kernel_size": int(row["init_kernel_size"])}
        config["se_ratio"] = float(row["se_ratio"]) or None
        one = anynet_complexity(1, **config)
        head = 2 * one.embed_dim * 26
        assert one.flops + head == int(row["flops"])
        assert anynet_complexity(1024, **config).flops > 30 * int(row["flops"])
