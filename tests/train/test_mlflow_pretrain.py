"""`pretrain --mlflow-uri`: the finished run is one MLflow run (params, the log per step, test
metrics) on a local file store, logged once however often the run is resumed."""

from __future__ import annotations

import json

import pytest

from ecgscale.cli.main import main

mlflow = pytest.importorskip("mlflow")


def test_pretrain_mlflow_uri_logs_the_run_once(small_store, tmp_path, capsys) -> None:
    out, uri = tmp_path / "run", (tmp_path / "mlruns").as_uri()
    args = ["pretrain", "--model", "resnet", "-m", "width_multiplier=0.125", "--objective", "sl"]
    args += ["--label-set", "code", "--data", str(small_store.path), "--out", str(out)]
    args += ["--samples", "32", "--batch-size", "16", "--no-progress", "--tensorboard"]
    args += ["--mlflow-uri", uri]
    for extra in ([], ["--resume"]):
        with pytest.raises(SystemExit) as info:
            main([*args, *extra])
        assert info.value.code == 0
    assert "already logged" in capsys.readouterr().out
    mlflow.set_tracking_uri(uri)
    found = mlflow.search_runs(experiment_names=["ecgscale"])
    assert len(found) == 1 and found["status"][0] == "FINISHED"
    result = json.loads((out / "result.json").read_text())
    assert found["tags.ecgscale.run_id"][0] == result["run_id"]
    assert found["params.N"][0] == str(result["params"]) and found["params.objective"][0] == "sl"
    assert found["metrics.test/loss"][0] == pytest.approx(result["test_metrics"]["loss"])
    history = mlflow.MlflowClient(uri).get_metric_history(found["run_id"][0], "train/loss")
    assert [m.step for m in history] == [1, 2]
    assert (out / "tb").is_dir()
