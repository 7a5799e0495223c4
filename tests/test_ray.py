"""``--engine ray``: bronze work units run as Ray tasks on a real local Ray; the driver keeps
the lock, the plan and the one commit. Same tables as the local engine, one Delta version per
run, and a failed task commits nothing."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

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


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module; workers inherit this process's PYTHONPATH (the shared path)."""
    # address="local": a new instance even when another Ray runs on this machine (another test
    # worker, a cluster test), which ray.init() without an address would join.
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
