"""`ecgscale design sample|analyze` end to end on a planted results store, and the report section
built from the analysis."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ecgscale.cli.main import main
from ecgscale.design.report import design_section
from ecgscale.study.planner import plan
from ecgscale.study.results import Results
from ecgscale.study.spec import load_spec

RESIDUAL_EFFECT = 0.08


@pytest.fixture(scope="module")
def planted_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sampled design (examples/design_space.yaml on a synthetic store, with one baseline) whose
    results store holds a planted test AUROC: residual connections +0.08, plus noise."""
    root = tmp_path_factory.mktemp("design")
    data = yaml.safe_load(Path("examples/design_space.yaml").read_text())
    data["study"] = {
        "stores": {"syn": {"synth": {"records": 200, "fs": 100, "length": 1000}}},
        "pretrain_store": "syn",
        "label_set": "code",
        "budget": {"samples": 64},
        "baselines": {"models": ["xresnet1d"], "per_model": 1},
    }
    (root / "space.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SystemExit) as done:
        main(["design", "sample", str(root / "space.yaml"), "--n", "14", "--out", str(root / "d")])
    assert done.value.code in (0, None)
    spec = load_spec(root / "d" / "design.yaml")
    runs = plan(spec)
    samples = pd.read_csv(root / "d" / "samples.csv").set_index("name")
    results = Results(root / "d" / "results.sqlite")
    results.add_planned(runs)
    rng = np.random.default_rng(0)
    for run in runs:
        residual = samples["residual"].get(run.size, True)
        auroc = 0.7 + RESIDUAL_EFFECT * residual + rng.normal(0, 0.005)
        results.finish(run.run_id, {"n_params": 1}, [("id", "auroc", auroc), ("id", "loss", 0.3)])
    return root / "d"


def test_analyze_writes_figures_json_and_section(planted_study: Path) -> None:
    out = planted_study / "analysis"
    with pytest.raises(SystemExit) as done:
        main(
            [
                "design",
                "analyze",
                str(planted_study / "results.sqlite"),
                "--boot",
                "5",
                "--budgets",
                "3e6,1e7",
                "--out",
                str(out),
            ]
        )
    assert done.value.code in (0, None)
    summary = json.loads((out / "design.json").read_text())
    assert summary["metric"] == "auroc" and summary["runs"] == 14
    analysis = summary["analyses"]["all"]
    assert analysis["ranking"][0]["feature"] == "residual"
    assert analysis["ranking"][0]["direction"] > 0
    assert [b["family"] for b in summary["baselines"]] == ["baseline-xresnet1d"]
    recs = summary["rules"]["all"]["recommendations"]
    assert [r["budget"] for r in recs] == [3e6, 1e7] and all(r["within_budget"] for r in recs)
    assert recs[-1]["config"]["residual"]  # the best network within 1e7 carries the planted choice
    for name in summary["figures"].values():
        assert (out / name).stat().st_size > 5000
    section = design_section(out / "design.json")
    assert section.html.startswith('<section id="design-space">')
    assert "residual" in section.html and "baseline-xresnet1d" in section.html
    assert sorted(p.name for p in section.figures) == sorted(summary["figures"].values())
    assert (out / "design_section.html").is_file()


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["design", "analyze", str(tmp_path / "results.sqlite")])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "no results store" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as done:
        main(["design", "analyze", str(tmp_path / "r.sqlite"), "--budgets", "1e7,big"])
    assert done.value.code == 2


def test_sample_without_a_study_writes_the_samples_only(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as done:
        main(["design", "sample", "--n", "9", "--seed", "3", "--out", str(tmp_path)])
    assert done.value.code in (0, None)
    frame = pd.read_csv(tmp_path / "samples.csv")
    assert len(frame) == 9 and not (tmp_path / "design.yaml").exists()
    assert sorted(frame["optimizer"].unique()) == ["adamw", "sgd", "sgdm"]


def test_study_report_embeds_the_design_section(planted_study: Path) -> None:
    from ecgscale.report.html import write_report

    if not (planted_study / "analysis" / "design.json").is_file():
        test_analyze_writes_figures_json_and_section(planted_study)
    report = write_report(load_spec(planted_study / "design.yaml"), planted_study / "report")
    page = report.read_text()
    assert '<section id="design-space">' in page and "residual" in page
    section = page[page.index('<section id="design-space">') :]
    assert 'src="data:image/png;base64,' in section and '.png"' not in section
    assert (planted_study / "report" / "pareto.png").is_file()
