"""Gold in bounded memory (``range_units``): polars' streaming engine and partition-range
units (``medallion.partition: {by: column, column: event_date, ranges: N | auto}``) give the
gold tables a one-unit in-memory run gives, in one Delta version per run with the same
watermark and metadata; a run killed between the unit writes and the commit leaves gold as
it was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
import yaml
from deltalake import DeltaTable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from batches import EventStream
from conftest import medallion
from medallion_cli import runner
from medallion_cli.project import load_project
from medallion_cli.range_units import split_ranges

GOLD = {"gold_daily_sales": ["event_date", "region"], "gold_sales_by_segment": ["event_date", "segment"]}
T0 = datetime(2026, 11, 1, 8, 0, tzinfo=timezone.utc)


@contextmanager
def frozen(now: dict):
    """A settable run clock and run id: two projects run at the same times get the same
    commit metadata."""
    with pytest.MonkeyPatch.context() as mp:
        class Frozen(datetime):
            @classmethod
            def now(cls, tz=None):
                return now["at"]

        mp.setattr(runner, "datetime", Frozen)
        mp.setattr(runner, "new_run_id", lambda at: f"{now['at']:%Y%m%dT%H%M%SZ}-000000")
        yield


def configure(project: Path, name: str, **medallion_keys) -> None:
    path = project / "conf" / "pipelines" / f"{name}.yml"
    data = yaml.safe_load(path.read_text())
    data["medallion"].update(medallion_keys)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def twins(one: Path, split: Path, ranges) -> None:
    """``one``: gold in one unit with the in-memory engine (as before); ``split``: gold in
    partition ranges with the streaming engine."""
    for name in GOLD:
        configure(one, name, streaming=False)
    shutil.copytree(one, split)
    for name in GOLD:
        configure(split, name, streaming=True, partition={"by": "column", "column": "event_date", "ranges": ranges})


def land(stream: EventStream, n: int, *projects: Path) -> None:
    rows = stream.batch(n)
    for p in projects:  # the same file (name and format) in every project
        stream.write(rows, p / "data" / "landing" / "events")


def run(project: Path, *args: str) -> dict:
    r = medallion("run", *args, "-C", project, "--json", "-q")
    assert r.exit_code == 0, r
    return json.loads(r.stdout)


def gold(project: Path, name: str) -> pl.DataFrame:
    df = pl.read_delta(str(project / "lake" / name))
    return df.sort(GOLD[name]).select(sorted(df.columns))


def commit_info(project: Path, name: str) -> tuple[int, int | None, dict]:
    dt = DeltaTable(str(project / "lake" / name))
    last = dt.history(1)[0]
    meta = {k: v for k, v in last.items() if k.startswith("medallion.") and k != "medallion.write_id"}
    return dt.version(), dt.transaction_version(f"medallion/{name}"), meta


def layer(doc: dict, name: str) -> dict:
    return next(l for l in doc["layers"] if l["table"] == name)


def same_gold(one: Path, split: Path) -> None:
    for name in GOLD:
        assert_frame_equal(gold(one, name), gold(split, name))
        assert commit_info(one, name) == commit_info(split, name)


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(ranges=st.integers(2, 6), seed=st.integers(0, 1000))
def test_any_range_count_gives_the_one_unit_gold(template_project, tmp_path_factory, ranges, seed):
    base = tmp_path_factory.mktemp("ranges")
    one, split = base / "one", base / "split"
    shutil.copytree(template_project, one)
    twins(one, split, ranges)
    stream = EventStream(seed=seed)
    now = {"at": T0}
    split_runs = 0
    with frozen(now):
        # Batches with updates that move events to other days, late events inside and
        # outside the 7-day window, then a full refresh.
        for i in range(3):
            land(stream, 60, one, split)
            now["at"] = T0 + timedelta(hours=i)
            before = {name: commit_info(split, name)[0] if (split / "lake" / name).exists() else -1 for name in GOLD}
            doc_one = run(one, "all")
            doc = run(split, "all")
            same_gold(one, split)
            for name in GOLD:
                lay = layer(doc, name)
                assert (lay["rows_in"], lay["rows_out"]) == (layer(doc_one, name)["rows_in"], layer(doc_one, name)["rows_out"])
                if lay["status"] == "written":  # one Delta version per run, units or not
                    assert commit_info(split, name)[0] == before[name] + 1
                    split_runs += lay["metrics"].get("units", 1) > 1
        now["at"] = T0 + timedelta(days=1)
        for p in (one, split):
            doc = run(p, *GOLD, "--full-refresh", "--yes")
        same_gold(one, split)
        assert all(layer(doc, name)["metrics"]["units"] > 1 for name in GOLD)
    assert split_runs >= 4  # incremental runs split too, not only full loads


def test_an_incremental_run_replaces_exactly_the_affected_dates(project, tmp_path):
    split = tmp_path / "split"
    twins(project, split, 3)
    stream = EventStream(seed=11)
    now = {"at": T0}
    with frozen(now):
        for i in range(3):
            land(stream, 80, project, split)
            now["at"] = T0 + timedelta(hours=i)
            for p in (project, split):
                run(p, "all")
        dt = DeltaTable(str(split / "lake" / "gold_daily_sales"))
        files_before = set(pl.DataFrame(dt.get_add_actions(flatten=True))["path"])
        # A late update of one old event: only its day and the 6 after it are rebuilt.
        late = dict(stream.sent[0], updated_at=stream.sent[0]["updated_at"] + timedelta(days=40), amount=1234.5,
                    event_type="purchase")
        stream.batch_no += 1  # a new landing file
        for p in (project, split):
            stream.write([late], p / "data" / "landing" / "events")
        now["at"] = T0 + timedelta(hours=5)
        run(project, "all")
        doc = run(split, "all")
    same_gold(project, split)
    lay = layer(doc, "gold_daily_sales")
    assert lay["operation"] == "replace" and lay["metrics"]["units"] > 1
    day = late["event_date"]
    assert lay["window"].startswith(f"event_date in [{day}, {day + timedelta(days=6)}]")
    after = pl.DataFrame(DeltaTable(str(split / "lake" / "gold_daily_sales")).get_add_actions(flatten=True))
    removed = files_before - set(after["path"])
    assert 0 < len(removed) == lay["metrics"]["num_removed_files"]


def test_a_partitioned_target_runs_as_one_unit_with_a_warning(project, tmp_path):
    """Range units write unpartitioned files: a gold table with target.partition_by (the
    template declares ranges, a user adds partition_by) runs as one unit, same table."""
    split = tmp_path / "split"
    twins(project, split, 3)
    for p in (project, split):
        path = p / "conf" / "pipelines" / "gold_daily_sales.yml"
        data = yaml.safe_load(path.read_text())
        data["medallion"]["target"]["partition_by"] = ["event_date"]
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    stream = EventStream(seed=12)
    now = {"at": T0}
    with frozen(now):
        land(stream, 80, project, split)
        run(project, "all")
        doc = run(split, "all")
    same_gold(project, split)
    lay = layer(doc, "gold_daily_sales")
    assert lay["metrics"].get("units") is None
    assert DeltaTable(str(split / "lake" / "gold_daily_sales")).metadata().partition_columns == ["event_date"]


def test_a_run_killed_between_unit_writes_and_the_commit_leaves_gold_as_it_was(project, tmp_path):
    split = tmp_path / "split"
    twins(project, split, 4)
    stream = EventStream(seed=5)
    now = {"at": T0}
    with frozen(now):
        land(stream, 80, project, split)
        for p in (project, split):
            run(p, "all")
        land(stream, 80, project, split)
        now["at"] = T0 + timedelta(minutes=30)
        run(split, "+silver_events", "silver_customers")  # gold runs in the last step, at T0 + 1 h
        now["at"] = T0 + timedelta(hours=1)
        run(project, "all")
    folder = split / "lake" / "gold_daily_sales"
    before, info, files_before = gold(split, "gold_daily_sales"), commit_info(split, "gold_daily_sales"), set(folder.glob("*.parquet"))

    env = {k: v for k, v in os.environ.items()} | {"MEDALLION_TEST_CRASH_AT": "gold_daily_sales:units_written"}
    proc = subprocess.run([sys.executable, "-m", "medallion_cli", "run", "gold_daily_sales", "-C", str(split), "-q"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    orphans = set(folder.glob("*.parquet")) - files_before
    assert orphans  # written, never committed
    assert commit_info(split, "gold_daily_sales") == info
    assert_frame_equal(gold(split, "gold_daily_sales"), before)  # readers never see them

    # An injected failure at the same point removes what it wrote.
    os.environ["MEDALLION_TEST_FAIL_AT"] = "gold_daily_sales:units_written"
    try:
        r = medallion("run", "gold_daily_sales", "-C", split, "-q")
    finally:
        del os.environ["MEDALLION_TEST_FAIL_AT"]
    assert r.exit_code == 1 and "injected failure" in r.stderr, r
    assert set(folder.glob("*.parquet")) - files_before == orphans
    assert commit_info(split, "gold_daily_sales") == info

    with frozen(now):
        run(split, "all")
    same_gold(project, split)


@pytest.mark.parametrize("spec, message", [
    ({"by": "column", "column": "event_date", "ranges": 0}, "ranges must be a positive integer or `auto`"),
    ({"by": "column", "column": "event_date", "ranges": "many"}, "ranges must be a positive integer or `auto`"),
    ({"by": "column", "column": "region"}, "column must be the incremental column 'event_date'"),
    ({"by": "column", "buckets": 4}, "unknown medallion.partition key 'buckets'"),
])
def test_a_bad_range_spec_is_a_config_error(project, spec, message):
    configure(project, "gold_daily_sales", partition=spec)
    r = medallion("run", "gold_daily_sales", "-C", project, "-q")
    assert r.exit_code == 2, r
    assert message in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr, r
    assert len(r.stderr.strip().splitlines()) == 2  # the message, then the hint


def test_ranges_need_a_partitions_table_and_streaming_a_boolean(project):
    configure(project, "silver_events", partition={"by": "column", "column": "event_date"})
    r = medallion("run", "silver_events", "-C", project, "-q")
    assert r.exit_code == 2 and "needs incremental strategy `partitions`" in r.stderr and "hint:" in r.stderr, r
    configure(project, "silver_events", partition=None, streaming="yes")
    r = medallion("run", "silver_events", "-C", project, "-q")
    assert r.exit_code == 2 and "medallion.streaming must be true or false" in r.stderr, r


def test_streaming_is_on_for_gold_rebuilds_by_default(project):
    configure(project, "gold_sales_by_segment", streaming=False)
    layers = {l.name: l.streaming for l in load_project(project).layers}
    assert layers == {"bronze_events": False, "bronze_customers": False, "silver_events": False,
                      "silver_customers": False, "gold_daily_sales": True, "gold_sales_by_segment": False}


@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(0, 1000), min_size=1, max_size=60), gaps=st.integers(0, 3),
       days=st.integers(1, 10), ranges=st.one_of(st.just("auto"), st.integers(1, 8)),
       budget=st.integers(1, 20_000), skip=st.integers(0, 5))
def test_split_ranges_cover_the_dates_once_in_order(counts, gaps, days, ranges, budget, skip):
    start = date(2024, 1, 1)
    per_day = [(start + timedelta(days=i * (gaps + 1)), n) for i, n in enumerate(counts)]
    lo = per_day[min(skip, len(per_day) - 1)][0]  # earlier dates are window context
    hi = per_day[-1][0] + timedelta(days=gaps)
    split = split_ranges(per_day, lo, hi, days=days, ranges=ranges, row_bytes=1.0, budget_bytes=budget)
    assert split[0][0] == lo and split[-1][1] == hi
    assert all(first <= last for first, last in split)
    assert all(a[1] + timedelta(days=1) == b[0] for a, b in zip(split, split[1:]))  # contiguous, no overlap
    own = [d for d, _ in per_day if lo <= d <= hi]
    if ranges != "auto":
        assert len(split) == min(ranges, len(own))
    else:
        rows = dict(per_day)
        for first, last in split:  # a range over budget is a single date of its own
            need = sum(rows.get(first - timedelta(days=days - 1) + timedelta(days=i), 0)
                       for i in range((last - first).days + days))
            present = [d for d in own if first <= d <= last]
            assert need <= budget or len(present) == 1


def test_ranges_on_an_s3_lake_give_the_local_one_unit_gold(s3, tmp_path):
    from conftest import add_landing_file

    r = medallion("init", "shop", "--directory", tmp_path / "s3", "--storage", "s3", "--bucket", "lake-bucket", "-q")
    assert r.exit_code == 0, r
    remote, local = tmp_path / "s3" / "shop", tmp_path / "local"
    shutil.copytree(remote, local)
    project_yml = local / "conf" / "project.yml"
    conf = yaml.safe_load(project_yml.read_text())
    conf["medallion"]["lake_root"] = "lake"
    project_yml.write_text(yaml.safe_dump(conf, sort_keys=False))
    for name in GOLD:
        configure(local, name, streaming=False)
        configure(remote, name, partition={"by": "column", "column": "event_date", "ranges": 3})
    options = s3.env()
    now = {"at": T0}
    docs = []
    with frozen(now):
        for i, extra in enumerate((None, "more.csv")):
            now["at"] = T0 + timedelta(hours=i)
            for p in (local, remote):
                if extra:  # purchases on five days: an incremental run over several dates
                    add_landing_file(p, extra, [(f"late-{d}", 3, "purchase", 10.0 + d, f"2024-01-0{d}",
                                                 f"2024-01-0{d}T12:00:00Z", "east") for d in range(1, 6)])
                docs.append(run(p, "all"))
            for name in GOLD:
                lake = pl.read_delta(f"s3://lake-bucket/shop/lake/{name}", storage_options=options)
                assert_frame_equal(gold(local, name), lake.sort(GOLD[name]).select(sorted(lake.columns)))
                assert layer(docs[-1], name)["metrics"]["units"] > 1
    assert layer(docs[-1], "gold_daily_sales")["operation"] == "replace"


def test_auto_ranges_follow_the_memory_budget(project, tmp_path, monkeypatch):
    from medallion_cli import units

    split = tmp_path / "split"
    twins(project, split, "auto")
    now = {"at": T0}
    with frozen(now):
        docs = [run(p, "all") for p in (project, split)]  # the sample data fits the default budget
    assert "units" not in layer(docs[1], "gold_daily_sales")["metrics"]
    files = pl.DataFrame(DeltaTable(str(split / "lake" / "silver_events")).get_add_actions(flatten=True))
    per_row = files["size_bytes"].sum() / files["num_records"].sum()
    dates = pl.read_delta(str(split / "lake" / "silver_events"))["event_date"].n_unique()
    counts = {}
    for rows_per_unit in (1, 30):  # rows the 1 GiB default budget holds, by the estimate
        monkeypatch.setattr(units, "EXPANSION", {**units.EXPANSION, "parquet": 1024**3 / per_row / rows_per_unit})
        now["at"] += timedelta(days=1)
        with frozen(now):
            docs = [run(p, *GOLD, "--full-refresh", "--yes") for p in (project, split)]
        same_gold(project, split)
        counts[rows_per_unit] = {name: layer(docs[1], name)["metrics"]["units"] for name in GOLD}
    assert counts[1] == {name: dates for name in GOLD}  # one date per unit
    assert all(1 < counts[30][name] < dates for name in GOLD)
    assert counts[30]["gold_daily_sales"] > counts[30]["gold_sales_by_segment"]  # its 7-day window costs rows
