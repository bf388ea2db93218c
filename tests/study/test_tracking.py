"""MLflow logging of a study, against MLflow itself on a local file store: every run of a study is
one MLflow run that `mlflow.search_runs` reads back with the study's params and metrics, its
trainer log per step and its files; a study run again (or an attempt that died) adds no run; off
by default, one line when the package is missing; `study run --mlflow-uri`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from ecgscale.cli.main import main
from ecgscale.errors import ConfigError
from ecgscale.study.planner import plan
from ecgscale.study.runner import results_of, run_study
from ecgscale.study.spec import load_spec
from ecgscale.tracking import mlflow_log

mlflow = pytest.importorskip("mlflow")


@pytest.fixture
def tiny(base_spec, tmp_path: Path):
    """`tiny(**changes) -> spec path`: two runs (one size, two seeds) on one small store."""

    def write(name: str = "study", **changes) -> Path:
        data = dict(base_spec, out=name)
        data["stores"] = {"source": {"synth": {"records": 150, "fs": 100, "length": 1000}}}
        data["ood"] = [{"task": "synth_extra", "store": "source"}]
        data["families"][0]["sizes"] = [0]
        data["seeds"] = [0, 1]
        data.update(changes)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def _runs(uri: str, experiment: str = "t"):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment])


def test_every_run_of_a_study_is_an_mlflow_run_with_its_metrics(tiny, tmp_path) -> None:
    path = tiny(
        tracking={"mlflow": {"uri": "file:./mlruns"}},  # relative to the spec file
        executor={"kind": "pool", "workers": 2, "retries": 0},  # logged from the workers
    )
    spec = load_spec(path)
    uri = (tmp_path / "mlruns").as_uri()
    assert spec.tracking.mlflow.uri == uri and spec.tracking.tensorboard is False
    results = run_study(spec, progress=False)

    found = _runs(uri)  # the experiment is named after the study
    assert len(found) == 2 and set(found["status"]) == {"FINISHED"}
    stored = results.metrics()
    runs = {r.run_id: r for r in plan(spec)}
    assert set(found["tags.ecgscale.run_id"]) == set(runs)
    assert set(found["tags.ecgscale.study"]) == {"t"}
    for _, values in found.iterrows():
        run_id = values["tags.ecgscale.run_id"]
        run, run_dir = runs[run_id], spec.out / "runs" / run_id
        result = json.loads((run_dir / "result.json").read_text())
        # params: resolved config, family, size, N, D
        assert values["params.family"] == run.family and values["params.size"] == run.size
        assert values["params.N"] == str(result["params"])
        assert values["params.D"] == str(result["records"])
        assert values["params.seed"] == str(run.config["seed"])
        assert values["params.model_config.width_multiplier"] == str(
            run.config["model_config"]["width_multiplier"]
        )
        # final metrics: those of the results store, under TASK/METRIC
        mine = stored[stored["run_id"] == run_id]
        assert len(mine) > 5
        for m in mine.itertuples():
            assert values[f"metrics.{m.task}/{m.metric}"] == pytest.approx(m.value, rel=1e-12)
        assert values["metrics.synth_extra/loss"] > 0 and values["metrics.id/loss"] > 0
        # the trainer's log, per step
        client = mlflow.MlflowClient(uri)
        log = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        history = client.get_metric_history(values["run_id"], "train/loss")
        want = [(r["step"], r["loss"]) for r in log if r["kind"] == "train"]
        assert [(m.step, m.value) for m in history] == want
        val = client.get_metric_history(values["run_id"], "val/loss")
        assert [(m.step, m.value) for m in val] == [
            (r["step"], r["loss"]) for r in log if r["kind"] == "val"
        ]
        # the run's small files, not its checkpoints
        files = {f.path for f in client.list_artifacts(values["run_id"])}
        assert {"result.json", "config.json", "metrics.jsonl", "outcome.json"} <= files
        assert not any(name.endswith(".safetensors") for name in files)

    # Run again: nothing to run, nothing logged twice.
    run_study(spec, progress=False)
    assert len(_runs(uri)) == 2


def test_an_attempt_that_died_is_taken_over_not_duplicated(tiny, tmp_path) -> None:
    uri = (tmp_path / "store").as_uri()
    spec = load_spec(tiny(tracking={"mlflow": {"uri": uri, "experiment": "exp"}}))
    first, second = plan(spec)
    # A worker killed mid-run leaves a RUNNING MLflow run; one killed while logging, a
    # partly logged one.
    died = mlflow_log.open_study_run(uri, "exp", "t", first)
    partial = mlflow_log.open_study_run(uri, "exp", "t", second)
    partial.log_params({"family": "half-logged"})
    run_study(spec, progress=False)
    found = _runs(uri, "exp")
    assert len(found) == 2 and set(found["status"]) == {"FINISHED"}
    by_run = dict(zip(found["tags.ecgscale.run_id"], found["run_id"], strict=True))
    assert by_run[first.run_id] == died.run_id  # reused
    assert by_run[second.run_id] != partial.run_id  # replaced
    assert set(found["params.family"]) == {first.family}

    # The results store lost (a fresh output folder): the runs execute again, MLflow keeps one
    # MLflow run each.
    results_of(spec).path.unlink()
    run_study(spec, progress=False)
    assert len(_runs(uri, "exp")) == 2


def test_tracking_is_off_by_default_and_needs_the_package(tiny, monkeypatch, tmp_path) -> None:
    spec = load_spec(tiny())
    assert spec.tracking.mlflow is None and spec.tracking.tensorboard is False
    tracked = load_spec(tiny("tracked", tracking={"mlflow": {"uri": "file:./x"}}))
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ConfigError, match=r"needs the mlflow-skinny .* pip install") as info:
        run_study(tracked, progress=False)
    assert "ecgscale[track]" in str(info.value) and "\n" not in str(info.value)
    assert not (tracked.out / "runs").exists()  # refused before any run started
    with pytest.raises(ConfigError, match=r"tracking\.mlflow\.uri: Field required"):
        load_spec(tiny("bad", tracking={"mlflow": {"experiment": "e"}}))


def test_study_run_mlflow_uri_option(tiny, tmp_path, monkeypatch, capsys) -> None:
    path = tiny(tracking={"tensorboard": True})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(
            ["study", "run", str(path), "--mlflow-uri", "file:cli_runs", "--mlflow-experiment", "e"]
        )
    assert info.value.code == 0, capsys.readouterr()
    found = _runs((tmp_path / "cli_runs").as_uri(), "e")  # relative to the working directory
    assert len(found) == 2 and set(found["status"]) == {"FINISHED"}
    client = mlflow.MlflowClient((tmp_path / "cli_runs").as_uri())
    files = {f.path for f in client.list_artifacts(found["run_id"][0], "tb")}
    assert len(files) == 1 and next(iter(files)).startswith("tb/events.out.tfevents.")


@pytest.mark.parametrize(
    ("uri", "want"),
    [
        ("file:./mlruns", "BASE/mlruns"),
        ("mlruns", "BASE/mlruns"),
        ("file:///abs/store", "file:///abs/store"),
        ("http://host:5000", "http://host:5000"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
        ("databricks", "databricks"),
    ],
)
def test_relative_file_stores_become_absolute(uri: str, want: str, tmp_path: Path) -> None:
    want = want.replace("BASE", tmp_path.resolve().as_uri())
    assert mlflow_log.absolute_uri(uri, tmp_path) == want
