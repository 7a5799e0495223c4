"""Key-bucket work units (``medallion.partition: {by: key}``): a merge table's batch split
into buckets of its merge keys gives the tables (and quarantine tables) a one-unit run
gives, in one Delta version per run carrying the same watermark; a run stopped between
the unit writes and the commit leaves the table as it was."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml
from deltalake import DeltaTable
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from batches import CustomerStream, EventStream
from conftest import medallion
from medallion_cli import keyunits, runner, units
from test_units import T0, TABLES, clock, commit_info, layer, run, table  # noqa: F401 - clock is a fixture

SILVER = ("silver_events", "silver_customers")
QUARANTINES = tuple(f"{t}__quarantine" for t in SILVER)


def partition(project: Path, pipeline: str = "silver_events", **spec) -> None:
    path = project / "conf" / "pipelines" / f"{pipeline}.yml"
    data = yaml.safe_load(path.read_text())
    data["medallion"]["partition"] = {"by": "key", **spec}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def quarantine(project: Path, name: str) -> pl.DataFrame | None:
    uri = project / "lake" / name
    if not uri.exists():
        return None
    return pl.read_delta(str(uri)).sort("_row_key")


def assert_same_lakes(one: Path, split: Path) -> None:
    for name in TABLES:
        assert_frame_equal(table(one, name), table(split, name))
    for name in QUARANTINES:
        a, b = quarantine(one, name), quarantine(split, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert_frame_equal(a, b)
    for name in SILVER:  # same number of versions, same watermark and run metadata
        assert commit_info(one, name) == commit_info(split, name), name


def ties(stream: EventStream, rows: list[dict]) -> list[dict]:
    """Versions of one event tying on updated_at: in the same file (the later row wins, as
    in the one-unit scan order) and, through ``stream.sent``, with an earlier file."""
    extra = []
    for r in rows[:3]:
        extra.append({**r, "amount": round(r["amount"] + 1.25, 2)})
        extra.append({**r, "amount": round(r["amount"] + 2.5, 2), "region": "east"})
    if stream.sent:
        old = stream.sent[len(stream.sent) // 2]
        extra.append({**old, "amount": 7.75})
    return rows + extra


def land(project: Path, events: EventStream, people: CustomerStream, batches: int, n: int = 40) -> None:
    for _ in range(batches):
        events.write(ties(events, events.batch(n)), project / "data" / "landing" / "events")
        people.write(people.batch(), project / "data" / "landing" / "customers")


def copy_landing(src: Path, dst: Path) -> None:
    for kind in ("events", "customers"):
        for f in (src / "data" / "landing" / kind).iterdir():
            shutil.copy2(f, dst / "data" / "landing" / kind / f.name)


def frozen(mp: pytest.MonkeyPatch) -> dict:
    now = {"at": T0}

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return now["at"]

    mp.setattr(runner, "datetime", Frozen)
    mp.setattr(runner, "new_run_id", lambda at: f"{now['at']:%Y%m%dT%H%M%SZ}-000000")
    return now


# Each example runs two projects several times: generate a few, never shrink (minutes each).
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck),
          phases=(Phase.explicit, Phase.generate))
@given(buckets=st.integers(2, 7), runs=st.lists(st.integers(1, 2), min_size=2, max_size=3), seed=st.integers(0, 999))
def test_any_bucket_count_gives_the_one_unit_lake(template_project, tmp_path_factory, buckets, runs, seed):
    base = tmp_path_factory.mktemp("keyunits")
    one, split = base / "one", base / "split"
    shutil.copytree(template_project, one)
    shutil.copytree(template_project, split)
    for name in ("silver_events", "silver_customers"):
        partition(split, name, buckets=buckets)
    events, people = EventStream(seed=seed), CustomerStream(seed=seed)
    with pytest.MonkeyPatch.context() as mp:
        now = frozen(mp)
        for i, batches in enumerate(runs):
            if i:
                land(one, events, people, batches)
                copy_landing(one, split)
            docs = [run(now, p, "all", at=T0 + timedelta(hours=i)) for p in (one, split)]
            doc = docs[1]
            for name in SILVER:  # the same rows read and written, the same quality report counts
                a, b = (layer(d, name) for d in docs)
                assert (a["rows_in"], a["rows_out"]) == (b["rows_in"], b["rows_out"]), name
                assert ({k: v for k, v in a["quality"].items() if k != "checks"}
                        == {k: v for k, v in b["quality"].items() if k != "checks"}), name
            silver = layer(doc, "silver_events")
            assert silver["metrics"]["units"] == buckets and silver["status"] == "written"
            # the first run creates the table from unit files; later runs MERGE the staged units
            assert silver["operation"] == ("create" if i == 0 else "merge"), silver
            assert not list((split / ".medallion").rglob("unit-*.parquet"))  # staging removed
            assert_same_lakes(one, split)
            assert commit_info(split, "silver_events")[0] == i  # one version per run
        # A full refresh (an overwrite of unit files in one version) gives the same lake too.
        for p in (one, split):
            doc = run(now, p, "silver_events+", "silver_customers+", "--full-refresh", "--yes",
                      at=T0 + timedelta(hours=len(runs)))
        assert layer(doc, "silver_events")["metrics"]["units"] == buckets
        assert layer(doc, "silver_events")["kind"] == "full_refresh"
        assert_same_lakes(one, split)
        assert DeltaTable(str(split / "lake" / "silver_events")).history(1)[0]["operation"] == "WRITE"


def test_the_one_pass_split_gives_what_scanning_per_bucket_gives(template_project, tmp_path):
    """From PRESPLIT_MIN_BUCKETS buckets the local engine writes the source split by bucket
    once (Arrow IPC under the run's staging folder) instead of scanning it per bucket: the
    same lake either way, empty buckets included (64 buckets, fewer keys than that)."""
    one, split, scanned = (tmp_path / name for name in ("one", "split", "scanned"))
    for p in (one, split, scanned):
        shutil.copytree(template_project, p)
    for p in (split, scanned):
        for name in SILVER:
            partition(p, name, buckets=64)
    events, people = EventStream(seed=5), CustomerStream(seed=5)
    calls = []
    real_split = keyunits.split_source

    def counted(*args, **kwargs):
        calls.append((args[2], args[4]))
        return real_split(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        now = frozen(mp)
        mp.setattr(keyunits, "split_source", counted)
        for i in range(2):
            land(one, events, people, 1)
            copy_landing(one, split)
            copy_landing(one, scanned)
            if i == 1:  # the second batch's split is compressed, as a big source's is
                mp.setattr(keyunits, "SPLIT_RAW_MAX_BYTES", 0)
            for p in (one, split):
                run(now, p, "all", at=T0 + timedelta(hours=i))
            with pytest.MonkeyPatch.context() as off:
                off.setattr(keyunits, "PRESPLIT_MIN_BUCKETS", 10**6)
                run(now, scanned, "all", at=T0 + timedelta(hours=i))
            assert_same_lakes(one, split)
            assert_same_lakes(one, scanned)
    # two silver tables, two runs: the split project only
    assert calls == [(64, "uncompressed")] * 2 + [(64, "lz4")] * 2
    assert not list((split / ".medallion").rglob("*.ipc"))  # the split source is removed


def test_a_run_stopped_between_the_unit_writes_and_the_commit_changes_nothing(project, tmp_path, clock):
    events, people = EventStream(seed=21), CustomerStream(seed=21)
    land(project, events, people, 2)
    one, split = project, tmp_path / "split"
    shutil.copytree(one, split)
    partition(split, buckets=3)
    for p in (one, split):
        run(clock, p, "all", at=T0)
    land(one, events, people, 2)
    copy_landing(one, split)
    for p in (one, split):
        run(clock, p, "bronze_events", "bronze_customers", at=T0 + timedelta(minutes=10))
    silver_uri = split / "lake" / "silver_events"
    before, version = table(split, "silver_events"), DeltaTable(str(silver_uri)).version()
    files = set(silver_uri.glob("*.parquet"))
    quarantined = quarantine(split, "silver_events__quarantine")
    staging = split / ".medallion" / "staging" / "silver_events"

    # SIGKILL after every unit is staged: silver, its quarantine and state are as they were.
    env = dict(os.environ, MEDALLION_TEST_CRASH_AT="silver_events:units_written")
    proc = subprocess.run([sys.executable, "-m", "medallion_cli", "run", "silver_events", "-C", str(split), "-q"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    staged = list(staging.glob("*/unit-*.parquet"))
    assert len(staged) == 3  # the orphans: local files no table references
    assert DeltaTable(str(silver_uri)).version() == version and set(silver_uri.glob("*.parquet")) == files
    assert_frame_equal(table(split, "silver_events"), before)
    assert_frame_equal(quarantine(split, "silver_events__quarantine"), quarantined)

    # An injected failure at the same point: nothing committed, its staging removed.
    os.environ["MEDALLION_TEST_FAIL_AT"] = "silver_events:units_written"
    clock["at"] = T0 + timedelta(minutes=20)
    try:
        r = medallion("run", "silver_events", "-C", split, "-q")
    finally:
        del os.environ["MEDALLION_TEST_FAIL_AT"]
    assert r.exit_code == 1 and "injected failure" in r.stderr, r
    assert not staging.exists()  # the killed run's folder went with it: the run cleans stale staging
    assert DeltaTable(str(silver_uri)).version() == version
    assert_frame_equal(table(split, "silver_events"), before)

    # The re-run gives the tables an uninterrupted run gives.
    for p in (one, split):
        doc = run(clock, p, "all", at=T0 + timedelta(hours=1))
    assert layer(doc, "silver_events")["metrics"]["units"] == 3
    assert_same_lakes(one, split)

    # A full refresh failing after its unit files are written removes them (direct commit path).
    os.environ["MEDALLION_TEST_FAIL_AT"] = "silver_events:units_written"
    clock["at"] = T0 + timedelta(hours=2)
    files = set(silver_uri.glob("*.parquet"))
    try:
        r = medallion("run", "silver_events", "--full-refresh", "--yes", "-C", split, "-q")
    finally:
        del os.environ["MEDALLION_TEST_FAIL_AT"]
    assert r.exit_code == 1 and "injected failure" in r.stderr, r
    assert set(silver_uri.glob("*.parquet")) == files
    assert_same_lakes(one, split)


def test_a_pipeline_that_changes_its_keys_runs_as_one_unit(project, tmp_path, clock):
    one, split = project, tmp_path / "split"
    for p in (one,):
        code = p / "pipelines" / "silver_events.py"
        # the key is rewritten: a row may leave the bucket its source key hashed to
        code.write_text(code.read_text().replace('pl.col("event_id").str.strip_chars(),',
                                                 '(pl.lit("k-") + pl.col("event_id").str.slice(0, 3)).alias("event_id"),'))
    shutil.copytree(one, split)
    partition(split, buckets=4)
    for p in (one, split):
        doc = run(clock, p, "all", at=T0)
    silver = layer(doc, "silver_events")
    assert "units" not in silver["metrics"]
    assert any("ran as one unit: the pipeline changes the merge key" in w for w in silver["warnings"]), silver
    assert_same_lakes(one, split)
    assert not list((split / ".medallion").rglob("unit-*.parquet"))
    assert not [f for f in (split / "lake" / "silver_events").glob("part-*") if "-000000-" in f.name]


@pytest.mark.parametrize("spec, needle", [
    ({"buckets": 0}, "buckets must be `auto` or an integer"),
    ({"buckets": "many"}, "buckets must be `auto` or an integer"),
    ({"buckets": True}, "buckets must be `auto` or an integer"),
    ({"buckets": 2, "max_files": 3}, "unknown medallion.partition key 'max_files'"),
])
def test_bad_key_partitions_are_config_errors(project, spec, needle):
    partition(project, **spec)
    r = medallion("run", "all", "-C", project, "-q")
    assert r.exit_code == 2 and needle in r.stderr and "hint" in r.stderr.lower(), r
    assert len(r.stderr.strip().splitlines()) <= 2 and "Traceback" not in r.stderr


def test_key_buckets_need_merge_keys_in_the_target_and_the_source(project):
    partition(project, "gold_daily_sales", buckets=2)  # an overwrite target: no keys
    r = medallion("run", "all", "-C", project, "-q")
    assert r.exit_code == 2 and "needs a target with mode merge and keys" in r.stderr, r
    shutil.copy2(project / "conf" / "pipelines" / "gold_daily_sales.yml", project / "gold.bak")
    path = project / "conf" / "pipelines" / "gold_daily_sales.yml"
    data = yaml.safe_load(path.read_text())
    del data["medallion"]["partition"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    # keys the pipeline makes (not in the source): refused when the table runs, nothing written
    code = project / "pipelines" / "silver_events.py"
    code.write_text(code.read_text().replace('return normalized_events.select(*EVENT_COLUMNS,',
                                             'return normalized_events.select(pl.col("event_id").alias("eid"), *EVENT_COLUMNS,'))
    path = project / "conf" / "pipelines" / "silver_events.yml"
    path.write_text(path.read_text().replace("keys: [event_id]", "keys: [eid]"))
    partition(project, buckets=2)
    r = medallion("run", "all", "-C", project, "-q")
    assert r.exit_code == 2 and "hashes the merge key 'eid' in the source" in r.stderr, r
    assert not (project / "lake" / "silver_events").exists()


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(0, 10**9), row_bytes=st.floats(1, 10_000), budget=st.integers(64, 64_000))
def test_auto_buckets_fit_the_budget_and_are_as_few_as_possible(rows, row_bytes, budget):
    n = keyunits.auto_buckets(rows, row_bytes, budget)
    per = keyunits.rows_per_bucket_budget(row_bytes, budget)
    assert 1 <= n <= keyunits.MAX_BUCKETS
    assert n == keyunits.MAX_BUCKETS or math.ceil(rows / n) <= per  # a bucket fits
    assert n == 1 or math.ceil(rows / (n - 1)) > per  # one fewer would not
    # (a float product: equal to the budget may come out a rounding error above it)
    assert per * row_bytes * keyunits.WORKING_SET <= budget * 1024 * 1024 * (1 + 1e-12) or per == 1


@settings(max_examples=50, deadline=None)
@given(keys=st.lists(st.one_of(st.none(), st.text(max_size=4)), max_size=60), other=st.integers(-3, 3),
       n=st.integers(1, 9))
def test_every_key_null_or_not_lands_in_exactly_one_bucket(keys, other, n):
    df = pl.DataFrame({"k": keys, "j": [other] * len(keys)}, schema={"k": pl.String, "j": pl.Int64})
    parts = [df.lazy().filter(keyunits.bucket_expr(("k", "j"), n) == b).collect(engine="streaming") for b in range(n)]
    assert sum(p.height for p in parts) == df.height
    seen: dict = {}
    for b, part in enumerate(parts):
        for key in part.select("k", "j").iter_rows():
            assert seen.setdefault(key, b) == b  # a key never spans buckets
        keyunits.check_bucket(part, ("k", "j"), n, b)  # and the output check agrees


def test_auto_buckets_follow_the_memory_budget(project, tmp_path, clock, monkeypatch):
    one, split = project, tmp_path / "split"
    shutil.copytree(one, split)
    partition(split)  # buckets: auto
    for p in (one, split):
        doc = run(clock, p, "all", at=T0)
    assert "units" not in layer(doc, "silver_events")["metrics"]  # a few rows: one unit, as without units
    uri = str(split / "lake" / "bronze_events")
    adds = pl.DataFrame(DeltaTable(uri).get_add_actions(flatten=True))
    row_bytes = adds["size_bytes"].sum() / adds["num_records"].sum() * units.EXPANSION["parquet"]
    from medallion_cli.project import load_project

    loaded = load_project(split)
    silver = next(l for l in loaded.layers if l.name == "silver_events")
    assert keyunits.source_row_bytes(loaded, silver, None) == pytest.approx(row_bytes)
    # A working set so large that the default budget holds about 40 source rows: 3 buckets.
    rows = pl.read_delta(uri).height
    monkeypatch.setattr(keyunits, "WORKING_SET", 1024 * 1024 * 1024 / (row_bytes * math.ceil(rows / 3)))
    assert keyunits.auto_buckets(rows, row_bytes, 1024) == 3
    for p in (one, split):
        doc = run(clock, p, "silver_events", "--full-refresh", "--yes", at=T0 + timedelta(hours=1))
    assert layer(doc, "silver_events")["metrics"]["units"] == 3
    assert_frame_equal(table(one, "silver_events"), table(split, "silver_events"))


def test_schema_evolution_null_fills_in_units_and_new_columns_run_as_one_unit(project, tmp_path, clock):
    events, people = EventStream(seed=31), CustomerStream(seed=31)
    path = project / "conf" / "pipelines" / "silver_events.yml"
    data = yaml.safe_load(path.read_text())
    data["medallion"]["schema_evolution"] = "merge"
    del data["medallion"]["quality"]  # its strict schema would refuse the changed outputs
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    one, split = project, tmp_path / "split"
    shutil.copytree(one, split)
    partition(split, buckets=3)
    for p in (one, split):
        run(clock, p, "all", at=T0)
    edits = [('"region"]', ']'),  # the output loses a column: null-filled in every unit
             ('"_source_file")', '"_source_file", pl.lit(1).alias("extra"))')]  # a new column: one unit
    for hour, (old, new) in enumerate(edits, start=1):
        land(one, events, people, 1)
        copy_landing(one, split)
        for p in (one, split):  # both first: in one process, a pipeline module is reloaded from either path
            code = p / "pipelines" / "silver_events.py"
            assert old in code.read_text()
            code.write_text(code.read_text().replace(old, new))
        for p in (one, split):
            doc = run(clock, p, "bronze_events", "silver_events", at=T0 + timedelta(hours=hour))
        silver = layer(doc, "silver_events")
        if hour == 1:
            assert silver["metrics"]["units"] == 3 and silver["operation"] == "merge", silver
            assert "column region of silver_events is missing from the output: written as null" in silver["warnings"]
        else:
            assert "units" not in silver["metrics"], silver
            assert "silver_events ran as one unit: the output adds column(s) extra" in silver["warnings"], silver
            assert "added column extra to silver_events (existing rows are null)" in silver["warnings"]
        assert_frame_equal(table(one, "silver_events"), table(split, "silver_events"))
        assert commit_info(one, "silver_events") == commit_info(split, "silver_events")


def test_an_empty_source_creates_the_table_then_units_fill_it(project, tmp_path, clock):
    for kind in ("events", "customers"):  # no landing files: bronze and silver are created empty
        for f in (project / "data" / "landing" / kind).iterdir():
            f.unlink()
    one, split = project, tmp_path / "split"
    shutil.copytree(one, split)
    partition(split, buckets=3)
    for p in (one, split):
        doc = run(clock, p, "all", at=T0)
    assert layer(doc, "silver_events")["metrics"]["units"] == 3 and layer(doc, "silver_events")["rows_out"] == 0
    assert_same_lakes(one, split)
    land(one, EventStream(seed=41), CustomerStream(seed=41), 2)
    copy_landing(one, split)
    for p in (one, split):  # the table exists but is empty: unit files, one commit
        doc = run(clock, p, "all", at=T0 + timedelta(hours=1))
    silver = layer(doc, "silver_events")
    assert silver["metrics"]["units"] == 3 and silver["operation"] == "append" and silver["rows_out"] > 0, silver
    assert_same_lakes(one, split)


def test_key_units_on_an_s3_lake_give_the_one_unit_tables(s3, tmp_path, clock):
    r = medallion("init", "shop", "--directory", tmp_path, "--storage", "s3", "--bucket", "lake-bucket", "-q")
    assert r.exit_code == 0, r
    one, split = tmp_path / "shop", tmp_path / "split"
    events, people = EventStream(seed=51), CustomerStream(seed=51)
    land(one, events, people, 1)
    shutil.copytree(one, split)
    partition(split, buckets=3)
    conf = split / "conf" / "project.yml"
    conf.write_text(conf.read_text().replace("s3://lake-bucket/shop/lake", "s3://lake-bucket/split/lake"))
    lakes = {one: "s3://lake-bucket/shop/lake", split: "s3://lake-bucket/split/lake"}
    options = s3.env()

    def s3_table(p: Path, name: str) -> pl.DataFrame:
        df = pl.read_delta(f"{lakes[p]}/{name}", storage_options=options)
        keys = TABLES.get(name, ["_row_key"])
        return df.sort([*keys, *(c for c in df.columns if c not in keys)], nulls_last=True)

    for hour in (0, 1):  # the first run commits unit files (one PUT each), the second MERGEs staged units
        if hour:
            land(one, events, people, 1)
            copy_landing(one, split)
        for p in (one, split):
            doc = run(clock, p, "all", at=T0 + timedelta(hours=hour))
        assert layer(doc, "silver_events")["metrics"]["units"] == 3
        assert layer(doc, "silver_events")["operation"] == ("create" if hour == 0 else "merge")
        for name in (*TABLES, *QUARANTINES):
            assert_frame_equal(s3_table(one, name), s3_table(split, name))
        versions = [DeltaTable(f"{lakes[p]}/silver_events", storage_options=options).version() for p in (one, split)]
        assert versions == [hour, hour]
    assert not list((split / ".medallion").rglob("unit-*.parquet"))
