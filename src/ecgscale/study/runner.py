"""Run a study: prepare its stores, plan, execute the runs (skipping finished ones), record results.

Each run pre-trains one encoder (`ecgscale.train.pretrain`, resumed from its last checkpoint when a
previous attempt was interrupted), then evaluates it:
- ID: the loss of the run's own objective on the pre-training store's test split with its best
  weights (BCE of the SL head; the CMSC or masked-beat loss of SSL runs), as in scaling studies of
  pre-training; `evaluate_id` adds a linear probe on the source labels (`probe_loss`, AUROC) so
  that every family is also compared on one quantity;
- OOD: a linear probe per OOD task on frozen embeddings (`probe_task`), whose test loss is the OOD
  loss that scaling laws are fitted to;
- label scaling only (spec `label_set_sizes`): one more probe on the study's common label set
  (`evaluate_common`), whose per-group losses are the task `COMMON_TASK` of the results store.

With `tracking.mlflow` in the spec, the process that executes a run also logs it to MLflow (one
MLflow run per run, tagged with the study and run id: `ecgscale.tracking.mlflow_log`); with
`tracking.tensorboard`, each run writes TensorBoard event files under its folder.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from ecgscale.data.store import Store
from ecgscale.fileio import exclusive_lock
from ecgscale.study.executors import make_executor
from ecgscale.study.planner import Run, plan
from ecgscale.study.results import COMMON_TASK, LEASE_SECONDS, Results, new_owner
from ecgscale.study.spec import StudySpec

console = Console()


@dataclass(frozen=True)
class StudyContext:
    """What a worker needs to execute a run (picklable)."""

    spec: StudySpec
    stores: dict[str, Path]

    @property
    def runs_dir(self) -> Path:
        return self.spec.out / "runs"


def results_of(spec: StudySpec) -> Results:
    """The study's results store (`<out>/results.sqlite`)."""
    return Results(spec.out / "results.sqlite")


def prepare_stores(spec: StudySpec, progress: bool = True) -> dict[str, Path]:
    """Path of every store of the study, generating synthetic ones that are missing (one runner
    at a time: another runner of the study waits, then finds them)."""
    with exclusive_lock(spec.out / "stores" / ".lock"):
        return _prepare_stores(spec, progress)


def _prepare_stores(spec: StudySpec, progress: bool) -> dict[str, Path]:
    from ecgscale.data.prepare import synthesize
    from ecgscale.data.synth import SynthConfig

    paths: dict[str, Path] = {}
    for name, item in spec.stores.items():
        if item.path is not None:
            Store(item.path)  # fails early with one line if it is not a store
            paths[name] = Path(item.path)
            continue
        synth = item.synth
        out = spec.out / "stores" / name
        cfg = SynthConfig(**synth.model_dump(exclude={"records"}))
        if (out / "manifest.json").is_file():
            existing = Store(out).manifest["provenance"].get("synth")
            if existing == cfg.model_dump() and Store(out).manifest["rows"] == synth.records:
                paths[name] = out
                continue
        if progress:
            console.print(f"generating synthetic store {name!r} ({synth.records} records)")
        synthesize(synth.records, out, cfg, overwrite=True)
        paths[name] = out
    return paths


def train_config(ctx: StudyContext, run: Run):
    """The `TrainConfig` of a run."""
    from ecgscale.train.config import TrainConfig

    c = run.config
    budget = {k: v for k, v in c["budget"].items() if v is not None}
    return TrainConfig(
        model=c["model"],
        model_config=c["model_config"],
        objective=c["objective"],
        objective_options=c["objective_options"],
        data=ctx.stores[ctx.spec.pretrain_store],
        label_set=ctx.spec.label_set,
        label_top_k=c["label_top_k"],
        data_fraction=c["data_fraction"],
        data_seed=c["seed"],
        batch_size=c["batch_size"],
        lr=c["lr"],
        optimizer=c.get("optimizer", "adamw"),
        seed=c["seed"],
        device=ctx.spec.device,
        tensorboard=ctx.spec.tracking.tensorboard,
        out=ctx.runs_dir / run.run_id,
        **budget,
    )


def _mlflow_experiment(spec: StudySpec) -> str:
    assert spec.tracking.mlflow is not None
    return spec.tracking.mlflow.experiment or spec.name


def with_tracking(
    spec: StudySpec,
    *,
    mlflow_uri: str | None = None,
    mlflow_experiment: str | None = None,
    tensorboard: bool | None = None,
) -> StudySpec:
    """`spec` with MLflow logging switched on (or its URI or experiment replaced; a relative
    file-store URI is taken relative to the working directory) and TensorBoard event files on or
    off; None leaves a setting as the spec has it."""
    from ecgscale.errors import ConfigError
    from ecgscale.study.spec import MlflowSpec
    from ecgscale.tracking.mlflow_log import absolute_uri

    tracking = spec.tracking
    if mlflow_uri is not None or mlflow_experiment is not None:
        current = tracking.mlflow
        uri = mlflow_uri or (current.uri if current else None)
        if uri is None:
            raise ConfigError("--mlflow-experiment needs --mlflow-uri (or tracking.mlflow.uri)")
        fields = current.model_dump() if current else {}
        fields["uri"] = absolute_uri(uri) if mlflow_uri else uri
        if mlflow_experiment is not None:
            fields["experiment"] = mlflow_experiment
        tracking = tracking.model_copy(update={"mlflow": MlflowSpec(**fields)})
    if tensorboard is not None:
        tracking = tracking.model_copy(update={"tensorboard": tensorboard})
    return spec.model_copy(update={"tracking": tracking})


def start_tracking(spec: StudySpec) -> StudySpec:
    """Check that the spec's tracking can run here before any run starts (the packages are
    installed; the MLflow experiment exists, created when missing) and make a relative file-store
    URI absolute for the worker processes; returns the spec to execute."""
    if spec.tracking.tensorboard:
        from ecgscale.tracking.tensorboard_log import check_installed

        check_installed()
    if spec.tracking.mlflow is None:
        return spec
    from ecgscale.tracking import mlflow_log

    mlflow = spec.tracking.mlflow
    mlflow = mlflow.model_copy(update={"uri": mlflow_log.absolute_uri(mlflow.uri)})
    mlflow_log.experiment_id(mlflow_log.client(mlflow.uri), _mlflow_experiment(spec))
    tracking = spec.tracking.model_copy(update={"mlflow": mlflow})
    return spec.model_copy(update={"tracking": tracking})


def execute_run(ctx: StudyContext, run: Run) -> dict[str, Any]:
    """Pre-train and evaluate one run; returns its results and metric rows (and logs the run to
    MLflow when the spec says so: from this process, which may be a pool or Ray worker)."""
    mlflow = ctx.spec.tracking.mlflow
    if mlflow is None:
        return _execute_run(ctx, run)
    from ecgscale.tracking import mlflow_log

    experiment = _mlflow_experiment(ctx.spec)
    tracked = mlflow_log.open_study_run(mlflow.uri, experiment, ctx.spec.name, run)
    try:
        outcome = _execute_run(ctx, run)
    except BaseException as exc:
        if not tracked.complete:
            with contextlib.suppress(Exception):  # the run's own error is the one to report
                tracked.fail(f"{type(exc).__name__}: {exc}")
        raise
    if not tracked.complete:
        run_dir = ctx.runs_dir / run.run_id
        mlflow_log.finish_study_run(tracked, run, outcome, run_dir, mlflow.checkpoints)
    return outcome


def _execute_run(ctx: StudyContext, run: Run) -> dict[str, Any]:
    from ecgscale.evaluate.id_eval import common_label_groups, evaluate_common, evaluate_id
    from ecgscale.evaluate.tasks import probe_task
    from ecgscale.train import pretrain

    config = train_config(ctx, run)
    resume = (config.out / "config.json").is_file()
    trained = pretrain(config, resume=resume, overwrite=not resume, progress=False)
    start = time.perf_counter()
    spec = ctx.spec
    stores = {name: Store(path) for name, path in ctx.stores.items()}  # opened once per run
    id_result = evaluate_id(
        config.out,
        stores[spec.pretrain_store],
        spec.label_set,
        top_k=run.config["label_top_k"],
        c_grid=spec.probe.c_grid,
        batch_size=spec.probe.batch_size,
    )
    id_loss = trained.test_metrics["loss"]  # the objective's own held-out loss
    metrics: list[tuple[str, str, float]] = [("id", "loss", id_loss)]
    metrics += [("id", "probe_loss", id_result.probe_loss)]
    metrics += [("id", k, v) for k, v in id_result.metrics.items() if v is not None]
    if spec.label_set_sizes:
        source = stores[spec.pretrain_store]
        groups = common_label_groups(source, spec.label_set, min(spec.label_set_sizes))
        common = evaluate_common(
            config.out,
            source,
            spec.label_set,
            groups,
            c_grid=spec.probe.c_grid,
            batch_size=spec.probe.batch_size,
        )
        metrics += [(COMMON_TASK, f"loss_{group}", v) for group, v in common.items()]
        metrics += [(COMMON_TASK, f"n_classes_{g}", len(c)) for g, c in groups.items() if c]
    for item in spec.ood:
        probe = probe_task(
            config.out,
            item.task,
            stores[item.store],
            c_grid=spec.probe.c_grid,
            batch_size=spec.probe.batch_size,
        )
        metrics.append((item.task, "loss", probe.test_loss))
        metrics += [(item.task, k, v) for k, v in probe.metrics.items() if v is not None]
    result = {
        "train_seconds": trained.train_seconds,
        "eval_seconds": time.perf_counter() - start,
        "n_params": trained.params,
        "n_samples": trained.records,
        "samples_seen": trained.samples_seen,
        "flops_per_record": trained.flops_per_record,
        "train_flops": trained.train_flops,
        "id_loss": id_loss,
        "pretext_loss": id_result.pretext_loss,
    }
    return {"result": result, "metrics": metrics}


class _Heartbeat(threading.Thread):
    """Renews the leases of the runs that `owner` executes every `LEASE_SECONDS / 6` seconds (a
    renewal that finds the database busy is tried again at the next beat)."""

    def __init__(self, results: Results, owner: str) -> None:
        super().__init__(name="ecgscale-lease", daemon=True)
        self.results, self.owner = results, owner
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(LEASE_SECONDS / 6):
            with contextlib.suppress(sqlite3.OperationalError):
                self.results.renew(self.owner)


def run_study(spec: StudySpec, *, progress: bool = True) -> Results:
    """Execute every run of `spec` that is not finished yet; returns the results store.

    Each run is claimed in the results store before it starts (`Results.claim`), so runners
    started on one study at once split its runs; runs that another live runner holds are left to
    it (and counted in a closing line).
    """
    since = time.time()
    spec = start_tracking(spec)
    stores = prepare_stores(spec, progress)
    runs = plan(spec)
    results = results_of(spec)
    results.add_planned(runs)
    status = results.status()
    todo = [r for r in runs if status.get(r.run_id) != "done"]
    if progress:
        console.print(
            f"study {spec.name}: {len(runs)} runs, {len(runs) - len(todo)} finished, "
            f"{len(todo)} to run ({spec.executor.kind} executor)"
        )
    ctx = StudyContext(spec, stores)
    counter = {"done": 0, "elsewhere": 0}
    owner = new_owner()

    def on_start(run: Run) -> bool:
        if results.claim(run.run_id, owner, since):
            return True
        counter["elsewhere"] += 1
        return False

    def on_done(run: Run, outcome: dict[str, Any]) -> None:
        if not results.finish(run.run_id, outcome["result"], outcome["metrics"], owner):
            _lost(run, progress)
            return
        counter["done"] += 1
        if progress:
            r = outcome["result"]
            console.print(
                f"[{counter['done']}/{len(todo)}] {run.family} {run.size} "
                f"D={r['n_samples']} id_loss={r['id_loss']:.4f} "
                f"({r['train_seconds'] + r['eval_seconds']:.0f} s)",
                highlight=False,
            )

    def on_error(run: Run, error: str, final: bool) -> None:
        if not results.mark_failed(run.run_id, error, owner):
            _lost(run, progress)
            return
        if progress:
            what = "failed" if final else "failed, retrying"
            console.print(f"[red]{run.family} {run.size} {what}: {error}[/red]", highlight=False)

    heartbeat = _Heartbeat(results, owner)
    heartbeat.start()
    try:
        make_executor(spec.executor).execute(
            todo, functools.partial(execute_run, ctx), on_start, on_done, on_error
        )
    finally:
        heartbeat.stopped.set()
        results.release(owner, "interrupted: the runner stopped before the run finished")
    if progress and counter["elsewhere"]:
        console.print(f"{counter['elsewhere']} runs were finished or held by other runners")
    return results


def _lost(run: Run, progress: bool) -> None:
    """A run whose claim lapsed (this runner stalled past its lease) and was taken over."""
    if progress:
        console.print(
            f"[yellow]{run.family} {run.size}: another runner took this run over; "
            "its outcome here is not recorded[/yellow]",
            highlight=False,
        )
