"""Incremental runs end where one full recompute over the same landing files ends."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from batches import EventStream
from conftest import add_landing_file, medallion
from medallion_cli.errors import ExitCode

TABLES = {"silver_events": ["event_id"], "gold_daily_sales": ["event_date", "region"]}


def read(project, table) -> pl.DataFrame:
    # _ingested_at is when a file arrived: a fresh twin project ingests at other times.
    return pl.read_delta(str(project / "lake" / table)).drop("_ingested_at", strict=False).sort(TABLES[table])


def full_recompute(project, tmp_path) -> dict[str, pl.DataFrame]:
    """A fresh copy of the project (no lake, no state) run once over all landing files."""
    fresh = tmp_path / "fresh"
    shutil.rmtree(fresh, ignore_errors=True)
    shutil.copytree(project, fresh, ignore=shutil.ignore_patterns("lake", ".medallion"))
    r = medallion("run", "all", "-C", fresh, "-q")
    assert r.exit_code == 0, r
    return {t: read(fresh, t) for t in TABLES}


def assert_same_as_full(project, tmp_path) -> None:
    want = full_recompute(project, tmp_path)
    for table in TABLES:
        assert_frame_equal(read(project, table), want[table], check_exact=False, rel_tol=1e-9, abs_tol=1e-6)


@pytest.fixture
def empty_project(project):
    for f in (project / "data" / "landing" / "events").iterdir():
        if not f.name.startswith("."):
            f.unlink()
    return project


def test_incremental_runs_equal_a_full_recompute(empty_project, tmp_path):
    stream = EventStream(seed=11)
    landing = empty_project / "data" / "landing" / "events"
    for i in range(5):
        stream.write(stream.batch(), landing)
        if i == 2:  # two batches land between runs
            stream.write(stream.batch(), landing)
        r = medallion("run", "all", "-C", empty_project, "--json")
        assert r.exit_code == 0, r
        layers = {l["layer"]: l for l in json.loads(r.stdout)["layers"]}
        assert layers["bronze_events"]["files_skipped"] == len(list(landing.glob("batch_*"))) - (2 if i == 2 else 1)
        if i > 0:
            assert layers["silver_events"]["kind"] == "incremental"
            assert layers["gold_daily_sales"]["kind"] == "incremental"
            assert layers["gold_daily_sales"]["mode"] == "replace"
        assert_same_as_full(empty_project, tmp_path)


def test_gold_replaces_only_the_touched_date_range(empty_project):
    stream = EventStream(seed=3)
    landing = empty_project / "data" / "landing" / "events"
    stream.write(stream.batch(), landing)
    assert medallion("run", "all", "-C", empty_project, "-q").exit_code == 0
    add_landing_file(empty_project, "one.csv", [("solo-1", 3, "purchase", 42.0, "2024-03-05", "2024-03-05T10:00:00Z", "east")])
    r = medallion("run", "all", "-C", empty_project, "--json")
    assert r.exit_code == 0, r
    gold = {l["layer"]: l for l in json.loads(r.stdout)["layers"]}["gold_daily_sales"]
    # 2024-03-05 and the 6 following days whose 7-day mean includes it.
    assert gold["window"].startswith("event_date in [2024-03-05, 2024-03-11]")
    commit = DeltaTable(str(empty_project / "lake" / "gold_daily_sales")).history(1)[0]
    assert "2024-03-05" in commit["operationParameters"]["predicate"]


def test_a_file_rewritten_in_place_is_ingested_again(ran_project):
    path = add_landing_file(ran_project, "fix.csv", [("fix-1", 3, "purchase", 1.0, "2024-01-02", "2024-01-02T00:00:00Z", "east")])
    assert medallion("run", "all", "-C", ran_project, "-q").exit_code == 0
    add_landing_file(ran_project, "fix.csv", [("fix-1", 3, "purchase", 2.0, "2024-01-02", "2024-01-03T00:00:00Z", "east")])
    import os

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    r = medallion("run", "all", "-C", ran_project, "--json")
    assert r.exit_code == 0, r
    bronze = {l["table"]: l for l in json.loads(r.stdout)["layers"]}["bronze_events"]
    assert bronze["source_files"] == 1 and "re-ingesting changed file(s): fix.csv" in bronze["warnings"]
    silver = read(ran_project, "silver_events").filter(pl.col("event_id") == "fix-1")
    assert silver["amount"].to_list() == [2.0]


def test_backfill_window_does_not_move_the_watermark(ran_project):
    before = medallion("watermark", "show", "silver_events", "-C", ran_project, "--json")
    r = medallion("run", "silver_events", "-C", ran_project, "--since", "2020-01-01", "--until", "2099-01-01", "--json")
    assert r.exit_code == 0, r
    layer = json.loads(r.stdout)["layers"][0]
    assert layer["kind"] == "backfill" and layer["rows_in"] == 94
    assert "[2020-01-01T00:00:00Z, 2099-01-01T00:00:00Z)" in r.stderr  # the resolved window is printed
    after = medallion("watermark", "show", "silver_events", "-C", ran_project, "--json")
    assert json.loads(after.stdout)["watermarks"][0]["value"] == json.loads(before.stdout)["watermarks"][0]["value"]


@pytest.mark.parametrize("since, until", [("yesterday", None), ("7 days ago", "now"), ("2024-01-01T00:00:00Z", "2024-02-01")])
def test_since_until_accept_iso_and_relative_forms(ran_project, since, until):
    args = ["run", "silver", "-C", ran_project, "--since", since, "--plan", "--json"]
    if until:
        args += ["--until", until]
    r = medallion(*args)
    assert r.exit_code == 0, r
    assert {p["table"]: p for p in json.loads(r.stdout)["plan"]}["silver_events"]["kind"] == "backfill"


@pytest.mark.parametrize("args, message", [
    (["--since", "last tuesday"], "cannot read 'last tuesday' as a time"),
    (["--since", "2024-02-01", "--until", "2024-01-01"], "is not before --until"),
    (["--since", "2024-01-01", "--full-refresh"], "takes no --since/--until"),
])
def test_bad_windows(ran_project, args, message):
    r = medallion("run", "silver", "-C", ran_project, *args, "--yes")
    assert r.exit_code == ExitCode.USAGE, r
    assert message in r.stderr


def test_plan_prints_windows_and_changes_nothing(ran_project):
    add_landing_file(ran_project, "new.csv")
    r = medallion("run", "all", "-C", ran_project, "--plan", "--json")
    assert r.exit_code == 0, r
    plan = {p["layer"]: p for p in json.loads(r.stdout)["plan"]}
    assert plan["bronze_events"]["files_new"] == 1 and plan["bronze_events"]["source_rows"] == 1
    # silver and gold read what bronze and silver write in this same run
    assert plan["silver_events"]["kind"] == plan["gold_daily_sales"]["kind"] == "pending"
    assert plan["silver_events"]["window"] == "what bronze_events writes to bronze_events in this run"
    assert plan["gold_daily_sales"]["write_mode"] == "replace"
    # the customers feed has nothing new: its tables are planned as unchanged, not pending
    assert plan["bronze_customers"]["files_new"] == 0 and plan["silver_customers"]["kind"] != "pending"
    assert DeltaTable(str(ran_project / "lake" / "bronze_events")).version() == 0
    r = medallion("run", "all", "-C", ran_project, "--plan")
    assert r.exit_code == 0 and "new and changed landing files" in r.stdout


def test_full_refresh_needs_confirmation_and_rebuilds(ran_project):
    r = medallion("run", "all", "-C", ran_project, "--full-refresh")
    assert r.exit_code == ExitCode.USAGE and "--yes" in r.stderr
    assert DeltaTable(str(ran_project / "lake" / "bronze_events")).version() == 0
    r = medallion("run", "all", "-C", ran_project, "--full-refresh", "--yes", "--json")
    assert r.exit_code == 0, r
    layers = json.loads(r.stdout)["layers"]
    assert [l["kind"] for l in layers] == ["full_refresh"] * 6
    assert pl.read_delta(str(ran_project / "lake" / "bronze_events")).height == 94  # overwritten, not appended
    assert read(ran_project, "silver_events").height == 86


def test_gold_without_a_change_feed_on_silver_recomputes_everything(project, tmp_path):
    cfg = project / "conf" / "pipelines" / "silver_events.yml"
    cfg.write_text(cfg.read_text().replace("delta.enableChangeDataFeed: true", "delta.enableChangeDataFeed: false"))
    assert medallion("run", "all", "-C", project, "-q").exit_code == 0
    add_landing_file(project, "late.csv", [("evt-00005", 9, "purchase", 77.0, "2024-01-02", "2030-01-01T00:00:00Z", "west")])
    r = medallion("run", "all", "-C", project, "--json")
    assert r.exit_code == 0, r
    gold = {l["table"]: l for l in json.loads(r.stdout)["layers"]}["gold_daily_sales"]
    assert gold["kind"] == "full" and "enableChangeDataFeed" in gold["warnings"][0]
    assert_same_as_full(project, tmp_path)
