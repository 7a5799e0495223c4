"""``--engine ray``: bronze work units run as Ray tasks on a real local Ray; the driver keeps
the lock, the plan and the one commit. Same tables as the local engine, one Delta version per
run, and a failed task commits nothing."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from batches import EventStream
from conftest import medallion
from test_units import T0, clock, commit_info, land, layer, partition, run, table  # noqa: F401 (clock: fixture)

try:
    import ray
except ImportError:  # the `ray` extra is optional: only the install hint is tested then
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install 'medallion-cli[ray]')")

BRONZE_COLUMNS = ("_source_file", "_ingested_at", "_run_id")


# Ray 2.60 turns token authentication on, and a process keeps the first token it sees (in
# C++): every Ray of the test session (this module's, test_ray_cluster's) uses this one.
RAY_TOKEN = "5e1f0c3a" * 8


@contextmanager
def ray_env(home: Path) -> Iterator[None]:
    """Token authentication with :data:`RAY_TOKEN` and a HOME of the tests' own (Ray writes
    under ``~/.ray``), for as long as a module's Ray runs; the environment is restored after.
    ``Config.initialize`` makes this process read RAY_AUTH_MODE again (Ray's own
    ``_enable_token_auth`` does the same): it read it once, when ``ray`` was imported."""
    import os

    from ray._raylet import Config

    before = dict(os.environ)
    os.environ.update(HOME=str(home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=RAY_TOKEN)
    os.environ.pop("RAY_ADDRESS", None)
    Config.initialize("")
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(before)
        Config.initialize("")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local Ray for the module; workers inherit this process's PYTHONPATH (the shared path)."""
    with ray_env(tmp_path_factory.mktemp("ray-home")):
        # address="local": a new instance even when another Ray runs on this machine (another
        # test worker, a cluster test), which ray.init() without an address would join.
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        yield
        ray.shutdown()


def twins(project: Path, tmp_path: Path, **spec) -> tuple[Path, Path]:
    """Two copies split into the same units: one runs locally, the other with --engine ray."""
    partition(project, **spec)
    other = tmp_path / "ray"
    shutil.copytree(project, other)
    return project, other


def unit_files(project: Path) -> set[str]:
    return {p.name for p in (project / "lake" / "bronze_events").glob("*.parquet")}


@needs_ray
def test_ray_units_give_the_local_engine_table_in_one_version(project, tmp_path, clock, local_ray):
    stream = EventStream(seed=5)
    land(project, stream, 4)
    local, remote = twins(project, tmp_path, max_files=2)  # 7 files: 4 units
    docs = [run(clock, local, "bronze_events", at=T0), run(clock, remote, "bronze_events", "--engine", "ray", at=T0)]
    assert layer(docs[1], "bronze_events")["metrics"]["units"] == 4
    assert_frame_equal(table(local, "bronze_events"), table(remote, "bronze_events"))
    assert set(BRONZE_COLUMNS) <= set(table(remote, "bronze_events").columns)
    assert commit_info(local, "bronze_events") == commit_info(remote, "bronze_events")
    assert commit_info(remote, "bronze_events")[0] == 0  # one version for the whole batch

    # The second batch, engine from conf/project.yml this time: one more version.
    land(local, stream, 3, n=40)
    for f in (local / "data" / "landing" / "events").iterdir():
        shutil.copy2(f, remote / "data" / "landing" / "events" / f.name)
    path = remote / "conf" / "project.yml"
    data = yaml.safe_load(path.read_text())
    data["medallion"]["engine"] = {"type": "ray", "address": "auto"}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    for p in (local, remote):
        doc = run(clock, p, "bronze_events", at=T0 + timedelta(hours=1))
    assert layer(doc, "bronze_events")["metrics"]["units"] == 2
    assert_frame_equal(table(local, "bronze_events"), table(remote, "bronze_events"))
    assert commit_info(local, "bronze_events") == commit_info(remote, "bronze_events")
    assert commit_info(remote, "bronze_events")[0] == 1
    # Every file in the folder is committed: no leftovers of the tasks.
    assert unit_files(remote) == {Path(u).name for u in DeltaTable(str(remote / "lake" / "bronze_events")).file_uris()}


POISON = '''
import os
from pathlib import Path

import polars as pl

MARKER = Path(__file__).resolve().parent.parent / "{marker}"


def bronze_events(landing: pl.LazyFrame, run_id: str) -> pl.LazyFrame:
    if MARKER.exists():
        victim = MARKER.read_text().strip()
        names = landing.select(pl.col("_source_file").unique()).collect().to_series().to_list()
        if victim in names:
            {action}
    return landing.with_columns(pl.lit(run_id, dtype=pl.String).alias("_run_id"))
'''


def poison(project: Path, victim: str, action: str) -> Path:
    marker = project / "POISON"
    (project / "pipelines" / "bronze_events.py").write_text(POISON.format(marker="POISON", action=action))
    marker.write_text(victim)
    return marker


@needs_ray
def test_a_failing_task_fails_the_run_and_commits_nothing(project, tmp_path, clock, local_ray):
    stream = EventStream(seed=6)
    land(project, stream, 2)
    local, remote = twins(project, tmp_path, max_files=1)
    for p in (local, remote):
        run(clock, p, "bronze_events", *(("--engine", "ray") if p == remote else ()), at=T0)
    before, version, files_before = table(remote, "bronze_events"), commit_info(remote, "bronze_events"), unit_files(remote)
    land(local, stream, 3)
    new = sorted(set(f.name for f in (local / "data" / "landing" / "events").iterdir())
                 - set(f.name for f in (remote / "data" / "landing" / "events").iterdir()))
    for name in new:
        shutil.copy2(local / "data" / "landing" / "events" / name, remote / "data" / "landing" / "events" / name)
    marker = poison(remote, new[1], 'raise ValueError("poisoned unit")')

    clock["at"] = T0 + timedelta(hours=1)
    r = medallion("run", "bronze_events", "-C", remote, "--engine", "ray", "-q")
    assert r.exit_code == 1 and "poisoned unit" in r.stderr, r
    assert commit_info(remote, "bronze_events") == version
    assert_frame_equal(table(remote, "bronze_events"), before)
    assert unit_files(remote) == files_before  # the other units' files were removed, none committed

    marker.unlink()
    for p in (local, remote):
        run(clock, p, "bronze_events", *(("--engine", "ray") if p == remote else ()), at=T0 + timedelta(hours=2))
    assert_frame_equal(table(local, "bronze_events"), table(remote, "bronze_events"))
    assert commit_info(remote, "bronze_events")[0] == version[0] + 1


@needs_ray
def test_a_worker_killed_mid_task_is_retried_to_the_same_table(project, tmp_path, clock, local_ray):
    stream = EventStream(seed=7)
    land(project, stream, 3)
    local, remote = twins(project, tmp_path, max_files=1)
    victim = sorted(f.name for f in (remote / "data" / "landing" / "events").iterdir())[1]
    # The first attempt removes the marker and dies (SIGKILL): Ray runs the task again.
    poison(remote, victim, "MARKER.unlink()\n            os.kill(os.getpid(), 9)")
    run(clock, local, "bronze_events", at=T0)
    doc = run(clock, remote, "bronze_events", "--engine", "ray", at=T0)
    assert not (remote / "POISON").exists()  # the kill happened
    assert layer(doc, "bronze_events")["metrics"]["units"] > 3
    assert_frame_equal(table(local, "bronze_events"), table(remote, "bronze_events"))
    assert commit_info(local, "bronze_events") == commit_info(remote, "bronze_events")


def test_unknown_engine_is_a_usage_error(project):
    r = medallion("run", "bronze_events", "-C", project, "--engine", "spark", "-q")
    assert r.exit_code == 2 and "--engine" in r.stderr, r


def test_without_ray_the_engine_says_how_to_install_it(project, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    r = medallion("run", "bronze_events", "-C", project, "--engine", "ray", "-q")
    assert r.exit_code == 2 and "pip install 'medallion-cli[ray]'" in r.stderr, r
    assert not (project / "lake" / "bronze_events").exists()


def test_a_bad_engine_in_project_yml_is_a_config_error(project):
    path = project / "conf" / "project.yml"
    data = yaml.safe_load(path.read_text())
    data["medallion"]["engine"] = {"type": "spark"}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    r = medallion("run", "bronze_events", "-C", project, "-q")
    assert r.exit_code == 2 and "medallion.engine.type" in r.stderr, r
    # a misspelt key is refused too
    data["medallion"]["engine"] = {"type": "ray", "adress": "auto"}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    r = medallion("run", "bronze_events", "-C", project, "-q")
    assert r.exit_code == 2 and "adress" in r.stderr, r


# -- failures: each re-runs to the tables an uninterrupted run gives ---------------------------------
def set_engine(project: Path, **engine) -> None:
    path = project / "conf" / "project.yml"
    data = yaml.safe_load(path.read_text())
    data["medallion"]["engine"] = {"type": "ray", **engine}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def copy_landing(src: Path, dst: Path) -> None:
    for f in (src / "data" / "landing" / "events").iterdir():
        shutil.copy2(f, dst / "data" / "landing" / "events" / f.name)


def committed_files(project: Path) -> set[str]:
    """Every file any version of bronze_events references (not only the latest)."""
    log = project / "lake" / "bronze_events" / "_delta_log"
    names = set()
    for entry in sorted(log.glob("*.json")):
        for line in entry.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                names.add(Path(action["add"]["path"]).name)
    return names


def own_lines(stderr: str) -> list[str]:
    """medallion's lines of a failed run's stderr (the error, then its hint), after checking that
    the rest is at most Ray's one-line narration: no traceback, no advice from Ray."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in stderr.strip().splitlines()]
    ray_lines = [line for line in lines if line.startswith("(raylet)")]
    assert len(ray_lines) <= 1 and all(line.endswith(".") for line in ray_lines), stderr
    own = [line for line in lines if not line.startswith("(raylet)")]
    assert len(own) <= 2 and own[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return own


def assert_same_as(local: Path, remote: Path) -> None:
    assert_frame_equal(table(local, "bronze_events"), table(remote, "bronze_events"))
    assert commit_info(local, "bronze_events") == commit_info(remote, "bronze_events")
    assert table(remote, "bronze_events").select(["_source_file", "event_id", "updated_at"]).is_duplicated().sum() == \
        table(local, "bronze_events").select(["_source_file", "event_id", "updated_at"]).is_duplicated().sum()


@needs_ray
def test_a_unit_is_retried_in_its_task_by_the_pipeline_retry_policy(project, tmp_path, clock, local_ray):
    stream = EventStream(seed=12)
    land(project, stream, 2)
    path = project / "conf" / "pipelines" / "bronze_events.yml"
    data = yaml.safe_load(path.read_text())
    data["medallion"]["retry"] = {"max_attempts": 2, "initial_delay_s": 0.01, "max_delay_s": 0.02,
                                  "retry_exceptions": ["ConnectionError"]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    local, remote = twins(project, tmp_path, max_files=1)
    victim = sorted(f.name for f in (remote / "data" / "landing" / "events").iterdir())[2]
    poison(remote, victim, 'MARKER.unlink()\n            raise ConnectionError("landing store hiccup")')
    run(clock, local, "bronze_events", at=T0)
    doc = run(clock, remote, "bronze_events", "--engine", "ray", at=T0)
    assert not (remote / "POISON").exists()  # the first attempt failed
    out = layer(doc, "bronze_events")
    assert out["metrics"]["units"] == 5 and out["attempts"] == 6, out  # 5 units, one of them twice
    assert any("attempt 1 of 2 failed (ConnectionError: landing store hiccup)" in w for w in out["warnings"]), out
    assert_same_as(local, remote)
    assert commit_info(remote, "bronze_events")[0] == 0


@needs_ray
def test_a_unit_failing_after_writing_its_file_commits_nothing_and_leaves_no_file(project, tmp_path, clock, local_ray,
                                                                                   monkeypatch):
    stream = EventStream(seed=13)
    land(project, stream, 2)
    local, remote = twins(project, tmp_path, max_files=1)
    for p in (local, remote):
        run(clock, p, "bronze_events", *(("--engine", "ray") if p == remote else ()), at=T0)
    land(local, stream, 2)
    copy_landing(local, remote)
    before, version, files_before = table(remote, "bronze_events"), commit_info(remote, "bronze_events"), unit_files(remote)
    # Env vars set now reach the workers (started earlier, with another environment): the
    # driver passes its test hooks with each task.
    monkeypatch.setenv("MEDALLION_TEST_FAIL_AT", "bronze_events:unit_file_written")
    clock["at"] = T0 + timedelta(hours=1)
    r = medallion("run", "bronze_events", "-C", remote, "--engine", "ray", "-q")
    assert r.exit_code == 1, r
    assert own_lines(r.stderr)[0].endswith("injected failure at bronze_events:unit_file_written"), r
    assert commit_info(remote, "bronze_events") == version
    assert_frame_equal(table(remote, "bronze_events"), before)
    assert unit_files(remote) == files_before  # every unit wrote its file: all removed, none committed
    monkeypatch.delenv("MEDALLION_TEST_FAIL_AT")
    for p in (local, remote):
        run(clock, p, "bronze_events", *(("--engine", "ray") if p == remote else ()), at=T0 + timedelta(hours=2))
    assert_same_as(local, remote)
    assert commit_info(remote, "bronze_events")[0] == 1
    assert unit_files(remote) == committed_files(remote)


@needs_ray
def test_a_worker_killed_after_writing_its_file_fails_without_retries_and_is_retried_with_them(
        project, tmp_path, clock, local_ray, monkeypatch):
    stream = EventStream(seed=14)
    land(project, stream, 2)
    local, remote = twins(project, tmp_path, max_files=1)
    once = tmp_path / "killed-once"
    monkeypatch.setenv("MEDALLION_TEST_CRASH_AT", "bronze_events:unit_file_written")  # SIGKILL of the worker
    monkeypatch.setenv("MEDALLION_TEST_ONCE_FILE", str(once))
    # No retries: the run fails (exit 1, one line), nothing is committed, no file is left.
    set_engine(remote, max_retries=0)
    clock["at"] = T0
    r = medallion("run", "bronze_events", "-C", remote, "--engine", "ray", "-q")
    assert r.exit_code == 1 and once.exists(), r
    error, hint = own_lines(r.stderr)
    # the unit whose attempt first wrote its file: either of the two running at once
    assert error in {f"error: unit {i} of bronze_events failed in Ray: WorkerCrashedError" for i in range(5)}, r
    assert hint == "hint: the task ran 1 time(s); nothing was committed", r
    assert not DeltaTable.is_deltatable(str(remote / "lake" / "bronze_events")) and unit_files(remote) == set()
    # With retries, Ray runs the killed task again: one commit, the local engine's table; the
    # dead attempt's file is removed, never committed.
    once.unlink()
    set_engine(remote, max_retries=1)
    run(clock, local, "bronze_events", at=T0 + timedelta(hours=1))
    doc = run(clock, remote, "bronze_events", "--engine", "ray", at=T0 + timedelta(hours=1))
    assert once.exists() and layer(doc, "bronze_events")["metrics"]["units"] == 5
    assert_same_as(local, remote)
    assert commit_info(remote, "bronze_events")[0] == 0
    assert unit_files(remote) == committed_files(remote)


# A driver in its own process, with the run clock frozen (as the `clock` fixture does), so
# that its tables can be compared bit for bit with an in-process run.
DRIVER = """
import sys
from datetime import datetime

from medallion_cli import runner
from medallion_cli.cli.app import main

at = datetime.fromisoformat(sys.argv[1])


class Frozen(datetime):
    @classmethod
    def now(cls, tz=None):
        return at


runner.datetime = Frozen
runner.new_run_id = lambda _at: f"{at:%Y%m%dT%H%M%SZ}-000000"
main(sys.argv[2:])
"""


def killed_driver(project: Path, at, point: str) -> None:
    """``medallion run bronze_events --engine ray`` in a subprocess connected to the tests'
    Ray, SIGKILLed at ``point``."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "MEDALLION_TEST_CRASH_AT": point}
    proc = subprocess.run([sys.executable, "-c", DRIVER, at.isoformat(), "run", "bronze_events", "-C", str(project),
                           "--engine", "ray", "-q"], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == -9, proc.stderr


def watermarks(project: Path) -> list[dict]:
    r = medallion("watermark", "show", "bronze_events", "-C", project, "--json")
    assert r.exit_code == 0, r
    return [{k: v for k, v in w.items() if k != "updated_at"} for w in json.loads(r.stdout)["watermarks"]]


@needs_ray
def test_a_driver_killed_after_the_commit_reruns_to_the_uninterrupted_tables(project, tmp_path, clock, local_ray):
    stream = EventStream(seed=15)
    land(project, stream, 2)
    local, remote = twins(project, tmp_path, max_files=2)
    for p in (local, remote):
        run(clock, p, "bronze_events", *(("--engine", "ray") if p == remote else ()), at=T0)
    land(local, stream, 3)
    copy_landing(local, remote)
    at = T0 + timedelta(hours=1)
    run(clock, local, "bronze_events", at=at)
    killed_driver(remote, at, "bronze_events:committed")  # committed, the state file not updated
    assert commit_info(remote, "bronze_events")[0] == 1
    # The re-run finds the batch in the Delta log (app transaction, file list): nothing to add.
    doc = run(clock, remote, "bronze_events", "--engine", "ray", at=at + timedelta(minutes=5))
    assert layer(doc, "bronze_events")["status"] == "unchanged", layer(doc, "bronze_events")
    assert_same_as(local, remote)
    assert commit_info(remote, "bronze_events")[0] == 1
    assert watermarks(local) == watermarks(remote)
    # The next batch goes on as in the uninterrupted project.
    land(local, stream, 1)
    copy_landing(local, remote)
    for p in (local, remote):
        run(clock, p, "bronze_events", *(("--engine", "ray") if p == remote else ()), at=T0 + timedelta(hours=2))
    assert_same_as(local, remote)
    assert watermarks(local) == watermarks(remote)


@needs_ray
def test_files_of_a_driver_killed_before_the_commit_are_in_no_version_and_vacuum_full_removes_them(
        project, tmp_path, clock, local_ray):
    stream = EventStream(seed=16)
    land(project, stream, 2)
    local, remote = twins(project, tmp_path, max_files=1)
    for p in (local, remote):
        run(clock, p, "bronze_events", *(("--engine", "ray") if p == remote else ()), at=T0)
    land(local, stream, 2)
    copy_landing(local, remote)
    killed_driver(remote, T0 + timedelta(hours=1), "bronze_events:units_written")  # files written, no commit
    orphans = unit_files(remote) - committed_files(remote)
    assert len(orphans) == 2, orphans  # one per unit of the killed run (two files), in no version
    assert commit_info(remote, "bronze_events")[0] == 0
    for p in (local, remote):
        run(clock, p, "bronze_events", *(("--engine", "ray") if p == remote else ()), at=T0 + timedelta(hours=2))
    assert_same_as(local, remote)
    assert unit_files(remote) - committed_files(remote) == orphans  # another run's files: left to vacuum
    clock["at"] = T0 + timedelta(hours=3)  # vacuum records a run of its own
    r = medallion("vacuum", "bronze_events", "-C", remote, "--full", "--retention-hours", "0",
                  "--allow-short-retention", "--yes")
    assert r.exit_code == 0, r
    assert unit_files(remote) == committed_files(remote) and not orphans & unit_files(remote)
    assert_frame_equal(table(local, "bronze_events"), table(remote, "bronze_events"))  # (vacuum adds 2 versions)


@needs_ray
def test_a_driver_without_the_clusters_token_is_refused_in_one_line(project, local_ray):
    import os
    import subprocess
    import sys

    partition(project, max_files=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
    env.update(RAY_ADDRESS=ray.get_runtime_context().gcs_address, RAY_AUTH_MODE="token")
    proc = subprocess.run([sys.executable, "-m", "medallion_cli", "run", "bronze_events", "-C", str(project),
                           "--engine", "ray", "-q"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    error, hint = own_lines(proc.stderr)
    assert error.startswith(f"error: cannot connect to Ray at {env['RAY_ADDRESS']}: Token authentication"), proc.stderr
    assert "RAY_AUTH_TOKEN" in hint, proc.stderr
    assert not (project / "lake" / "bronze_events").exists()


@needs_ray
def test_a_hung_task_is_cancelled_after_task_timeout_s_and_the_run_fails_cleanly(project, tmp_path, clock, local_ray,
                                                                                  monkeypatch):
    import time

    stream = EventStream(seed=17)
    land(project, stream, 1)
    local, remote = twins(project, tmp_path, max_files=1)
    set_engine(remote, task_timeout_s=-1)
    r = medallion("run", "bronze_events", "-C", remote, "-q")
    assert r.exit_code == 2 and "medallion.engine.task_timeout_s must be a number" in r.stderr, r
    set_engine(remote, task_timeout_s=4)
    # One unit's first attempt hangs for two minutes (the others finish in about a second).
    monkeypatch.setenv("MEDALLION_TEST_PAUSE_AT", "bronze_events:unit_started=120")
    monkeypatch.setenv("MEDALLION_TEST_ONCE_FILE", str(tmp_path / "hung-once"))
    clock["at"] = T0
    t0 = time.monotonic()
    r = medallion("run", "bronze_events", "-C", remote, "--engine", "ray", "-q")
    elapsed = time.monotonic() - t0
    assert r.exit_code == 1 and (tmp_path / "hung-once").exists(), r
    error, hint = own_lines(r.stderr)
    assert "ran longer than medallion.engine.task_timeout_s (4 s): its task was cancelled and nothing was committed" \
        in error, r
    assert "task_timeout_s" in hint, r
    assert elapsed < 90, elapsed  # cancelled, not waited for (a wide bound: the machine may be loaded)
    assert not DeltaTable.is_deltatable(str(remote / "lake" / "bronze_events")) and unit_files(remote) == set()
    # Nothing hangs any more: the next run gives the local engine's table.
    monkeypatch.delenv("MEDALLION_TEST_PAUSE_AT")
    run(clock, local, "bronze_events", at=T0 + timedelta(hours=1))
    run(clock, remote, "bronze_events", "--engine", "ray", at=T0 + timedelta(hours=1))
    assert_same_as(local, remote)
    assert unit_files(remote) == committed_files(remote)


@needs_ray
def test_an_unreachable_cluster_fails_at_once_in_one_line(project):
    import os
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    partition(project, max_files=1)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "medallion_cli", "run", "bronze_events", "-C", str(project),
                           "--engine", "ray", "-q"], env={**os.environ, "RAY_ADDRESS": address},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    error, hint = own_lines(proc.stderr)
    assert error == f"error: cannot connect to Ray at {address}: Connection refused", proc.stderr
    assert "RAY_ADDRESS" in hint and time.monotonic() - t0 < 60  # Ray alone retries for minutes
    assert not (project / "lake" / "bronze_events").exists()


@needs_ray
def test_task_timeout_s_counts_each_attempt_from_its_start_not_its_time_in_the_queue(project, tmp_path, clock,
                                                                                    local_ray, monkeypatch):
    import time

    stream = EventStream(seed=18)
    land(project, stream, 7, n=20)
    local, remote = twins(project, tmp_path, max_files=1)  # 10 units on the module's 2 CPUs: 5 rounds
    set_engine(remote, task_timeout_s=15)
    monkeypatch.setenv("MEDALLION_TEST_PAUSE_AT", "bronze_events:unit_started=3.5")  # every unit, every attempt
    run(clock, local, "bronze_events", at=T0)
    t0 = time.monotonic()
    doc = run(clock, remote, "bronze_events", "--engine", "ray", at=T0)
    elapsed = time.monotonic() - t0
    assert elapsed > 15, elapsed  # the last units waited longer than the timeout before they started
    assert layer(doc, "bronze_events")["metrics"]["units"] == 10
    assert_same_as(local, remote)


@needs_ray
def test_ray_units_of_row_groups_give_the_one_unit_table(project, tmp_path, clock, local_ray, monkeypatch):
    from test_units import big_parquet, budget

    from medallion_cli import units

    stream = EventStream(seed=13)
    land(project, stream, 1, n=40)
    groups = big_parquet(project, stream, 200, 60)
    one = tmp_path / "one"
    shutil.copytree(project, one)
    run(clock, one, "bronze_events", at=T0)  # the default budget: one unit
    monkeypatch.setattr(units, "WORKING_SET", 1e6)  # the driver plans: each row group a unit
    budget(project, 64)
    doc = run(clock, project, "bronze_events", "--engine", "ray", at=T0)
    assert groups > 1 and layer(doc, "bronze_events")["metrics"]["units"] == 4 + groups  # 4 small files whole
    assert_frame_equal(pl.read_delta(str(project / "lake" / "bronze_events")),
                       pl.read_delta(str(one / "lake" / "bronze_events")))
    assert commit_info(one, "bronze_events") == commit_info(project, "bronze_events")
