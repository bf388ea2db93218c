"""`ecgscale study plan|run|status|resume|export`, `ecgscale report` and `ecgscale demo`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ecgscale.errors import UserError
from ecgscale.models.flops import format_count

console = Console()
study_app = typer.Typer(help="Run scaling studies from a YAML spec.", no_args_is_help=True)
SpecArg = Annotated[Path, typer.Argument(help="Study spec (YAML).")]
MlflowUri = Annotated[
    str | None,
    typer.Option(
        help="Log every run to MLflow at this tracking URI (file:./mlruns, http://host:5000).",
        show_default="the spec's tracking.mlflow.uri, else none",
    ),
]
MlflowExperiment = Annotated[
    str | None,
    typer.Option(help="MLflow experiment.", show_default="the spec's, else the study's name"),
]
TensorBoard = Annotated[
    bool | None,
    typer.Option(
        "--tensorboard/--no-tensorboard",
        help="TensorBoard event files under each run's folder (tb/).",
        show_default="the spec's tracking.tensorboard",
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(study_app, name="study")
    app.command("report")(report_cmd)
    app.command("demo")(demo_cmd)


@study_app.command("plan")
def plan_cmd(
    spec_path: SpecArg,
    calibrate: Annotated[
        bool,
        typer.Option(
            help="Time a few training steps of each family's smallest and largest model here "
            "and estimate the study's wall time (a few seconds)."
        ),
    ] = True,
) -> None:
    """Print every run with its estimated N, D and compute, the total compute and the estimated
    wall time before anything starts."""
    from ecgscale.study import calibrate as cal
    from ecgscale.study.planner import estimate, store_info
    from ecgscale.study.study import Study

    study = Study.from_yaml(spec_path)
    spec, runs = study.spec, study.plan()
    info = store_info(spec)
    rows = estimate(runs, info)
    calibration = cal.calibrate(spec, runs, rows, info) if calibrate else None
    seconds = cal.run_seconds(rows, calibration) if calibration else None
    table = Table(title=f"study {spec.name}: {len(runs)} runs")
    columns = ["run", "family", "size", "fraction", "top-k", "seed", "N", "D", "FLOPs/rec"]
    columns += ["train FLOPs", *(["train time"] if seconds else [])]
    for col in columns:
        table.add_column(col, justify="right" if col not in ("run", "family", "size") else "left")
    for k, r in enumerate(rows):
        table.add_row(
            r["run_id"],
            r["family"],
            r["size"],
            f"{r['fraction']:g}",
            str(r["top_k"] or "-"),
            str(r["seed"]),
            format_count(r["n_params"]),
            str(r["n_samples"]),
            format_count(r["flops_per_record"]),
            format_count(r["train_flops"]),
            *([cal.format_seconds(seconds[k])] if seconds else []),
        )
    console.print(table)
    total = sum(r["train_flops"] for r in rows)
    console.print(
        f"total estimated training compute: {format_count(total)}FLOP "
        f"(inputs {info.leads} x {info.length} at {info.fs:g} Hz)",
        highlight=False,
    )
    if calibration is None or seconds is None:
        return
    workers = cal.parallel_runs(spec.executor)
    wall = cal.wall_seconds(seconds, workers)
    console.print(
        f"estimated wall time: {cal.format_seconds(wall)} of training on {workers} "
        f"{spec.executor.kind} worker(s) x {calibration.threads} thread(s) "
        "(validation and evaluation not included)",
        highlight=False,
    )
    steps = sorted({t.steps for t in calibration.timings})
    batches = sorted({t.batch_size for t in calibration.timings})
    console.print(
        f"(measured here in {calibration.seconds:.1f} s: {_span(steps)} training step(s) of "
        f"{_span(batches)} random records after a warm-up step, on {calibration.device}, for "
        f"each family's smallest and largest model; other sizes interpolated in log FLOPs)",
        highlight=False,
    )


def _span(values: list[int]) -> str:
    """[3] -> '3', [1, 2, 3] -> '1-3'."""
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


@study_app.command("run")
def run_cmd(
    spec_path: SpecArg,
    mlflow_uri: MlflowUri = None,
    mlflow_experiment: MlflowExperiment = None,
    tensorboard: TensorBoard = None,
) -> None:
    """Run every run of the study that is not finished (finished runs are skipped)."""
    from ecgscale.study.study import Study

    start = time.perf_counter()
    results = Study.from_yaml(spec_path).run(
        mlflow_uri=mlflow_uri, mlflow_experiment=mlflow_experiment, tensorboard=tensorboard
    )
    runs = results.runs()
    failed = runs[runs["status"] == "failed"]
    console.print(
        f"{(runs['status'] == 'done').sum()} of {len(runs)} runs done, {len(failed)} "
        f"failed, in {time.perf_counter() - start:.0f} s; results in {results.path}"
    )
    if len(failed):
        raise UserError(f"{len(failed)} runs failed; see `ecgscale study status {spec_path}`")


RESUME_HELP = "Continue an interrupted study: unfinished runs restart from their last checkpoint."
study_app.command("resume", help=RESUME_HELP)(run_cmd)


@study_app.command("status")
def status_cmd(spec_path: SpecArg) -> None:
    """Counts of planned, running, done and failed runs, and the errors of failed ones."""
    from ecgscale.study.study import Study

    study = Study.from_yaml(spec_path)
    spec, runs = study.spec, study.results().runs()
    counts = runs["status"].value_counts().to_dict()
    console.print(
        f"study {spec.name}: {len(runs)} runs: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
    for row in runs[runs["status"] == "failed"].itertuples():
        console.print(
            f"  failed {row.run_id} {row.family} {row.size}: {row.error}", highlight=False
        )


@study_app.command("export")
def export_cmd(
    spec_path: SpecArg,
    out: Annotated[
        Path | None, typer.Option(help="File (.parquet or .csv) (default: OUT/results.parquet).")
    ] = None,
    labels: Annotated[
        bool,
        typer.Option(
            "--labels",
            help="Export the common-label-set losses of label-scaling runs instead (one row per "
            "run x label group; fit with --target id_loss --by label_group --x n_labels).",
        ),
    ] = False,
) -> None:
    """Write the finished runs in the scaling-fit schema (one row per run x task)."""
    from ecgscale.study.study import Study

    study = Study.from_yaml(spec_path)
    spec, results = study.spec, study.results()
    table = results.label_table() if labels else results.table()
    if labels and table.empty:
        raise UserError(f"study {spec.name}: no finished label-scaling runs in {results.path}")
    out = out or spec.out / ("label_groups.parquet" if labels else "results.parquet")
    if out.suffix not in (".parquet", ".csv"):
        raise UserError(f"--out {out}: expected a .parquet or .csv file")
    tmp = out.with_name(f".{out.name}.tmp")
    table.to_parquet(tmp, index=False) if out.suffix == ".parquet" else table.to_csv(
        tmp, index=False
    )
    tmp.replace(out)
    console.print(f"wrote {len(table)} rows to {out}")


def report_cmd(
    spec_path: SpecArg,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: OUT/report).")] = None,
) -> None:
    """Fit the scaling laws of a study and write its HTML report and figures."""
    from ecgscale.study.study import Study

    path = Study.from_yaml(spec_path).report(out)
    console.print(f"report: {path}")


def demo_cmd(
    out: Annotated[Path, typer.Option(help="Folder of the demo study.")] = Path("demo_out"),
    quick: Annotated[bool, typer.Option(help="36 runs, about two minutes.")] = False,
) -> None:
    """The main job: a four-family scaling study on synthetic ECGs, ending in an HTML report."""
    from ecgscale.study.demo import run_demo

    start = time.perf_counter()
    report = run_demo(out, quick=quick)
    console.print(f"demo finished in {time.perf_counter() - start:.0f} s; report: {report}")
