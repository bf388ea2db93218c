"""Executors: where the runs of a study execute, behind one interface.

`execute(runs, work, on_start, on_done, on_error)` calls `work(run)` for every run and reports each
outcome to the callbacks in the calling process (which alone writes the results store):

- `SerialExecutor`: in-process, one run after another (the default; deterministic order).
- `PoolExecutor`: local worker processes (spawned, `torch` threads per run limited), each replaced
  by a fresh one after `max_runs_per_worker` runs so that memory stays bounded over long studies.
- `RayExecutor`: Ray tasks with per-run CPU/GPU requests (fractional GPUs allowed), connecting to
  an existing cluster by address or starting a local instance.

A run starts only when `on_start(run)` returns True (the runner's claim on it; False: another
runner holds it and it is skipped), and only as many runs are started as can execute at once, so
concurrent runners split a study. A failed run is retried up to `retries` times before it is
reported as failed.
"""

from __future__ import annotations

import ctypes
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

from ecgscale.errors import ConfigError
from ecgscale.study.planner import Run
from ecgscale.study.spec import ExecutorSpec

Work = Callable[[Run], dict[str, Any]]
OnStart = Callable[[Run], bool]  # False: do not run it (another runner holds it)
OnDone = Callable[[Run, dict[str, Any]], None]
OnError = Callable[[Run, str, bool], None]  # run, error text, final (no retry left)
Outcome = tuple[dict[str, Any] | None, BaseException | None]  # result, or what it raised


def _error_text(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip().splitlines()[-1]


def release_memory() -> None:
    """Hand the heap memory that a finished run freed back to the system: glibc keeps freed
    blocks (of its per-thread arenas above all) mapped, 20-60 MB a run at the quick demo's sizes,
    so a process that executes many runs grows without `malloc_trim(0)`. No-op on other C
    libraries."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def _dispatch(
    runs: Iterable[Run],
    capacity: int,
    retries: int,
    start: Callable[[Run], Any],
    next_done: Callable[[list[Any]], tuple[Any, Outcome]],
    callbacks: tuple[OnStart, OnDone, OnError],
) -> None:
    """Keep up to `capacity` runs in flight: `start(run)` launches one and returns its handle,
    `next_done(handles)` waits for one of them and returns it with its outcome."""
    on_start, on_done, on_error = callbacks
    todo, attempts = deque(runs), Counter[str]()
    pending: dict[Any, Run] = {}
    while todo or pending:
        while todo and len(pending) < capacity:
            run = todo.popleft()
            if on_start(run):
                attempts[run.run_id] += 1
                pending[start(run)] = run
        if not pending:
            return
        handle, (result, exc) = next_done(list(pending))
        run = pending.pop(handle)
        if exc is None:
            on_done(run, result)
            continue
        final = attempts[run.run_id] > retries
        on_error(run, _error_text(exc), final)
        if not final:
            todo.appendleft(run)


class SerialExecutor:
    """Runs in the calling process, in order."""

    def __init__(self, spec: ExecutorSpec) -> None:
        self.retries = spec.retries

    def execute(
        self, runs: list[Run], work: Work, on_start: OnStart, on_done: OnDone, on_error: OnError
    ) -> None:
        outcomes: dict[str, Outcome] = {}

        def start(run: Run) -> str:
            try:
                outcomes[run.run_id] = (work(run), None)
            except Exception as exc:
                outcomes[run.run_id] = (None, exc)
            release_memory()
            return run.run_id

        def next_done(handles: list[str]) -> tuple[str, Outcome]:
            return handles[0], outcomes.pop(handles[0])

        _dispatch(runs, 1, self.retries, start, next_done, (on_start, on_done, on_error))


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def _pool_work(work: Work, run: Run, threads: int) -> dict[str, Any]:
    _limit_threads(threads)
    try:
        return work(run)
    finally:
        release_memory()


class _Worker:
    """One spawned worker process (a one-process pool), started on first use and replaced by a
    fresh one after `max_runs` runs (None: never) or when it died."""

    def __init__(self, max_runs: int | None) -> None:
        self.max_runs = max_runs
        self.pool: ProcessPoolExecutor | None = None
        self.runs = 0

    def submit(self, *args: Any) -> Future:
        if self.pool is None:
            self.pool, self.runs = ProcessPoolExecutor(1, mp_context=get_context("spawn")), 0
        self.runs += 1
        return self.pool.submit(_pool_work, *args)

    def finished(self, exc: BaseException | None) -> None:
        """After a run: retire the process when it is spent or broken."""
        spent = self.max_runs is not None and self.runs >= self.max_runs
        if spent or isinstance(exc, BrokenProcessPool):
            self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


class PoolExecutor:
    """`workers` spawned processes; each run uses `cpus_per_run` torch threads, and a process is
    replaced after `max_runs_per_worker` runs."""

    def __init__(self, spec: ExecutorSpec) -> None:
        self.workers = spec.workers
        self.threads = max(1, int(spec.cpus_per_run))
        self.retries = spec.retries
        self.max_runs = spec.max_runs_per_worker

    def execute(
        self, runs: list[Run], work: Work, on_start: OnStart, on_done: OnDone, on_error: OnError
    ) -> None:
        idle = [_Worker(self.max_runs) for _ in range(self.workers)]
        busy: dict[Future, _Worker] = {}

        def start(run: Run) -> Future:
            worker = idle.pop()
            future = worker.submit(work, run, self.threads)
            busy[future] = worker
            return future

        def next_done(futures: list[Future]) -> tuple[Future, Outcome]:
            future = next(iter(wait(futures, return_when=FIRST_COMPLETED)[0]))
            worker = busy.pop(future)
            exc = future.exception()
            worker.finished(exc)
            idle.append(worker)
            return future, (None if exc else future.result(), exc)

        try:
            _dispatch(
                runs, self.workers, self.retries, start, next_done, (on_start, on_done, on_error)
            )
        finally:
            for worker in (*idle, *busy.values()):
                worker.close()


class RayExecutor:
    """Ray tasks, one per run, with `num_cpus=cpus_per_run` and `num_gpus=gpus_per_run`; as many
    in flight as the cluster's CPUs (and GPUs) hold, and a Ray worker process is replaced after
    `max_runs_per_worker` runs."""

    def __init__(self, spec: ExecutorSpec) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("executor ray: install ray (`pip install 'ecgscale[ray]'`)") from None
        self.ray = ray
        self.spec = spec

    def _capacity(self) -> int:
        """Runs the cluster can execute at once under the per-run requests."""
        spec, resources = self.spec, self.ray.cluster_resources()
        slots = int(resources.get("CPU", 1) // spec.cpus_per_run)
        if spec.gpus_per_run:
            slots = min(slots, int(resources.get("GPU", 0) // spec.gpus_per_run))
        return max(1, slots)

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
        recycle = spec.max_runs_per_worker  # None: Ray's default (GPU tasks: 1, else never)
        task = (
            ray.remote(_pool_work) if recycle is None else ray.remote(max_calls=recycle)(_pool_work)
        )
        remote = task.options(num_cpus=spec.cpus_per_run, num_gpus=spec.gpus_per_run, max_retries=0)

        def start(run: Run) -> Any:
            return remote.remote(work, run, max(1, int(spec.cpus_per_run)))

        def next_done(refs: list[Any]) -> tuple[Any, Outcome]:
            ref = ray.wait(refs, num_returns=1)[0][0]
            try:
                return ref, (ray.get(ref), None)
            except Exception as exc:
                return ref, (None, getattr(exc, "cause", None) or exc)

        try:
            _dispatch(
                runs,
                self._capacity(),
                spec.retries,
                start,
                next_done,
                (on_start, on_done, on_error),
            )
        finally:
            if started_here:
                ray.shutdown()


def make_executor(spec: ExecutorSpec) -> SerialExecutor | PoolExecutor | RayExecutor:
    """The executor `spec.kind` describes."""
    return {"serial": SerialExecutor, "pool": PoolExecutor, "ray": RayExecutor}[spec.kind](spec)
