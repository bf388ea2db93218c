"""MLflow logging of ecgscale runs: one MLflow run per ecgscale run, found again by its tags.

What an MLflow run holds:
- params: the run's resolved configuration, flattened (`model_config.width_multiplier`, ...), and
  for study runs its family, group, size, N and D;
- metrics: the trainer's log per step (`train/loss`, `train/lr`, ... at every step; `val/loss`
  and the objective's held-out metrics at every validation), the run's final metrics
  (`id/loss`, `id/probe_loss`, `TASK/loss`, ... of a study; `test/*` of `pretrain`) and its
  numbers (`train_seconds`, `train_flops`, ...);
- artifacts: `result.json`, `config.json`, `metrics.jsonl` (and `tb/` when the run wrote one),
  and `best.safetensors` only when asked (`checkpoints`).

A run is keyed by tags (`ecgscale.study` + `ecgscale.run_id` in a study; `ecgscale.run_id` +
`ecgscale.out_hash`, a hash of the run folder, for `pretrain`): an attempt that failed or was
interrupted leaves an unfinished MLflow run that the next attempt takes over (or replaces, when it
had logged params or metrics already), and a run that is complete in MLflow is not logged again,
so a resumed study holds each run once.
Runs log from the process that executes them (a pool or Ray worker), straight to the tracking URI.

A `file:` URI is MLflow's file store, which MLflow 3 serves only with `MLFLOW_ALLOW_FILE_STORE`
set: it is set here (unless already set) for such URIs. Other URIs (`http://host:5000`,
`sqlite:///...` with the full `mlflow` package, `databricks`) pass through unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ecgscale.tracking import number, record_scalars, require

RUN_ID_TAG = "ecgscale.run_id"
STUDY_TAG = "ecgscale.study"
OUT_TAG = "ecgscale.out"
OUT_KEY_TAG = "ecgscale.out_hash"  # a hash of the run folder: any path fits in a search filter
COMPLETE_TAG = "ecgscale.complete"  # set last: everything of the run is logged
DEFAULT_EXPERIMENT = "ecgscale"
RUN_ARTIFACTS = ("result.json", "config.json", "metrics.jsonl")
CHECKPOINT_ARTIFACTS = ("best.safetensors",)
_BATCH = 1000  # MLflow's limit of metrics per log_batch call (params: 100)
_PARAM_CHARS = 6000  # MLflow's limit of a param value
_KEY = re.compile(r"[^\w\-. /:]")


def absolute_uri(uri: str, base: Path | None = None) -> str:
    """`uri` with a relative file-store path (`file:./mlruns`, `mlruns`) made absolute, taken
    relative to `base` (default: the working directory), so that every worker process writes to
    the same place whatever its own working directory."""
    if not is_file_store(uri):
        return uri
    parsed = urlparse(uri)
    path = Path(parsed.path)
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return path.resolve().as_uri()


def is_file_store(uri: str) -> bool:
    """A local file store: `file:PATH` or a plain path (`databricks` names a workspace)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return parsed.netloc in ("", "localhost")
    return parsed.scheme == "" and uri != "databricks"


def client(uri: str) -> Any:
    """An `MlflowClient` on `uri` (ConfigError when mlflow is not installed)."""
    require("mlflow", "MLflow logging", "mlflow-skinny (or mlflow)")
    if is_file_store(uri):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(mlflow_client: Any, name: str) -> str:
    """The id of experiment `name`, created when missing (another process creating it at the
    same time is fine)."""
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(found.experiment_id)
        return found.experiment_id
    try:
        return mlflow_client.create_experiment(name)
    except MlflowException:
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def metric_key(key: str) -> str:
    """`key` with the characters MLflow refuses in names replaced by `_`."""
    return _KEY.sub("_", key)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings as dotted param names; other values as JSON text (strings as they are),
    cut to MLflow's length limit."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        out[metric_key(name)] = text[:_PARAM_CHARS]
    return out


def log_records(path: Path) -> list[dict[str, Any]]:
    """The trainer's log (`metrics.jsonl`), one record per (kind, step): the last one where a
    resumed run wrote a step twice."""
    if not path.is_file():
        return []
    records: dict[tuple[str, int], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            records[(record.get("kind", "train"), int(record["step"]))] = record
    return list(records.values())


def step_metrics(records: Iterable[dict[str, Any]]) -> Iterator[tuple[str, float, int]]:
    """(`KIND/FIELD`, value, step) of every numeric field of the log records."""
    for record in records:
        step = int(record["step"])
        for key, value in record_scalars(record).items():
            yield metric_key(key), value, step


class MlflowRun:
    """The MLflow run of one ecgscale run, in experiment `experiment` at `uri`.

    Args:
        uri: tracking URI.
        experiment: experiment name (created when missing).
        key: tags that identify the ecgscale run (looked up to reuse or skip).
        name: the MLflow run's display name.
        tags: more tags.
        replace: start over even when a complete MLflow run of this key exists.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        key: dict[str, str],
        name: str,
        tags: dict[str, str] | None = None,
        replace: bool = False,
    ) -> None:
        self.client = client(uri)
        self.experiment_id = experiment_id(self.client, experiment)
        self.key, self.name, self.tags = key, name, {**key, **(tags or {})}
        self.run_id: str | None = None
        self.complete = False
        self._attach(replace)

    def _attach(self, replace: bool) -> None:
        """Take over this key's MLflow run, or create one (self.complete: nothing to log)."""
        found = self._existing()
        for run in found[1:]:  # only ever one per key; tidy up what a crash left
            self.client.delete_run(run.info.run_id)
        if found:
            run = found[0]
            if run.data.tags.get(COMPLETE_TAG) == "true" and not replace:
                self.run_id, self.complete = run.info.run_id, True
                return
            if not (run.data.metrics or run.data.params or COMPLETE_TAG in run.data.tags):
                self.run_id = run.info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
                return
            self.client.delete_run(run.info.run_id)  # partly logged: start it again
        created = self.client.create_run(self.experiment_id, tags=self.tags, run_name=self.name)
        self.run_id = created.info.run_id

    def _existing(self) -> list[Any]:
        """The MLflow runs of this key, newest first (searched by the run id, a hex hash that
        needs no quoting; the other key tags compared here)."""
        query = f"tags.`{RUN_ID_TAG}` = '{self.key[RUN_ID_TAG]}'"
        found = self.client.search_runs(
            [self.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"]
        )
        return [r for r in found if all(r.data.tags.get(k) == v for k, v in self.key.items())]

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Iterable[tuple[str, float, int]]) -> None:
        """(key, value, step) triples, in batches."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v, step in metrics]
        for start in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, metrics=items[start : start + _BATCH])

    def log_run_dir(self, run_dir: Path, checkpoints: bool = False) -> None:
        """The trainer's log as step metrics, and the run folder's small files as artifacts."""
        self.log_metrics(step_metrics(log_records(run_dir / "metrics.jsonl")))
        names = RUN_ARTIFACTS + (CHECKPOINT_ARTIFACTS if checkpoints else ())
        for name in names:
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        if (run_dir / "tb").is_dir():
            self.client.log_artifacts(self.run_id, str(run_dir / "tb"), "tb")

    def finish(self) -> None:
        self.client.set_tag(self.run_id, COMPLETE_TAG, "true")
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, error: str) -> None:
        self.client.set_tag(self.run_id, "ecgscale.error", error[:_PARAM_CHARS])
        self.client.set_terminated(self.run_id, "FAILED")


def final_metrics(values: dict[str, Any], step: int) -> list[tuple[str, float, int]]:
    """(key, value, step) of the numeric entries of `values` (NaN and inf as they are)."""
    numbers_ = ((metric_key(k), number(v)) for k, v in values.items())
    return [(k, v, step) for k, v in numbers_ if v is not None]


def _last_step(run_dir: Path) -> int:
    return max((int(r["step"]) for r in log_records(run_dir / "metrics.jsonl")), default=0)


def log_pretrain(
    result: Any,
    uri: str,
    experiment: str | None = None,
    checkpoints: bool = False,
    overwrite: bool = False,
) -> str | None:
    """Log a finished `pretrain` run (its `TrainResult`) to MLflow; returns the MLflow run id
    (None: already logged, complete). Keyed by the run's config hash and its folder, so
    `pretrain --resume` of a logged run logs nothing twice; `overwrite` (the run folder was
    trained again) replaces the logged run."""
    out = Path(result.out).resolve()
    config = json.loads((out / "config.json").read_text())
    out_key = hashlib.blake2b(str(out).encode(), digest_size=8).hexdigest()
    run = MlflowRun(
        absolute_uri(uri),
        experiment or DEFAULT_EXPERIMENT,
        key={RUN_ID_TAG: result.run_id, OUT_KEY_TAG: out_key},
        name=f"{result.model} {result.objective} {result.run_id}",
        tags={
            OUT_TAG: str(out)[:_PARAM_CHARS],
            "ecgscale.model": result.model,
            "ecgscale.objective": result.objective,
        },
        replace=overwrite,
    )
    if run.complete:
        return None
    run.log_params({**config, "N": result.params, "D": result.records})
    run.log_run_dir(out, checkpoints)
    numbers_ = {
        **{f"test/{k}": v for k, v in result.test_metrics.items()},
        "n_params": result.params,
        "n_samples": result.records,
        "samples_seen": result.samples_seen,
        "train_flops": result.train_flops,
        "train_seconds": result.train_seconds,
        "best_val_loss": result.best_val_loss,
    }
    run.log_metrics(final_metrics(numbers_, result.steps))
    run.finish()
    return run.run_id


def open_study_run(uri: str, experiment: str, study: str, run: Any) -> MlflowRun:
    """The MLflow run of a study's run (a `planner.Run`), taken over or created before the run
    starts; `complete` when a finished attempt logged it already."""
    return MlflowRun(
        uri,
        experiment,
        key={STUDY_TAG: study, RUN_ID_TAG: run.run_id},
        name=f"{run.family} {run.size} {run.run_id}",
        tags={"ecgscale.family": run.family, "ecgscale.size": run.size},
    )


def finish_study_run(
    tracked: MlflowRun, run: Any, outcome: dict[str, Any], run_dir: Path, checkpoints: bool
) -> None:
    """Log a finished study run: params (resolved config, family, size, N, D), the trainer's
    log, the run's final metrics (`TASK/METRIC` as in the results store) and numbers, and the
    run folder's files; then mark it complete."""
    result = outcome["result"]
    saved = run_dir / "config.json"
    config = json.loads(saved.read_text()) if saved.is_file() else {}
    tracked.log_params(
        {
            **config,
            "family": run.family,
            "size": run.size,
            "target_params": run.target_params,
            "N": result["n_params"],
            "D": result["n_samples"],
        }
    )
    tracked.log_run_dir(run_dir, checkpoints)
    finals = {f"{task}/{metric}": value for task, metric, value in outcome["metrics"]}
    tracked.log_metrics(final_metrics({**finals, **result}, _last_step(run_dir)))
    plain = json.loads(json.dumps(outcome, default=float))  # numpy scalars as floats
    tracked.client.log_dict(tracked.run_id, plain, "outcome.json")
    tracked.finish()
