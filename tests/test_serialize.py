"""Commands that change a table or its state serialize with the runs of its layer.

A real `medallion run all` runs in another process and pauses inside the silver layer
(after planning its window, before committing), holding silver's lock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from conftest import add_landing_file, medallion
from medallion_cli.errors import ExitCode


def batch(project: Path, name: str, prefix: str, n: int = 5) -> set[str]:
    rows = [(f"{prefix}-{i}", i + 1, "purchase", 10.0 + i, "2024-01-05", f"2024-01-05T1{i}:00:00Z", "north") for i in range(n)]
    add_landing_file(project, name, rows)
    return {r[0] for r in rows}


def silver_ids(project: Path) -> set[str]:
    return set(pl.read_delta(str(project / "lake" / "silver_events"))["event_id"].to_list())


class PausedRun:
    """`medallion run all` in a subprocess, paused at ``point`` for ``seconds`` while holding the layer's lock."""

    def __init__(self, project: Path, point: str, seconds: float = 8) -> None:
        self.flag = project / ".paused"
        env = dict(os.environ, MEDALLION_TEST_PAUSE_AT=f"{point}={seconds}", MEDALLION_TEST_PAUSE_FILE=str(self.flag))
        # --wait: a command queued behind this run may take a later table's lock (restore
        # resets the watermarks downstream) before the run gets there; the run then queues too.
        self.proc = subprocess.Popen([sys.executable, "-m", "medallion_cli", "run", "all", "--wait", "-C", str(project), "-q"],
                                     env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not self.flag.exists():
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline, "the run never reached its pause point"
            time.sleep(0.05)

    def finish(self) -> None:
        out, err = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, err


def test_restore_during_a_run_fails_or_waits_and_loses_no_row(ran_project):
    project = ran_project
    first = batch(project, "b1.csv", "b1")
    assert medallion("run", "all", "-C", project, "-q").exit_code == 0  # silver version 1
    second = batch(project, "b2.csv", "b2")
    run = PausedRun(project, "silver_events:planned")
    try:
        t0 = time.perf_counter()
        r = medallion("restore", "silver_events", "--version", "0", "--yes", "-C", project)
        assert time.perf_counter() - t0 < 30  # refused at once, not after the 60 s hold
        assert r.exit_code == ExitCode.CONFLICT, r
        assert "layer 'silver_events' is being run by run " in r.stderr and f"(pid {run.proc.pid} " in r.stderr, r
        assert "--wait" in r.stderr and "Traceback" not in r.stderr
        # Every other command that changes silver or its state is refused the same way.
        for args in (("optimize", "silver_events", "--yes"), ("vacuum", "silver_events", "--yes"),
                     ("watermark", "set", "silver_events", "2024-01-01", "--yes"), ("watermark", "repair")):
            r = medallion(*args, "-C", project)
            assert r.exit_code == ExitCode.CONFLICT, (args, r)
            assert "layer 'silver_events' is being run by run " in r.stderr, (args, r)
        # A dry run changes nothing and needs no lock.
        assert medallion("restore", "silver_events", "--version", "0", "--dry-run", "-C", project).exit_code == 0
        # --wait queues behind the run, then restores.
        r = medallion("restore", "silver_events", "--version", "0", "--yes", "--wait", "-C", project, "--json")
        assert r.exit_code == 0, r
    finally:
        run.finish()
    assert json.loads(r.stdout)["plan"]["current_version"] == 2  # planned after the run's commit
    assert medallion("run", "silver", "gold", "-C", project, "-q").exit_code == 0
    incremental = silver_ids(project)
    assert first | second <= incremental
    r = medallion("run", "silver", "--full-refresh", "--yes", "-C", project, "-q")
    assert r.exit_code == 0, r
    assert silver_ids(project) == incremental


def test_watermark_reset_during_a_run_is_refused_or_waits_and_sticks(ran_project):
    project = ran_project
    batch(project, "b1.csv", "b1")
    run = PausedRun(project, "silver_events:planned")
    try:
        r = medallion("watermark", "reset", "silver_events", "--yes", "-C", project)
        assert r.exit_code == ExitCode.CONFLICT, r
        assert f"layer 'silver_events' is being run by run " in r.stderr and "Traceback" not in r.stderr
        r = medallion("watermark", "reset", "silver_events", "--yes", "--wait", "-C", project)
        assert r.exit_code == 0, r
    finally:
        run.finish()
    r = medallion("watermark", "show", "silver_events", "-C", project, "--json")
    (mark,) = json.loads(r.stdout)["watermarks"]
    assert mark["value"] is None  # the run's commit did not bring the old value back
    r = medallion("run", "silver_events", "-C", project, "--json")
    assert json.loads(r.stdout)["layers"][0]["kind"] == "full"


def test_a_command_holding_a_layer_is_named_to_a_run(ran_project):
    from medallion_cli.locks import layer_locks

    with layer_locks(ran_project / ".medallion" / "locks", ["silver_events", "gold_daily_sales"], run_id="x",
                     command="medallion restore silver_events"):
        r = medallion("run", "gold_daily_sales", "-C", ran_project)
    assert r.exit_code == ExitCode.CONFLICT, r
    assert "layer 'gold_daily_sales' is being run by `medallion restore silver_events` (pid " in r.stderr, r
    assert medallion("run", "gold_daily_sales", "-C", ran_project, "-q").exit_code == 0  # released
