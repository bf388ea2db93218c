"""End to end: spec -> runs -> results -> fits -> report; kill -9 in the middle, then resume."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ecgscale.study.demo import demo_spec
from ecgscale.study.runner import results_of, run_study
from ecgscale.study.spec import load_spec


def _write(tmp: Path, data: dict, name: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(data, out=name)))
    return path


def _done(db: Path) -> tuple[int, int]:
    if not db.is_file():
        return 0, 0
    with sqlite3.connect(db, timeout=30) as con:
        rows = dict(con.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
    return rows.get("done", 0), rows.get("running", 0)


def _metrics(spec_path: Path) -> pd.DataFrame:
    results = results_of(load_spec(spec_path))
    runs = results.runs()
    assert (runs["status"] == "done").all() and (runs["attempts"] >= 1).all()
    return results.metrics().sort_values(["run_id", "task", "metric"]).reset_index(drop=True)


def test_killed_study_resumes_to_the_same_results(tmp_path: Path, base_spec) -> None:
    base_spec["families"][0]["sizes"] = [0, 1, 2]
    killed = _write(tmp_path, base_spec, "killed")
    cmd = [sys.executable, "-m", "ecgscale.cli.main", "study", "run", str(killed)]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the same thread count as this process's runs
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "killed" / "results.sqlite"
    deadline = time.time() + 600
    while _done(db) != (1, 1) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the study finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _done(db) == (1, 1)  # one run finished, one interrupted

    resumed = run_study(load_spec(killed), progress=False).runs()
    assert (resumed["status"] == "done").all() and len(resumed) == 3
    assert sorted(resumed["attempts"]) == [1, 1, 2]  # only the interrupted run ran twice

    reference = _write(tmp_path, base_spec, "reference")
    run_study(load_spec(reference), progress=False)
    a, b = _metrics(killed), _metrics(reference)
    assert a[["run_id", "task", "metric"]].equals(b[["run_id", "task", "metric"]])
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-9, atol=1e-12)
    again = run_study(load_spec(killed), progress=False).runs()  # nothing left to do
    assert again["attempts"].tolist() == resumed["attempts"].tolist()


def test_two_runners_on_one_study_run_every_run_once(tmp_path: Path, base_spec) -> None:
    base_spec["families"][0]["sizes"] = [0]
    source = {"synth": {"records": 150, "fs": 100, "length": 1000}}
    base_spec.update(stores={"source": source}, ood=[], seeds=list(range(4)))
    path = _write(tmp_path, base_spec, "shared")
    cmd = [sys.executable, "-m", "ecgscale.cli.main", "study", "run", str(path)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    runs = results_of(load_spec(path)).runs()
    assert len(runs) == 4 and (runs["status"] == "done").all()
    assert (runs["attempts"] == 1).all()  # no run was executed twice
    assert runs["owner"].nunique() == 2  # the runners split the study
    for run_id in runs["run_id"]:
        lines = (tmp_path / "shared" / "runs" / run_id / "metrics.jsonl").read_text().splitlines()
        steps = [(row["kind"], row["step"]) for row in map(json.loads, lines)]
        assert len(steps) == len(set(steps)) > 0  # one training, its lines once


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path: Path, chromium) -> None:
    """The demo's structure at a fraction of its cost: four families, three sizes, three data
    sizes, ID and four OOD tasks, fits and the HTML report."""
    from ecgscale.report.html import write_report

    spec = demo_spec(tmp_path / "demo", quick=True)
    results = run_study(spec, progress=False)
    runs = results.runs()
    assert len(runs) == 4 * 3 * 3 and (runs["status"] == "done").all()
    table = results.table()
    assert set(table["task"]) == {"synth_extra", "synth_sex", "synth_age", "synth_code"}
    assert table["ood_loss"].notna().all() and table["id_loss"].notna().all()
    assert (runs.groupby("family")["n_params"].nunique() == 3).all()
    report = write_report(spec, tmp_path / "demo" / "report")
    page = report.read_text()
    for family in ("ResNet-SL", "ResNet-SSL", "Transformer-SL", "Transformer-SSL"):
        assert family in page
    assert page.count("data:image/png;base64,") >= 5 and "<figcaption>" in page
    assert (report.parent / "fits.json").is_file() and (
        report.parent / "id_loss_vs_N.png"
    ).is_file()
    widths = _rendered_image_widths(report, tmp_path, chromium)
    assert len(widths) == page.count("<img") and min(widths) > 300


def _rendered_image_widths(report: Path, tmp: Path, chromium) -> list[int]:
    """Open the report in headless Chromium and return the decoded width of every image."""
    probe = tmp / "probe.html"
    script = (
        "<script>window.addEventListener('load', () => { document.body.setAttribute("
        "'data-widths', [...document.images].map(i => i.naturalWidth).join(',')); });</script>"
    )
    probe.write_text(report.read_text().replace("</body>", script + "</body>"))
    result = subprocess.run(
        [*chromium(tmp, "--dump-dom"), probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    match = re.search(r'data-widths="([0-9,]*)"', result.stdout)
    assert match, "the page did not finish loading in Chromium"
    return [int(w) for w in match.group(1).split(",") if w]
