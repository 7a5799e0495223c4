"""Work units (``medallion.partition: {by: files}``): a bronze batch split into units gives
the table a one-unit run gives, in one Delta commit carrying the same watermark; a run
killed between the unit writes and the commit leaves the table as it was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
import yaml
from deltalake import DeltaTable, write_deltalake
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from batches import EventStream
from conftest import medallion
from medallion_cli import runner, units
from medallion_cli.sources import LandingFile
from medallion_cli.units import file_stats, plan_units

TABLES = {
    "bronze_events": ["_source_file", "event_id", "updated_at", "amount"],
    "silver_events": ["event_id"],
    "gold_daily_sales": ["event_date", "region"],
    "bronze_customers": ["_source_file", "customer_id", "updated_at"],
    "silver_customers": ["customer_id"],
    "gold_sales_by_segment": ["event_date", "segment"],
}
T0 = datetime(2026, 11, 1, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock(monkeypatch):
    """A settable run clock and run id, so two projects run at the same times get
    identical tables (``_ingested_at`` and ``_run_id`` included)."""
    now = {"at": T0}

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return now["at"]

    monkeypatch.setattr(runner, "datetime", Frozen)
    monkeypatch.setattr(runner, "new_run_id", lambda at: f"{now['at']:%Y%m%dT%H%M%SZ}-000000")
    return now


def partition(project: Path, **spec) -> None:
    path = project / "conf" / "pipelines" / "bronze_events.yml"
    data = yaml.safe_load(path.read_text())
    data["medallion"]["partition"] = {"by": "files", **spec}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def budget(project: Path, mb: int) -> None:
    path = project / "conf" / "project.yml"
    data = yaml.safe_load(path.read_text())
    data["medallion"]["memory_budget_mb"] = mb
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def land(project: Path, stream: EventStream, batches: int, n: int = 60) -> None:
    for _ in range(batches):
        stream.write(stream.batch(n), project / "data" / "landing" / "events")


def twins(project: Path, tmp_path: Path, **spec) -> tuple[Path, Path]:
    """The project (one unit, as today) and a copy whose bronze_events splits into units."""
    split = tmp_path / "split"
    shutil.copytree(project, split)
    partition(split, **spec)
    return project, split


def run(clock, project: Path, *args: str, at: datetime) -> dict:
    clock["at"] = at
    r = medallion("run", *args, "-C", project, "--json", "-q")
    assert r.exit_code == 0, r
    return json.loads(r.stdout)


def table(project: Path, name: str) -> pl.DataFrame:
    df = pl.read_delta(str(project / "lake" / name))
    return df.sort([*TABLES[name], *(c for c in df.columns if c not in TABLES[name])], nulls_last=True)


def layer(doc: dict, name: str) -> dict:
    return next(l for l in doc["layers"] if l["table"] == name)


def commit_info(project: Path, name: str) -> tuple[int, int | None, dict]:
    dt = DeltaTable(str(project / "lake" / name))
    last = dt.history(1)[0]
    meta = {k: v for k, v in last.items() if k.startswith("medallion.") and k != "medallion.write_id"}
    return dt.version(), dt.transaction_version(f"medallion/{name}"), meta


def test_units_give_the_one_unit_tables_in_one_commit(project, tmp_path, clock):
    stream = EventStream(seed=3)
    land(project, stream, 4)
    one, split = twins(project, tmp_path, max_files=2)  # 7 files: 4 units
    for p in (one, split):
        doc = run(clock, p, "all", at=T0)
    assert layer(doc, "bronze_events")["metrics"]["units"] == 4
    assert layer(doc, "bronze_events")["rows_out"] == table(one, "bronze_events").height
    for name in TABLES:
        assert_frame_equal(table(one, name), table(split, name))
    assert commit_info(one, "bronze_events") == commit_info(split, "bronze_events")
    assert commit_info(split, "bronze_events")[0] == 0  # one version for the whole batch

    # A second batch on the existing table: one more version, same watermark and metadata.
    land(one, stream, 3, n=50)
    for f in (one / "data" / "landing" / "events").iterdir():
        shutil.copy2(f, split / "data" / "landing" / "events" / f.name)
    for p in (one, split):
        doc = run(clock, p, "all", at=T0 + timedelta(hours=1))
    assert layer(doc, "bronze_events")["metrics"]["units"] == 2
    for name in TABLES:
        assert_frame_equal(table(one, name), table(split, name))
    assert commit_info(one, "bronze_events") == commit_info(split, "bronze_events")
    assert commit_info(split, "bronze_events")[0] == 1
    # The state file holds the same watermark.
    shown = []
    for p in (one, split):
        r = medallion("watermark", "show", "bronze_events", "-C", p, "--json")
        assert r.exit_code == 0, r
        shown.append([{k: v for k, v in w.items() if k != "updated_at"} for w in json.loads(r.stdout)["watermarks"]])
    assert shown[0] == shown[1] and shown[0][0]["files_ingested"] == 10


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(files=st.integers(2, 6), max_files=st.integers(1, 5), seed=st.integers(0, 1000))
def test_any_unit_count_gives_the_same_bronze(template_project, tmp_path_factory, files, max_files, seed):
    # hypothesis draws several examples per test: fixtures are made by hand
    base = tmp_path_factory.mktemp("units")
    one = base / "one"
    shutil.copytree(template_project, one)
    land(one, EventStream(seed=seed), files, n=30)
    split = base / "split"
    shutil.copytree(one, split)
    partition(split, max_files=max_files)
    now = {"at": T0}
    with pytest.MonkeyPatch.context() as mp:
        class Frozen(datetime):
            @classmethod
            def now(cls, tz=None):
                return now["at"]

        mp.setattr(runner, "datetime", Frozen)
        mp.setattr(runner, "new_run_id", lambda at: "20261101T080000Z-000000")
        for p in (one, split):
            r = medallion("run", "bronze_events", "-C", p, "-q")
            assert r.exit_code == 0, r
    assert_frame_equal(table(one, "bronze_events"), table(split, "bronze_events"))
    assert commit_info(one, "bronze_events") == commit_info(split, "bronze_events")


def test_the_memory_budget_sizes_units_by_landing_file_size(project, tmp_path, clock, monkeypatch):
    files = [LandingFile(path=f"/x/f{i}.parquet", name=f"f{i}.parquet", format="parquet", size=40 * 1024 * 1024,
                         mtime_ns=0) for i in range(6)]
    # 40 MB of Parquet is ~200 MB in memory, ~600 MB of working set: one file per 1 GB unit
    assert [len(u) for u in plan_units(files, budget_mb=1024)] == [1] * 6
    assert [len(u) for u in plan_units(files, budget_mb=2048)] == [3, 3]
    assert [len(u) for u in plan_units(files, budget_mb=100_000, max_files=4)] == [4, 2]
    split = plan_units(list(reversed(files)), budget_mb=2048, max_files=5)
    assert [f.name for u in split for f in u] == [f.name for f in reversed(files)]  # each file once, in order
    # The project's budget: with a working set this large, each template file is a unit.
    monkeypatch.setattr(units, "WORKING_SET", 1e6)
    _one, split = twins(project, tmp_path)
    budget(split, 64)
    assert layer(run(clock, split, "bronze_events", at=T0), "bronze_events")["metrics"]["units"] == 3
    monkeypatch.setattr(units, "WORKING_SET", 3.0)
    split2 = tmp_path / "split2"
    shutil.copytree(project, split2)
    partition(split2)  # the default budget (1 GiB) holds the three small files: one unit, as without units
    assert "units" not in layer(run(clock, split2, "bronze_events", at=T0), "bronze_events")["metrics"]


def test_a_run_killed_between_unit_writes_and_the_commit_changes_nothing(project, tmp_path, clock):
    stream = EventStream(seed=4)
    land(project, stream, 3)
    one, split = twins(project, tmp_path, max_files=1)
    for p in (one, split):
        run(clock, p, "bronze_events", at=T0)
    before = table(split, "bronze_events")
    version = DeltaTable(str(split / "lake" / "bronze_events")).version()
    files_before = set((split / "lake" / "bronze_events").glob("*.parquet"))
    land(one, stream, 3)
    for f in (one / "data" / "landing" / "events").iterdir():
        shutil.copy2(f, split / "data" / "landing" / "events" / f.name)

    env = dict(os.environ, MEDALLION_TEST_CRASH_AT="bronze_events:units_written")
    proc = subprocess.run([sys.executable, "-m", "medallion_cli", "run", "bronze_events", "-C", str(split), "-q"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    orphans = set((split / "lake" / "bronze_events").glob("*.parquet")) - files_before
    assert len(orphans) == 3  # written, never committed
    assert DeltaTable(str(split / "lake" / "bronze_events")).version() == version
    assert_frame_equal(table(split, "bronze_events"), before)  # readers never see them

    # An injected failure at the same point removes what it wrote.
    os.environ["MEDALLION_TEST_FAIL_AT"] = "bronze_events:units_written"
    clock["at"] = T0 + timedelta(minutes=30)
    try:
        r = medallion("run", "bronze_events", "-C", split, "-q")
    finally:
        del os.environ["MEDALLION_TEST_FAIL_AT"]
    assert r.exit_code == 1 and "injected failure" in r.stderr, r
    assert set((split / "lake" / "bronze_events").glob("*.parquet")) - files_before == orphans

    for p in (one, split):
        run(clock, p, "all", at=T0 + timedelta(hours=1))
    for name in TABLES:
        assert_frame_equal(table(one, name), table(split, name))
    assert commit_info(one, "bronze_events") == commit_info(split, "bronze_events")

    clock["at"] = T0 + timedelta(hours=2)
    r = medallion("vacuum", "bronze_events", "-C", split, "--full", "--retention-hours", "0",
                  "--allow-short-retention", "--yes", "-q")
    assert r.exit_code == 0, r
    assert not any(o.exists() for o in orphans)
    assert_frame_equal(table(one, "bronze_events"), table(split, "bronze_events"))


def test_units_are_opt_in_and_only_for_plain_appends(project, tmp_path, clock):
    stream = EventStream(seed=6)
    land(project, stream, 3)
    one, split = twins(project, tmp_path, max_files=1)
    for p in (one, split):
        doc = run(clock, p, "all", at=T0)
    assert "units" not in layer(json.loads(json.dumps(doc)), "silver_events")["metrics"]
    # A changed file (rewritten in place) replaces its earlier rows in one write: one unit.
    for p in (one, split):
        victim = sorted((p / "data" / "landing" / "events").glob("*.parquet"))[-1]
        pl.read_parquet(victim).head(5).write_parquet(victim)
        os.utime(victim, (1_800_000_000, 1_800_000_000))
        doc = run(clock, p, "bronze_events", at=T0 + timedelta(minutes=30))
    assert layer(doc, "bronze_events")["mode"] == "replace" and "units" not in layer(doc, "bronze_events")["metrics"]
    assert_frame_equal(table(one, "bronze_events"), table(split, "bronze_events"))
    # A declaration on a table that is not a landing append is refused.
    path = split / "conf" / "pipelines" / "silver_events.yml"
    data = yaml.safe_load(path.read_text())
    data["medallion"]["partition"] = {"by": "files"}
    path.write_text(yaml.safe_dump(data))
    r = medallion("run", "all", "-C", split, "-q")
    assert r.exit_code == 2 and "medallion.partition" in r.stderr, r


def test_unit_file_stats_match_what_delta_rs_writes(tmp_path):
    at = datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=timezone.utc)
    df = pl.DataFrame({
        "s": ["a" * 40, "b", None], "i": [1, None, 3], "f": [1.5, float("nan"), None],
        "d": [date(2024, 1, 1), None, date(2024, 2, 1)], "t": [at, None, datetime(2024, 1, 2, tzinfo=timezone.utc)],
        "b": [True, False, None], "l": [[1], [2], None],
    })
    write_deltalake(str(tmp_path / "t"), df)
    log = next((tmp_path / "t" / "_delta_log").glob("*.json")).read_text().splitlines()
    theirs = json.loads(next(json.loads(l)["add"]["stats"] for l in log if '"add"' in l))
    ours = json.loads(file_stats(df))
    assert ours["numRecords"] == theirs["numRecords"] == 3
    assert ours["nullCount"] == theirs["nullCount"]
    # The same bounds, except: a long string has a truncated min and no max, and a
    # timestamp's max is rounded up to the millisecond (delta-rs truncates it).
    for side in ("minValues", "maxValues"):
        for col in ("i", "f", "d", "b"):
            assert ours[side][col] == theirs[side][col], (side, col)
    assert ours["minValues"]["s"] == "a" * 32 and "s" in ours["maxValues"] and ours["maxValues"]["s"] == "b"
    assert ours["minValues"]["t"] == "2024-01-01T00:00:00.123Z" and ours["maxValues"]["t"] == "2024-01-02T00:00:00.000Z"
    assert "l" not in ours["minValues"] and "l" not in ours["nullCount"]


def test_data_skipping_on_unit_files_keeps_every_matching_row(project, tmp_path, clock):
    land(project, EventStream(seed=9), 5)
    _one, split = twins(project, tmp_path, max_files=1)
    run(clock, split, "bronze_events", at=T0)
    uri = str(split / "lake" / "bronze_events")
    full = pl.read_delta(uri)
    for expr in (pl.col("updated_at") >= full["updated_at"].median(), pl.col("event_id") == full["event_id"][7],
                 pl.col("amount") < 10, pl.col("event_date") == full["event_date"][3]):
        assert pl.scan_delta(uri).filter(expr).collect().height == full.filter(expr).height


def test_a_full_refresh_runs_as_units_in_one_overwrite(project, tmp_path, clock):
    stream = EventStream(seed=8)
    land(project, stream, 3)
    one, split = twins(project, tmp_path, max_files=2)  # 6 files: 3 units
    for p in (one, split):
        run(clock, p, "all", at=T0)
    land(one, stream, 2, n=40)
    for f in (one / "data" / "landing" / "events").iterdir():
        shutil.copy2(f, split / "data" / "landing" / "events" / f.name)
    for p in (one, split):
        run(clock, p, "all", at=T0 + timedelta(hours=1))
    # A refresh that fails after writing its units leaves the table, its files and the state as they were.
    before, files_before = table(split, "bronze_events"), set((split / "lake" / "bronze_events").glob("*.parquet"))
    os.environ["MEDALLION_TEST_FAIL_AT"] = "bronze_events:units_written"
    clock["at"] = T0 + timedelta(minutes=90)
    try:
        r = medallion("run", "bronze_events", "--full-refresh", "--yes", "-C", split, "-q")
    finally:
        del os.environ["MEDALLION_TEST_FAIL_AT"]
    assert r.exit_code == 1 and "injected failure" in r.stderr, r
    assert set((split / "lake" / "bronze_events").glob("*.parquet")) == files_before
    assert_frame_equal(table(split, "bronze_events"), before)
    assert commit_info(split, "bronze_events")[0] == 1
    # The refresh rebuilds every landing file in one overwrite.
    for p in (one, split):
        doc = run(clock, p, "bronze_events", "--full-refresh", "--yes", at=T0 + timedelta(hours=2))
    assert layer(doc, "bronze_events")["metrics"]["units"] == 4
    assert layer(doc, "bronze_events")["rows_out"] == table(one, "bronze_events").height
    assert_frame_equal(table(one, "bronze_events"), table(split, "bronze_events"))
    assert commit_info(one, "bronze_events") == commit_info(split, "bronze_events")
    assert commit_info(split, "bronze_events")[0] == 2  # one overwrite version
    dt = DeltaTable(str(split / "lake" / "bronze_events"))
    assert dt.history(1)[0]["operation"] == "WRITE" and len(dt.file_uris()) == 4  # earlier files removed
    shown = []
    for p in (one, split):
        r = medallion("watermark", "show", "bronze_events", "-C", p, "--json")
        assert r.exit_code == 0, r
        shown.append([{k: v for k, v in w.items() if k != "updated_at"} for w in json.loads(r.stdout)["watermarks"]])
    assert shown[0] == shown[1]
    # Downstream, and verify (whose rebuild of bronze runs as units too), agree.
    for p in (one, split):
        run(clock, p, "all", at=T0 + timedelta(hours=3))
    for name in TABLES:
        assert_frame_equal(table(one, name), table(split, name))
    verdicts = []
    clock["at"] = T0 + timedelta(hours=4)  # verify records a run of its own
    for p in (one, split):
        r = medallion("verify", "-C", p, "--json")
        assert r.exit_code == 0, r
        verdicts.append(json.loads(r.stdout)["tables"])
    assert verdicts[0] == verdicts[1] and all(t["equal"] for t in verdicts[1])


def test_units_of_header_only_files_and_rescued_columns(template_project, tmp_path, clock):
    project = tmp_path / "shop"
    shutil.copytree(template_project, project)
    landing = project / "data" / "landing" / "events"
    for f in landing.iterdir():
        if not f.name.startswith("."):
            f.unlink()
    path = project / "conf" / "pipelines" / "bronze_events.yml"
    data = yaml.safe_load(path.read_text())
    data["medallion"]["source"]["extra_columns"] = "rescue"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    header = "event_id,user_id,event_type,amount,event_date,updated_at,region"
    for name in ("a.csv", "b.csv"):
        (landing / name).write_text(header + "\n")
    one, split = twins(project, tmp_path, max_files=1)
    for p in (one, split):  # nothing but headers: the table is created empty, in one version
        doc = run(clock, p, "bronze_events", at=T0)
    assert layer(doc, "bronze_events")["metrics"]["units"] == 2 and layer(doc, "bronze_events")["rows_out"] == 0
    assert_frame_equal(table(one, "bronze_events"), table(split, "bronze_events"))
    assert commit_info(one, "bronze_events")[1:] == commit_info(split, "bronze_events")[1:]
    for p in (one, split):  # one unit has an extra column, the other not: both get _rescued_data
        (p / "data" / "landing" / "events" / "c.csv").write_text(
            header + ",zzz\ne1,1,click,1.0,2024-01-01,2024-01-01T00:00:00Z,north,extra\n")
        (p / "data" / "landing" / "events" / "d.csv").write_text(
            header + "\ne2,1,click,1.0,2024-01-01,2024-01-01T00:00:00Z,north\n")
        doc = run(clock, p, "bronze_events", at=T0 + timedelta(hours=1))
    assert layer(doc, "bronze_events")["metrics"]["units"] == 2
    bronze = table(split, "bronze_events")
    assert bronze["_rescued_data"].to_list() == ['{"zzz":"extra"}', None]
    assert_frame_equal(table(one, "bronze_events"), bronze)


def test_units_on_an_s3_lake_give_the_one_unit_tables(s3, tmp_path, clock):
    # Two S3 projects in one bucket (different lake roots): one unit, and units of one file.
    r = medallion("init", "shop", "--directory", tmp_path, "--storage", "s3", "--bucket", "lake-bucket", "-q")
    assert r.exit_code == 0, r
    one = tmp_path / "shop"
    stream = EventStream(seed=11)
    land(one, stream, 3)
    split = tmp_path / "split"
    shutil.copytree(one, split)
    partition(split, max_files=1)
    conf = split / "conf" / "project.yml"
    conf.write_text(conf.read_text().replace("s3://lake-bucket/shop/lake", "s3://lake-bucket/split/lake"))
    lakes = {one: "s3://lake-bucket/shop/lake", split: "s3://lake-bucket/split/lake"}
    options = s3.env()

    def s3_table(p: Path, name: str) -> pl.DataFrame:
        df = pl.read_delta(f"{lakes[p]}/{name}", storage_options=options)
        return df.sort([*TABLES[name], *(c for c in df.columns if c not in TABLES[name])], nulls_last=True)

    def s3_commit(p: Path) -> tuple[int, int | None, dict]:
        dt = DeltaTable(f"{lakes[p]}/bronze_events", storage_options=options)
        last = dt.history(1)[0]
        return dt.version(), dt.transaction_version("medallion/bronze_events"), {
            k: v for k, v in last.items() if k.startswith("medallion.") and k != "medallion.write_id"}

    for hour, more in ((0, 0), (1, 2)):
        if more:
            land(one, stream, more, n=40)
            for f in (one / "data" / "landing" / "events").iterdir():
                shutil.copy2(f, split / "data" / "landing" / "events" / f.name)
        for p in (one, split):
            doc = run(clock, p, "all", at=T0 + timedelta(hours=hour))
        assert layer(doc, "bronze_events")["metrics"].get("units") == (6 if hour == 0 else 2), layer(doc, "bronze_events")
        for name in TABLES:
            assert_frame_equal(s3_table(one, name), s3_table(split, name))
        assert s3_commit(one) == s3_commit(split) and s3_commit(split)[0] == hour  # one version per batch
    assert not (split / "lake").exists()
    # Every object under the split table is referenced by the log: no orphan unit files.
    import s3fs

    fs = s3fs.S3FileSystem(key=options["AWS_ACCESS_KEY_ID"], secret=options["AWS_SECRET_ACCESS_KEY"],
                           endpoint_url=options["AWS_ENDPOINT_URL"])

    def unreferenced() -> set[str]:
        stored = {p.rsplit("/", 1)[1] for p in fs.find("lake-bucket/split/lake/bronze_events") if "_delta_log" not in p}
        dt = DeltaTable(f"{lakes[split]}/bronze_events", storage_options=options)
        return stored - {u.rsplit("/", 1)[1] for u in dt.file_uris()}

    assert unreferenced() == set()
    # A failure after the unit files are written and before the commit: the table is
    # unchanged and the run removes its objects; the next run ingests the files once.
    land(one, stream, 2, n=30)
    for f in (one / "data" / "landing" / "events").iterdir():
        shutil.copy2(f, split / "data" / "landing" / "events" / f.name)
    before = s3_table(split, "bronze_events")
    os.environ["MEDALLION_TEST_FAIL_AT"] = "bronze_events:units_written"
    clock["at"] = T0 + timedelta(hours=2)
    try:
        r = medallion("run", "bronze_events", "-C", split, "-q")
    finally:
        del os.environ["MEDALLION_TEST_FAIL_AT"]
    assert r.exit_code == 1 and "injected failure" in r.stderr, r
    assert s3_commit(split)[0] == 1 and unreferenced() == set()
    assert_frame_equal(s3_table(split, "bronze_events"), before)
    for p in (one, split):
        run(clock, p, "all", at=T0 + timedelta(hours=3))
    for name in TABLES:
        assert_frame_equal(s3_table(one, name), s3_table(split, name))
    assert s3_commit(one) == s3_commit(split) and s3_commit(split)[0] == 2


def big_parquet(project: Path, stream: EventStream, n: int, row_group_size: int) -> int:
    """A Parquet landing file written in row groups; its row-group count."""
    import pyarrow.parquet as pq

    from batches import SCHEMA

    path = project / "data" / "landing" / "events" / "big.parquet"
    pl.DataFrame(stream.batch(n), schema=SCHEMA, orient="row").write_parquet(path, row_group_size=row_group_size)
    return pq.ParquetFile(path).metadata.num_row_groups


def test_plan_units_splits_a_big_parquet_file_by_row_groups():
    mb = 1024 * 1024
    small = [LandingFile(path=f"/x/s{i}.parquet", name=f"s{i}.parquet", format="parquet", size=mb, mtime_ns=0)
             for i in range(2)]
    big = LandingFile(path="/x/big.parquet", name="big.parquet", format="parquet", size=400 * mb, mtime_ns=0)
    csv = LandingFile(path="/x/big.csv", name="big.csv", format="csv", size=2000 * mb, mtime_ns=0)
    groups = {"big.parquet": [(100, 40 * mb)] * 9 + [(7, 40 * mb)], "big.csv": [(1, 1)] * 3}
    split = plan_units([small[0], big, csv, small[1]], budget_mb=1024, row_groups=lambda f: groups.get(f.name))
    # 40 MB of Parquet is ~600 MB of working set: one row group per 1 GiB unit; a CSV file stays whole
    assert [[p.name for p in u] for u in split] == [["s0.parquet"]] + [["big.parquet"]] * 10 + [
        ["big.csv"], ["s1.parquet"]]
    parts = [u[0] for u in split[1:11]]
    assert all(isinstance(p, units.FilePart) and p.file == big for p in parts)
    assert [(p.first, p.stop, p.offset, p.rows) for p in parts] == [(i, i + 1, 100 * i, 100 if i < 9 else 7)
                                                                   for i in range(10)]
    # A bigger budget takes several row groups per part, consecutive, every row once.
    parts = [u[0] for u in plan_units([big], budget_mb=4096, row_groups=lambda f: groups[f.name])]
    assert [(p.first, p.stop) for p in parts] == [(0, 6), (6, 10)]
    assert [p.offset for p in parts] == [0, 600] and sum(p.rows for p in parts) == 907
    # Without the footer (unreadable, or one row group) the file is one unit, as before.
    assert plan_units([big], budget_mb=1024, row_groups=lambda f: None) == [[big]]
    assert plan_units([big], budget_mb=1024, row_groups=lambda f: [(907, 400 * mb)]) == [[big]]


@pytest.mark.parametrize("row_group_size", [100_000, 90, 25])
def test_a_big_parquet_file_splits_into_row_group_units(project, tmp_path, clock, monkeypatch, row_group_size):
    stream = EventStream(seed=11)
    land(project, stream, 2, n=40)  # small files (CSV and Parquet) before the big one, and the template's
    groups = big_parquet(project, stream, 240, row_group_size)
    land(project, stream, 1, n=40)
    one, split = twins(project, tmp_path)
    doc_one = run(clock, one, "bronze_events", at=T0)  # the default budget: one unit
    assert "units" not in layer(doc_one, "bronze_events")["metrics"]
    # Every file over the budget: small files are units of their own, the big one a unit per row group.
    monkeypatch.setattr(units, "WORKING_SET", 1e6)
    budget(split, 64)
    doc = run(clock, split, "bronze_events", at=T0)
    files = len([f for f in (split / "data" / "landing" / "events").iterdir() if not f.name.startswith(".")])
    assert layer(doc, "bronze_events")["metrics"]["units"] == files - 1 + groups
    if row_group_size == 25:
        assert groups >= 10
    # The one-unit table, row for row in the same order, in one version; the big file ingested once.
    got, want = (pl.read_delta(str(p / "lake" / "bronze_events")) for p in (split, one))
    assert_frame_equal(got, want)
    assert got.filter(pl.col("_source_file") == "big.parquet")["_ingested_at"].n_unique() == 1
    assert commit_info(one, "bronze_events") == commit_info(split, "bronze_events")
    assert commit_info(split, "bronze_events")[0] == 0
    assert layer(doc, "bronze_events")["rows_in"] == layer(doc_one, "bronze_events")["rows_in"]
    r = medallion("watermark", "show", "bronze_events", "-C", split, "--json")
    assert r.exit_code == 0, r
    assert json.loads(r.stdout)["watermarks"][0]["files_ingested"] == files


def test_row_groups_of_an_s3_landing_file_are_read_from_its_footer(s3, tmp_path):
    from medallion_cli.storage import Storage

    path = tmp_path / "big.parquet"
    pl.DataFrame({"x": range(1000)}).write_parquet(path, row_group_size=300)
    s3.client().put_object(Bucket="lake-bucket", Key="incoming/big.parquet", Body=path.read_bytes())
    local = LandingFile(path=str(path), name="big.parquet", format="parquet", size=path.stat().st_size, mtime_ns=0)
    remote = LandingFile(path="s3://lake-bucket/incoming/big.parquet", name="big.parquet", format="parquet",
                         size=local.size, mtime_ns=0)
    groups = units.parquet_row_groups(remote, Storage.resolve())
    assert groups == units.parquet_row_groups(local) and [rows for rows, _size in groups] == [300, 300, 300, 100]
    gone = LandingFile(path="s3://lake-bucket/incoming/gone.parquet", name="gone.parquet", format="parquet",
                       size=1, mtime_ns=0)
    assert units.parquet_row_groups(gone, Storage.resolve()) is None  # read whole: its read reports it


def test_a_row_group_unit_reads_only_its_row_groups(project):
    """The unit's slice reaches the Parquet reader: with the first row group's pages
    destroyed, the whole file cannot be read, a unit of the later row groups can."""
    import pyarrow.parquet as pq

    from medallion_cli import sources
    from medallion_cli.flow import load_flowerpower
    from medallion_cli.incremental import with_ingestion_times
    from medallion_cli.project import load_project

    stream = EventStream(seed=17)
    big_parquet(project, stream, 200, 50)
    path = project / "data" / "landing" / "events" / "big.parquet"
    clean = pl.read_parquet(path)
    meta = pq.ParquetFile(path).metadata
    first = meta.row_group(0)
    chunks = [first.column(j) for j in range(first.num_columns)]
    begins = [c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset for c in chunks]
    start, end = min(begins), max(b + c.total_compressed_size for b, c in zip(begins, chunks))
    data = bytearray(path.read_bytes())
    data[start:end] = b"\xab" * (end - start)
    path.write_bytes(bytes(data))
    with pytest.raises(Exception):
        pl.read_parquet(path)

    proj = load_project(project)
    bronze = proj.layer("bronze_events")
    file = next(f for f in sources.list_landing(str(path.parent)).files if f.name == "big.parquet")
    part = units.split_row_groups(file, [(meta.row_group(i).num_rows, 1) for i in range(meta.num_row_groups)],
                                  budget=0)[1]
    assert part.first == 1 and part.offset == first.num_rows
    columns = with_ingestion_times(sources.scan_landing(sources.LandingFiles(str(path.parent), (file,)),
                                                        bronze.source, proj.storage).frame, {}, T0).collect_schema()
    df, rows_in, _tries, _warnings = runner.compute_unit(
        proj, load_flowerpower(proj.root), bronze, [part], columns=columns, file_times={"big.parquet": 0},
        started_at=T0, inputs={"run_id": "r", "run_started_at": T0}, executor=None)
    assert rows_in == part.rows == meta.row_group(1).num_rows
    assert df["event_id"].to_list() == clean["event_id"][part.offset:part.offset + part.rows].to_list()
