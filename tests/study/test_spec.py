"""Spec validation: every mistake is one line with its path in the file and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ecgscale.errors import ConfigError, UserError
from ecgscale.study.planner import plan
from ecgscale.study.spec import load_spec, parse_spec


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_spec(data, "s.yaml")
    return str(info.value)


def test_messages_name_the_path_and_the_allowed_values(base_spec) -> None:
    bad = dict(base_spec, budjet={"epochs": 1})
    assert _error(bad).startswith("s.yaml: budjet: unknown key; allowed keys: name, out, stores,")

    bad = dict(base_spec, seeds=["a"])
    assert _error(bad) == (
        "s.yaml: seeds[0]: Input should be a valid integer, unable to parse string as an integer "
        "(got 'a')"
    )

    bad = dict(base_spec)
    bad["families"] = [dict(base_spec["families"][0], model="resnt")]
    message = _error(bad)
    assert message.startswith("s.yaml: families[0].model: unknown model 'resnt'; expected one of:")
    assert "beat_transformer" in message and "resnet" in message

    bad["families"] = [dict(base_spec["families"][0], objective="mae")]
    assert _error(bad).startswith(
        "s.yaml: families[0].objective: unknown objective 'mae'; expected one of: cmsc, masked, sl"
    )

    bad = dict(base_spec, ood=[{"task": "no_such_task", "store": "source"}])
    assert _error(bad) == (
        "s.yaml: ood[0].task: unknown task 'no_such_task'; see `ecgscale tasks list`"
    )

    bad = dict(base_spec, ood=[{"task": "synth_sex", "store": "elsewhere"}])
    assert _error(bad) == (
        "s.yaml: top level: ood[0].store 'elsewhere': expected one of: source, shifted"
    )

    bad = dict(base_spec)
    bad["families"] = [dict(base_spec["families"][0], colour="red")]
    assert _error(bad).startswith("s.yaml: families[0].colour: unknown key; allowed keys: name,")

    bad = dict(base_spec, data_fractions=[0.5, 2])
    assert "data_fractions: data fractions must be in (0, 1]" in _error(bad)


def test_yaml_file_errors_and_relative_paths(tmp_path: Path, base_spec) -> None:
    with pytest.raises(UserError, match="no such study file"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_spec(tmp_path / "bad.yaml")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(dict(base_spec, out="results")))
    spec = load_spec(tmp_path / "s.yaml")
    assert spec.out == tmp_path / "results"


def test_plan_ids_are_stable_and_distinct(base_spec) -> None:
    spec = parse_spec(dict(base_spec, data_fractions=[0.5, 1.0], seeds=[0, 1]))
    runs = plan(spec)
    assert len(runs) == 2 * 2 * 2 and len({r.run_id for r in runs}) == 8
    assert [r.run_id for r in plan(spec)] == [r.run_id for r in runs]
    other = parse_spec(dict(base_spec, budget={"epochs": 2}))
    assert {r.run_id for r in plan(other)}.isdisjoint(r.run_id for r in runs)
    bad = dict(base_spec)
    bad["families"] = [dict(base_spec["families"][0], sizes=[99])]
    with pytest.raises(ConfigError, match=r"size index 99 outside the ladder \(0-8\)"):
        plan(parse_spec(bad))


def test_example_specs_validate_and_plan() -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    demo = load_spec(examples / "demo.yaml")
    runs = plan(demo)
    assert len(demo.families) == 4 and len(demo.ood) == 4
    assert len(runs) == 4 * 5 * 4 * len(demo.seeds)
    for family in demo.families:  # >= 5 sizes over >= 2 decades of N per family
        n = sorted({r.target_params for r in runs if r.family == family.name})
        assert len(n) >= 5 and n[-1] / n[0] >= 100
    fractions = demo.data_fractions  # >= 4 data sizes over >= 1.5 decades of D
    assert len(fractions) >= 4 and max(fractions) / min(fractions) >= 10**1.5
    ptbxl = load_spec(examples / "ptbxl.yaml")
    assert ptbxl.stores["ptbxl"].path == examples / "stores" / "ptbxl"
    assert len(plan(ptbxl)) == 4 * 4 * 3


def _cli_error(capsys, *args: str) -> str:
    """The one stderr line of `ecgscale ARGS`, which must exit with status 2."""
    from ecgscale.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err.removeprefix("error: ")


def test_duplicate_yaml_keys_are_refused_with_their_path(tmp_path: Path, base_spec, capsys) -> None:
    text = yaml.safe_dump(dict(base_spec, out="o"), sort_keys=False)
    path = tmp_path / "s.yaml"
    path.write_text(text + "label_set: extra\n")  # plain YAML would keep the last value
    line = text.splitlines().index("label_set: code") + 1
    last = len(text.splitlines()) + 1
    message = f"{path}: label_set: duplicate key (lines {line} and {last}); give each key once"
    assert _cli_error(capsys, "study", "plan", "--no-calibrate", str(path)) == message
    nested = text.replace("objective: sl\n", "objective: sl\n  lr: 0.01\n  lr: 0.02\n")
    path.write_text(nested)
    assert _cli_error(capsys, "study", "run", str(path)).startswith(
        f"{path}: families[0].lr: duplicate key (lines "
    )
    assert not (tmp_path / "o").exists()  # refused before anything is written
    path.write_text("a: &x {b: 1}\nc: *x\nd: [*x, *x]\n")  # an alias used twice is no duplicate
    with pytest.raises(ConfigError, match=r"s\.yaml: name: Field required"):
        load_spec(path)


def test_duplicate_family_names_are_refused(base_spec) -> None:
    family = base_spec["families"][0]
    other = dict(family, model="beat_transformer", sizes=[0])
    bad = dict(base_spec, families=[family, dict(family, objective="cmsc"), other])
    assert _error(bad) == (
        "s.yaml: families: duplicate name 'ResNet-SL' at [0] and [1]; give each family its own name"
    )
    renamed = [family, dict(family, name="ResNet-SSL", objective="cmsc")]
    assert len(plan(parse_spec(dict(base_spec, families=renamed)))) == 4


def test_an_unknown_label_set_is_refused_at_plan_time(tmp_path: Path, base_spec, capsys) -> None:
    from ecgscale.data.prepare import synthesize
    from ecgscale.data.synth import SynthConfig

    assert _error(dict(base_spec, label_set="superdiagnostic")) == (
        "s.yaml: label_set: unknown label set 'superdiagnostic' of store 'source'; "
        "expected one of: code, extra"
    )
    store = tmp_path / "store"
    synthesize(24, store, SynthConfig(fs=100.0, length=1000))
    prepared = dict(base_spec, stores={"source": {"path": "store"}}, ood=[], out="o")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(dict(prepared, label_set="rhythm")))
    for command in (["plan", "--no-calibrate"], ["run"]):
        assert _cli_error(capsys, "study", *command, str(path)) == (
            f"{path}: label_set: unknown label set 'rhythm' of store 'source'; "
            "expected one of: code, extra"
        )
    assert not (tmp_path / "o").exists()
    path.write_text(yaml.safe_dump(dict(prepared, label_set="extra")))
    assert load_spec(path).stores["source"].path == store  # relative to the file
    missing = dict(prepared, stores={"source": {"path": str(tmp_path / "later")}})
    assert parse_spec(dict(missing, label_set="rhythm")).label_set == "rhythm"  # not there yet
