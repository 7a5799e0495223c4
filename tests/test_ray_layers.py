"""``--engine ray`` for every split table: bronze's file units, silver's key buckets and gold's
partition ranges run as Ray tasks on a real local Ray (each task reads its slice of the source
Delta table itself); the driver gathers their files, quality counts and rejected rows and
commits once. Same lake as the local engine, one Delta version per run and table; a failed
or killed task commits nothing twice."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import yaml
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from batches import CustomerStream, EventStream
from conftest import medallion
from test_ray import local_ray, needs_ray, own_lines  # noqa: F401 (local_ray: fixture)
from test_silver_units import QUARANTINES, SILVER, copy_landing, land, quarantine
from test_units import T0, TABLES, clock, commit_info, layer, run, table  # noqa: F401 (clock: fixture)

GOLD = ("gold_daily_sales", "gold_sales_by_segment")
BRONZE = ("bronze_events", "bronze_customers")


def configure(project: Path, pipeline: str, **medallion_keys) -> None:
    path = project / "conf" / "pipelines" / f"{pipeline}.yml"
    data = yaml.safe_load(path.read_text())
    data["medallion"].update(medallion_keys)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def split_everything(project: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Bronze in file units, silver in key buckets, gold in date ranges; a copy of the project
    (``remote``) runs with ``--engine ray``, the original with the local engine."""
    for name in BRONZE:
        configure(project, name, partition={"by": "files", "max_files": 1})
    for name in SILVER:
        configure(project, name, partition={"by": "key", "buckets": 3})
    for name in GOLD:
        configure(project, name, partition={"by": "column", "column": "event_date", "ranges": 3})
    remote = tmp_path / "ray"
    shutil.copytree(project, remote)
    return project, remote


def assert_same_lakes(local: Path, remote: Path) -> None:
    for name in TABLES:
        assert_frame_equal(table(local, name), table(remote, name))
        assert commit_info(local, name) == commit_info(remote, name), name
    for name in QUARANTINES:
        a, b = quarantine(local, name), quarantine(remote, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert_frame_equal(a, b)


def parquet_files(project: Path, name: str) -> set[str]:
    return {p.name for p in (project / "lake" / name).glob("*.parquet")}


def committed(project: Path, name: str) -> set[str]:
    return {Path(u).name for u in DeltaTable(str(project / "lake" / name)).file_uris()}


def ray_run(clock, project: Path, *args: str, at) -> dict:
    return run(clock, project, *args, "--engine", "ray", at=at)


@needs_ray
def test_ray_runs_silver_and_gold_units_to_the_local_engine_lake(project, tmp_path, clock, local_ray):
    events, people = EventStream(seed=31), CustomerStream(seed=31)
    land(project, events, people, 2)  # duplicates, ties on updated_at, invalid rows
    local, remote = split_everything(project, tmp_path)
    versions = {name: -1 for name in TABLES}
    for i in range(2):  # the first run creates every table from unit files; the second merges / replaces
        if i:
            land(local, events, people, 2)  # two files: two bronze units
            copy_landing(local, remote)
        at = T0 + timedelta(hours=i)
        doc_local = run(clock, local, "all", at=at)
        doc = ray_run(clock, remote, "all", at=at)
        for name in TABLES:
            lay, one = layer(doc, name), layer(doc_local, name)
            assert lay["status"] == one["status"] == "written", lay
            assert (lay["rows_in"], lay["rows_out"]) == (one["rows_in"], one["rows_out"]), name
            assert lay["metrics"].get("units") == one["metrics"].get("units") and one["metrics"].get("units", 0) > 1, (i, name, lay["metrics"], one["source_files"], one["kind"])
            assert lay["metrics"]["ray_nodes"] == 1 and "ray_nodes" not in one["metrics"], name
            assert commit_info(remote, name)[0] == versions[name] + 1, name  # one version per run
            versions[name] += 1
        for name in SILVER:  # each bucket's gate, gathered by the driver
            assert layer(doc, name)["quality"] is not None
            assert ({k: v for k, v in layer(doc, name)["quality"].items() if k != "checks"}
                    == {k: v for k, v in layer(doc_local, name)["quality"].items() if k != "checks"}), name
        assert layer(doc, "silver_events")["operation"] == ("create" if i == 0 else "merge")
        assert layer(doc, "silver_events")["quality"]["rows_quarantined"] > 0  # the generated invalid rows
        assert_same_lakes(local, remote)
        assert not list((remote / ".medallion").rglob("unit-*.parquet"))  # staging removed
        for name in TABLES if i == 0 else BRONZE:  # no file of a task left outside the commit
            assert parquet_files(remote, name) == committed(remote, name), name


def silver_twins(project: Path, tmp_path: Path, clock, seed: int) -> tuple[Path, Path]:
    """Both projects after one run of everything and a second bronze batch (silver's next run
    merges into an existing table through its staging folder)."""
    events, people = EventStream(seed=seed), CustomerStream(seed=seed)
    land(project, events, people, 2)
    for name in SILVER:
        configure(project, name, partition={"by": "key", "buckets": 3})
    local, remote = project, tmp_path / "ray"
    shutil.copytree(local, remote)
    run(clock, local, "all", at=T0)
    ray_run(clock, remote, "all", at=T0)
    land(local, events, people, 2)
    copy_landing(local, remote)
    for p in (local, remote):
        run(clock, p, *BRONZE, at=T0 + timedelta(minutes=10))
    return local, remote


@needs_ray
def test_a_failing_silver_task_commits_nothing_and_leaves_silver_and_its_staging_as_they_were(
        project, tmp_path, clock, local_ray, monkeypatch):
    local, remote = silver_twins(project, tmp_path, clock, seed=32)
    staging = remote / ".medallion" / "staging"
    before = {name: (table(remote, name), commit_info(remote, name), parquet_files(remote, name)) for name in SILVER}
    quarantined = quarantine(remote, "silver_events__quarantine")
    staged_before = sorted(p.relative_to(remote) for p in staging.rglob("*")) if staging.exists() else []
    # Every bucket's task fails once its staged file is written (the hook travels with the task).
    monkeypatch.setenv("MEDALLION_TEST_FAIL_AT", "silver_events:unit_file_written")
    clock["at"] = T0 + timedelta(minutes=20)
    r = medallion("run", "silver_events", "-C", remote, "--engine", "ray", "-q")
    assert r.exit_code == 1, r
    assert own_lines(r.stderr)[0].endswith("injected failure at silver_events:unit_file_written"), r
    for name in SILVER:
        data, info, files = before[name]
        assert commit_info(remote, name) == info, name
        assert_frame_equal(table(remote, name), data)
        assert parquet_files(remote, name) == files, name
    assert_frame_equal(quarantine(remote, "silver_events__quarantine"), quarantined)
    after = sorted(p.relative_to(remote) for p in staging.rglob("*")) if staging.exists() else []
    assert after == staged_before  # the tasks' staged files were removed with the run's folder
    monkeypatch.delenv("MEDALLION_TEST_FAIL_AT")
    # The re-run gives the lake of a run that never failed.
    at = T0 + timedelta(hours=1)
    doc_local = run(clock, local, "all", at=at)
    doc = ray_run(clock, remote, "all", at=at)
    assert layer(doc, "silver_events")["operation"] == "merge" == layer(doc_local, "silver_events")["operation"]
    assert layer(doc, "silver_events")["metrics"]["units"] == 3
    assert_same_lakes(local, remote)
    assert commit_info(remote, "silver_events")[0] == 1


@needs_ray
def test_a_worker_killed_in_a_key_unit_is_retried_and_the_run_commits_once(project, tmp_path, clock, local_ray,
                                                                            monkeypatch):
    events, people = EventStream(seed=33), CustomerStream(seed=33)
    land(project, events, people, 2)
    for name in SILVER:
        configure(project, name, partition={"by": "key", "buckets": 3})
    local, remote = project, tmp_path / "ray"
    shutil.copytree(local, remote)
    for p in (local, remote):
        run(clock, p, *BRONZE, at=T0)
    once = tmp_path / "killed-once"
    # The first silver_events task to write its unit file is SIGKILLed (its worker dies): Ray
    # runs it again; the dead attempt's file is removed, never committed.
    monkeypatch.setenv("MEDALLION_TEST_CRASH_AT", "silver_events:unit_file_written")
    monkeypatch.setenv("MEDALLION_TEST_ONCE_FILE", str(once))
    doc = ray_run(clock, remote, *SILVER, at=T0 + timedelta(minutes=5))
    assert once.exists()  # the kill happened
    monkeypatch.delenv("MEDALLION_TEST_CRASH_AT")
    doc_local = run(clock, local, *SILVER, at=T0 + timedelta(minutes=5))
    lay = layer(doc, "silver_events")
    assert lay["metrics"]["units"] == 3 and lay["operation"] == "create", lay
    assert lay["attempts"] == layer(doc_local, "silver_events")["attempts"] == 3  # a killed attempt returned nothing
    for name in SILVER:
        assert_frame_equal(table(local, name), table(remote, name))
        assert commit_info(local, name) == commit_info(remote, name), name
        assert commit_info(remote, name)[0] == 0  # one version
        assert parquet_files(remote, name) == committed(remote, name), name
    for name in QUARANTINES:
        assert_frame_equal(quarantine(local, name), quarantine(remote, name))


def test_key_units_on_ray_with_an_s3_lake_stage_in_the_lake_and_leave_nothing(s3, tmp_path):
    """With the Ray engine and an ``s3://`` lake, a key unit stages its rows in the lake (the
    driver may be another machine): written, read back for the MERGE, removed; a killed run's
    folder is removed by the next run."""
    import polars as pl
    import s3fs

    from medallion_cli import keyunits
    from medallion_cli.project import load_project

    r = medallion("init", "shop", "--directory", tmp_path, "--storage", "s3", "--bucket", "lake-bucket", "-q")
    assert r.exit_code == 0, r
    project = load_project(tmp_path / "shop")
    root = keyunits.remote_staging_root(project, "silver_events")
    assert root == "s3://lake-bucket/shop/lake/_medallion_staging/silver_events"
    fs = s3fs.S3FileSystem(key=s3.env()["AWS_ACCESS_KEY_ID"], secret=s3.env()["AWS_SECRET_ACCESS_KEY"],
                           endpoint_url=s3.env()["AWS_ENDPOINT_URL"])
    stale = keyunits.RemoteStaging(root, "killed-run", project.storage)
    assert keyunits.stage_file(pl.DataFrame({"k": [9]}), stale.dir, 0, project.storage) is not None
    staging = keyunits.RemoteStaging(root, "this-run", project.storage)
    assert staging.clean_stale() == ["killed-run"]
    frames = [pl.DataFrame({"k": [1, 2], "v": ["a", "b"]}), pl.DataFrame({"k": [3], "v": ["c"]})]
    for b, df in enumerate(frames):
        staging.files.append(keyunits.stage_file(df, staging.dir, b, project.storage))
    assert keyunits.stage_file(frames[0].head(0), staging.dir, 2, project.storage) is None  # no rows, no file
    fs.invalidate_cache()
    assert sorted(fs.find("lake-bucket/shop/lake/_medallion_staging")) == sorted(f[len("s3://"):] for f in staging.files)
    for _ in range(2):  # a MERGE attempt retried reads a fresh stream
        assert_frame_equal(pl.from_arrow(staging.reader().read_all()).sort("k"), pl.concat(frames))
    staging.remove()
    fs.invalidate_cache()
    assert fs.find("lake-bucket/shop/lake/_medallion_staging") == []


@needs_ray
def test_a_pipeline_that_changes_its_keys_runs_as_one_unit_on_ray_too(project, tmp_path, clock, local_ray):
    """A worker's refusal to split (a row left its key bucket) reaches the driver: the batch
    runs as one unit, the tasks' unit files are removed, the lake is the local engine's."""
    events, people = EventStream(seed=35), CustomerStream(seed=35)
    land(project, events, people, 2)
    code = project / "pipelines" / "silver_events.py"
    code.write_text(code.read_text().replace('pl.col("event_id").str.strip_chars(),',
                                             '(pl.lit("k-") + pl.col("event_id").str.slice(0, 3)).alias("event_id"),'))
    configure(project, "silver_events", partition={"by": "key", "buckets": 4})
    local, remote = project, tmp_path / "ray"
    shutil.copytree(local, remote)
    run(clock, local, "all", at=T0)
    doc = ray_run(clock, remote, "all", at=T0)
    silver = layer(doc, "silver_events")
    assert "units" not in silver["metrics"] and "ray_nodes" not in silver["metrics"], silver
    assert any("ran as one unit: the pipeline changes the merge key" in w for w in silver["warnings"]), silver
    assert_same_lakes(local, remote)
    assert parquet_files(remote, "silver_events") == committed(remote, "silver_events")


@needs_ray
def test_a_failed_quality_gate_in_a_key_unit_task_is_exit_3_in_one_line_and_commits_nothing(
        project, tmp_path, clock, local_ray):
    local, remote = silver_twins(project, tmp_path, clock, seed=36)
    before, info = table(remote, "silver_events"), commit_info(remote, "silver_events")
    clock["at"] = T0 + timedelta(minutes=20)
    rs = [medallion("run", "silver_events", "-C", p, "--quality-policy", "fail", "-q", *extra)
          for p, extra in ((local, ()), (remote, ("--engine", "ray")))]
    assert rs[0].exit_code == rs[1].exit_code == 3, rs
    error = own_lines(rs[1].stderr)[0]
    assert "(key bucket" in error and error == own_lines(rs[0].stderr)[0], rs  # the local engine's message
    assert commit_info(remote, "silver_events") == info
    assert_frame_equal(table(remote, "silver_events"), before)
    assert not list((remote / ".medallion").rglob("unit-*.parquet"))
