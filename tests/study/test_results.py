"""Claims on runs in the results store: one owner at a time, leases that lapse, dead owners."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from ecgscale.study.planner import Run
from ecgscale.study.results import Results, new_owner

CONFIG = {"model": "resnet", "objective": "sl", "data_fraction": 1.0, "label_top_k": None}
RUNS = [Run(f"r{i}", "F", "s", 1, dict(CONFIG, seed=i)) for i in range(3)]


def _results(tmp_path: Path) -> Results:
    results = Results(tmp_path / "results.sqlite")
    results.add_planned(RUNS)
    return results


def test_a_claimed_run_is_taken_once_until_its_lease_lapses(tmp_path: Path) -> None:
    results = _results(tmp_path)
    a, b = new_owner(), new_owner()
    assert results.claim("r0", a) and not results.claim("r0", b)
    assert results.claim("r1", b, lease=0.05)
    time.sleep(0.1)
    assert results.claim("r1", a)  # b's lease lapsed: a takes the run over
    assert not results.finish("r1", {}, [("id", "loss", 1.0)], owner=b)  # b's result is refused
    assert not results.mark_failed("r1", "late", owner=b)
    assert results.finish("r1", {}, [("id", "loss", 2.0)], owner=a)
    results.renew(a, lease=60)
    runs = results.runs().set_index("run_id")
    assert runs.loc["r1", "status"] == "done" and runs.loc["r1", "attempts"] == 2
    assert results.metrics()["value"].tolist() == [2.0]
    assert runs.loc["r0", "lease_until"] > time.time() + 50  # renewed while it runs
    assert not results.claim("r1", b)  # done


def test_failed_runs_are_retried_by_their_runner_or_a_later_one(tmp_path: Path) -> None:
    results = _results(tmp_path)
    a, b = new_owner(), new_owner()
    since_b = time.time()
    assert results.claim("r0", a) and results.mark_failed("r0", "boom", owner=a)
    assert not results.claim("r0", b, since=since_b)  # failed while b ran: a's to retry
    assert results.claim("r0", a) and results.mark_failed("r0", "boom", owner=a)
    assert results.claim("r0", new_owner(), since=time.time())  # a later runner retries it
    results.release(a, "interrupted")  # a holds nothing any more
    assert results.claim("r1", a)
    results.release(a, "interrupted")
    runs = results.runs().set_index("run_id")
    assert (runs.loc["r1", "status"], runs.loc["r1", "error"]) == ("failed", "interrupted")
    assert runs.loc["r0", "status"] == "running"


def test_the_claim_of_a_dead_runner_on_this_host_lapses_at_once(tmp_path: Path) -> None:
    results = _results(tmp_path)
    code = f"from ecgscale.study.results import *; print(Results({str(results.path)!r}).claim("
    code += "'r2', new_owner()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"  # the process is gone, its lease is not over
    assert results.claim("r2", new_owner())
    assert results.runs().set_index("run_id").loc["r2", "attempts"] == 2


def test_an_older_database_gets_the_lease_columns(tmp_path: Path) -> None:
    import sqlite3

    from ecgscale.study import results as module

    old = module._SCHEMA.replace(",\n    owner TEXT,\n    lease_until REAL", "")
    assert "owner" not in old
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(old)
    Results(path).add_planned(RUNS[:1])
    with sqlite3.connect(path) as db:  # a run of a runner killed before there were leases
        db.execute("UPDATE runs SET status='running', attempts=1")
    assert Results(path).claim("r0", new_owner())
    assert Results(path).runs()["attempts"].tolist() == [2]
