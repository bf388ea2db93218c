"""Executors: where the runs of a study execute, behind one interface.

`execute(runs, work, on_start, on_done, on_error)` calls `work(run)` for every run and reports each
outcome to the callbacks in the calling process (which alone writes the results store):

- `SerialExecutor`: in-process, one run after another (the default; deterministic order).
- `PoolExecutor`: a local pool of worker processes (spawned, `torch` threads per run limited).
- `RayExecutor`: Ray tasks with per-run CPU/GPU requests (fractional GPUs allowed), connecting to
  an existing cluster by address or starting a local instance.
A failed run is retried up to `retries` times before it is reported as failed.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any

from ecgscale.errors import ConfigError
from ecgscale.study.planner import Run
from ecgscale.study.spec import ExecutorSpec

Work = Callable[[Run], dict[str, Any]]
OnStart = Callable[[Run], None]
OnDone = Callable[[Run, dict[str, Any]], None]
OnError = Callable[[Run, str, bool], None]  # run, error text, final (no retry left)


def _error_text(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip().splitlines()[-1]


class SerialExecutor:
    """Runs in the calling process, in order."""

    def __init__(self, spec: ExecutorSpec) -> None:
        self.retries = spec.retries

    def execute(
        self, runs: list[Run], work: Work, on_start: OnStart, on_done: OnDone, on_error: OnError
    ) -> None:
        for run in runs:
            for attempt in range(self.retries + 1):
                on_start(run)
                try:
                    result = work(run)
                except Exception as exc:
                    on_error(run, _error_text(exc), attempt == self.retries)
                    continue
                on_done(run, result)
                break


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def _pool_work(work: Work, run: Run, threads: int) -> dict[str, Any]:
    _limit_threads(threads)
    return work(run)


class PoolExecutor:
    """A local pool of `workers` spawned processes; each run uses `cpus_per_run` torch threads."""

    def __init__(self, spec: ExecutorSpec) -> None:
        self.workers = spec.workers
        self.threads = max(1, int(spec.cpus_per_run))
        self.retries = spec.retries

    def execute(
        self, runs: list[Run], work: Work, on_start: OnStart, on_done: OnDone, on_error: OnError
    ) -> None:
        attempts = dict.fromkeys((r.run_id for r in runs), 0)
        with ProcessPoolExecutor(self.workers, mp_context=get_context("spawn")) as pool:
            pending: dict[Future, Run] = {}

            def submit(run: Run) -> None:
                on_start(run)
                attempts[run.run_id] += 1
                pending[pool.submit(_pool_work, work, run, self.threads)] = run

            for run in runs:
                submit(run)
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for future in done:
                    run = pending.pop(future)
                    exc = future.exception()
                    if exc is None:
                        on_done(run, future.result())
                        continue
                    final = attempts[run.run_id] > self.retries
                    on_error(run, _error_text(exc), final)
                    if not final:
                        submit(run)


class RayExecutor:
    """Ray tasks, one per run, with `num_cpus=cpus_per_run` and `num_gpus=gpus_per_run`."""

    def __init__(self, spec: ExecutorSpec) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("executor ray: install ray (`pip install 'ecgscale[ray]'`)") from None
        self.ray = ray
        self.spec = spec

    def execute(
        self, runs: list[Run], work: Work, on_start: OnStart, on_done: OnDone, on_error: OnError
    ) -> None:
        ray, spec = self.ray, self.spec
        started_here = not ray.is_initialized()
        if started_here:
            options: dict[str, Any] = {
                "address": spec.address,
                "include_dashboard": False,
                "log_to_driver": False,
            }
            if spec.address is None:
                options["num_cpus"] = max(1, spec.workers) * max(1, int(spec.cpus_per_run))
            ray.init(**{k: v for k, v in options.items() if v is not None or k == "address"})
        remote = ray.remote(_pool_work).options(
            num_cpus=spec.cpus_per_run, num_gpus=spec.gpus_per_run, max_retries=0
        )
        attempts = dict.fromkeys((r.run_id for r in runs), 0)
        pending: dict[Any, Run] = {}

        def submit(run: Run) -> None:
            on_start(run)
            attempts[run.run_id] += 1
            ref = remote.remote(work, run, max(1, int(spec.cpus_per_run)))
            pending[ref] = run

        try:
            for run in runs:
                submit(run)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                run = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except Exception as exc:
                    cause = getattr(exc, "cause", None) or exc
                    final = attempts[run.run_id] > spec.retries
                    on_error(run, _error_text(cause), final)
                    if not final:
                        submit(run)
                    continue
                on_done(run, result)
        finally:
            if started_here:
                ray.shutdown()


def make_executor(spec: ExecutorSpec) -> SerialExecutor | PoolExecutor | RayExecutor:
    """The executor `spec.kind` describes."""
    return {"serial": SerialExecutor, "pool": PoolExecutor, "ray": RayExecutor}[spec.kind](spec)
