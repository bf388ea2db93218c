"""Executors behind one interface: order, retries, failure reports; Ray on a local instance."""

from __future__ import annotations

import os

import pytest

from ecgscale.study.executors import PoolExecutor, RayExecutor, SerialExecutor
from ecgscale.study.planner import Run
from ecgscale.study.spec import ExecutorSpec

RUNS = [Run(f"r{i}", "F", "s", 1, {"model": "m", "objective": "o", "x": i}) for i in range(4)]


def square(run: Run) -> dict:
    if run.config["x"] == 3:
        raise ValueError("x is 3")
    return {"y": run.config["x"] ** 2}


def _collect(executor) -> tuple[dict, list, list]:
    done, errors, started = {}, [], []
    executor.execute(
        RUNS,
        square,
        lambda r: started.append(r.run_id) or True,
        lambda r, out: done.__setitem__(r.run_id, out["y"]),
        lambda r, err, final: errors.append((r.run_id, err, final)),
    )
    return done, errors, started


def test_serial_executor_retries_then_reports_failure() -> None:
    done, errors, started = _collect(SerialExecutor(ExecutorSpec(retries=1)))
    assert done == {"r0": 0, "r1": 1, "r2": 4}
    assert errors == [("r3", "ValueError: x is 3", False), ("r3", "ValueError: x is 3", True)]
    assert started == ["r0", "r1", "r2", "r3", "r3"]


def test_pool_executor() -> None:
    done, errors, _ = _collect(PoolExecutor(ExecutorSpec(kind="pool", workers=2, retries=0)))
    assert done == {"r0": 0, "r1": 1, "r2": 4}
    assert errors == [("r3", "ValueError: x is 3", True)]


def pid(run: Run) -> dict:
    return {"pid": os.getpid()}


def test_pool_workers_are_replaced_after_max_runs_and_skipped_runs_never_start() -> None:
    spec = ExecutorSpec(kind="pool", workers=1, max_runs_per_worker=2, retries=0)
    pids: dict[str, int] = {}
    PoolExecutor(spec).execute(
        RUNS,
        pid,
        lambda r: r.run_id != "r1",  # r1: claimed by another runner
        lambda r, out: pids.__setitem__(r.run_id, out["pid"]),
        lambda r, err, final: pytest.fail(err),
    )
    assert sorted(pids) == ["r0", "r2", "r3"]
    assert pids["r0"] == pids["r2"] != pids["r3"]  # a fresh process after two runs


def test_ray_executor_on_a_local_instance() -> None:
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # test module: not importable
    spec = ExecutorSpec(kind="ray", workers=2, cpus_per_run=1, retries=1)
    done, errors, started = _collect(RayExecutor(spec))
    assert done == {"r0": 0, "r1": 1, "r2": 4}
    assert [e[2] for e in errors] == [False, True] and "x is 3" in errors[0][1]
    assert started.count("r3") == 2
