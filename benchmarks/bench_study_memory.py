"""Pool worker memory over a long study: before (no heap trim, no recycling) and now, side by side.

    .venv/bin/python benchmarks/bench_study_memory.py [--seeds 15] [--workers 2] [--every 10]
        [--modes before trim now]

A tiny study - four families (ResNet-SL/SSL at 2K, Transformer-SL/SSL at 1K encoder parameters),
`--seeds` seeds each (15: 60 runs), 1 epoch on 300 synthetic records, ID evaluation and two OOD
probes - runs on the pool executor (`--workers` processes, one torch thread each) once per mode:

* before: as the pool ran before: no `malloc_trim` after a run, workers never replaced;
* trim: `release_memory` (malloc_trim) after every run, workers never replaced;
* now: both, with a worker replaced after `--every` runs (`max_runs_per_worker`, the default).

At the end of every run the worker reads its own RSS (after the trim where there is one), and a
thread samples the RSS of the whole process tree every 0.1 s (summed over processes, so shared
library pages count once per process). Printed per mode: runs, worker
processes, worker RSS after the first runs and after the last runs of the study (median over as
many runs as there are workers) and their ratio, the largest growth of one process from its first
to its last run, the peak RSS of the tree, and the wall time. Goal: worker RSS flat within 10 %.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from ecgscale.study import executors
from ecgscale.study.executors import PoolExecutor
from ecgscale.study.planner import Run, plan
from ecgscale.study.runner import StudyContext, execute_run, prepare_stores
from ecgscale.study.spec import StudySpec, parse_spec

MODES = {"before": (False, None), "trim": (True, None), "now": (True, "every")}
"""mode -> (trim after each run, worker replaced after --every runs)."""


def study(out: Path, seeds: int, workers: int, every: int | None) -> StudySpec:
    family = {"lr": 0.003, "batch_size": 32}
    families = [
        dict(family, name="ResNet-SL", model="resnet", objective="sl", sizes=["2K"]),
        dict(family, name="ResNet-SSL", model="resnet", objective="cmsc", sizes=["2K"]),
        dict(family, name="Tr-SL", model="beat_transformer", objective="sl", sizes=["1K"]),
        dict(family, name="Tr-SSL", model="beat_transformer", objective="masked", sizes=["1K"]),
    ]
    return parse_spec(
        {
            "name": "memory",
            "out": str(out),
            "stores": {
                "source": {"synth": {"records": 300, "fs": 100, "length": 1000, "seed": 0}},
                "shifted": {"synth": {"records": 200, "shift": 1.0, "length": 1000, "seed": 1}},
            },
            "pretrain_store": "source",
            "label_set": "code",
            "ood": [
                {"task": "synth_extra", "store": "source"},
                {"task": "synth_code", "store": "shifted"},
            ],
            "families": families,
            "seeds": list(range(seeds)),
            "budget": {"epochs": 1},
            "executor": {"kind": "pool", "workers": workers, "max_runs_per_worker": every},
        }
    )


def measured(ctx: StudyContext, trim: bool, run: Run) -> dict[str, Any]:
    """`execute_run` in a pool worker, then what the worker does after it (`release_memory`);
    returns the worker's pid and RSS (bytes) at the end."""
    if not trim:  # this worker runs as the pool did before the fix
        executors.release_memory = lambda: None
    execute_run(ctx, run)
    executors.release_memory()
    return {"pid": os.getpid(), "rss": psutil.Process().memory_info().rss}


def tree_rss() -> int:
    """RSS (bytes) of this process and all its descendants, summed."""
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure(spec: StudySpec, trim: bool) -> dict[str, Any]:
    ctx = StudyContext(spec, prepare_stores(spec, progress=False))
    runs = plan(spec)
    after: list[tuple[int, float]] = []  # (pid, RSS in MiB) after each run, in completion order
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak[0] = max(peak[0], tree_rss())

    def on_done(run: Run, out: dict[str, Any]) -> None:
        after.append((out["pid"], out["rss"] / 2**20))

    def on_error(run: Run, error: str, final: bool) -> None:
        raise RuntimeError(f"{run.family} {run.size}: {error}")

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    PoolExecutor(spec.executor).execute(
        runs, functools.partial(measured, ctx, trim), lambda run: True, on_done, on_error
    )
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    per_process: dict[int, list[float]] = {}
    for pid, rss in after:
        per_process.setdefault(pid, []).append(rss)
    k = spec.executor.workers
    first = statistics.median(rss for _, rss in after[:k])
    last = statistics.median(rss for _, rss in after[-k:])
    return {
        "runs": len(after),
        "processes": len(per_process),
        "first": first,
        "last": last,
        "growth": last / first - 1,
        "process_growth": max(s[-1] / s[0] - 1 for s in per_process.values()),
        "peak": peak[0] / 2**30,
        "wall": wall,
        "series": {pid: [round(r) for r in s] for pid, s in per_process.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=15, help="seeds per family (4 families)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--every", type=int, default=10, help="runs per worker process (now)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            trim, recycle = MODES[mode]
            every = args.every if recycle else None
            out = Path(tmp) / mode
            rows[mode] = row = measure(study(out, args.seeds, args.workers, every), trim)
            print(f"{mode}: worker RSS (MiB) after each run, per process: {row['series']}")
    head = f"{'mode':>7}{'runs':>6}{'procs':>6}{'first MiB':>11}{'last MiB':>10}{'growth':>8}"
    print(head + f"{'worst proc':>12}{'tree peak GiB':>15}{'wall s':>8}")
    for mode, r in rows.items():
        print(
            f"{mode:>7}{r['runs']:>6}{r['processes']:>6}{r['first']:>11.0f}{r['last']:>10.0f}"
            f"{100 * r['growth']:>7.1f}%{100 * r['process_growth']:>11.1f}%{r['peak']:>15.2f}"
            f"{r['wall']:>8.0f}"
        )
    print(
        "growth: worker RSS after the last runs / after the first runs - 1 (goal: within 10 %); "
        "worst proc: largest growth of one process from its first to its last run"
    )


if __name__ == "__main__":
    main()
