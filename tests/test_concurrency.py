"""Locks: one run per layer, clear conflicts, no stale locks, the state file's own lock."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

from conftest import medallion
from medallion_cli.errors import ExitCode
from medallion_cli.locks import layer_lock
from medallion_cli.state import StateStore


def hold_in_subprocess(code: str) -> subprocess.Popen:
    """Run ``code`` in another process; it prints READY once it holds what it holds."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "READY"
    return proc


def test_second_run_of_a_layer_fails_at_once_naming_the_holder(ran_project):
    holder = hold_in_subprocess(f"""
        import time
        from pathlib import Path
        from medallion_cli.locks import layer_lock
        with layer_lock(Path({str(ran_project / '.medallion' / 'locks')!r}), "silver_events", run_id="RUN-A"):
            print("READY", flush=True)
            time.sleep(60)
    """)
    try:
        t0 = time.perf_counter()
        r = medallion("run", "all", "-C", ran_project)
        assert time.perf_counter() - t0 < 30  # refused at once, not after the 60 s hold
        assert r.exit_code == ExitCode.CONFLICT, r
        assert f"layer 'silver_events' is being run by run RUN-A (pid {holder.pid}" in r.stderr
        assert "--wait" in r.stderr and "Traceback" not in r.stderr
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait()
    r = medallion("run", "all", "-C", ran_project)
    assert r.exit_code == 0, r  # no stale lock left behind


def test_wait_queues_behind_the_holder(ran_project):
    lock_dir = ran_project / ".medallion" / "locks"
    acquired = threading.Event()

    def hold() -> None:
        with layer_lock(lock_dir, "gold_daily_sales", run_id="RUN-B"):
            acquired.set()
            time.sleep(1.5)

    thread = threading.Thread(target=hold)
    thread.start()
    acquired.wait()
    t0 = time.perf_counter()
    r = medallion("run", "gold_daily_sales", "-C", ran_project, "--wait", "-q")
    waited = time.perf_counter() - t0
    thread.join()
    assert r.exit_code == 0, r
    assert waited >= 1.0


def test_state_file_held_by_another_process(ran_project, monkeypatch):
    state = ran_project / ".medallion" / "state.duckdb"
    holder = hold_in_subprocess(f"""
        import duckdb, time
        con = duckdb.connect({str(state)!r})
        print("READY", flush=True)
        time.sleep(60)
    """)
    try:
        monkeypatch.setenv("MEDALLION_STATE_LOCK_TIMEOUT", "1")
        r = medallion("watermark", "show", "-C", ran_project)
        assert r.exit_code == ExitCode.CONFLICT, r
        assert "stayed locked by another process" in r.stderr
        assert "IOException" not in r.stderr and "Could not set lock" not in r.stderr
    finally:
        holder.kill()
        holder.wait()
    r = medallion("watermark", "show", "-C", ran_project, "--json")
    assert r.exit_code == 0, r


def test_a_briefly_held_state_file_is_waited_for(ran_project):
    state = ran_project / ".medallion" / "state.duckdb"
    holder = hold_in_subprocess(f"""
        import duckdb, time
        con = duckdb.connect({str(state)!r})
        print("READY", flush=True)
        time.sleep(1)
    """)
    r = medallion("watermark", "show", "-C", ran_project, "--json")
    holder.wait()
    assert r.exit_code == 0, r
    assert len(json.loads(r.stdout)["watermarks"]) == 7  # 6 incremental tables, gold_sales_by_segment has 2 inputs


def test_sql_is_parameterized(tmp_path):
    store = StateStore(tmp_path / "state.duckdb")
    evil = "x'; DROP TABLE watermarks; --"
    with store.connect() as con:
        store.record(con, table=evil, column="c'--", value="v'); DELETE FROM watermarks; --", value_int=1,
                     delta_version=0, run_id="r", action="set")
        store.record_files(con, table=evil, files=[("a'b.csv", "1:2")], delta_version=0, run_id="r")
    (wm,) = store.watermarks(evil)
    assert (wm.table, wm.column, wm.value) == (evil, "c'--", "v'); DELETE FROM watermarks; --")
    assert store.ingested_files(evil) == {"a'b.csv": "1:2"}
    assert [c.action for c in store.history(evil)] == ["set"]
