"""Incremental equals a full recompute for every kind of batch; no row lost or duplicated.

Each test reproduces a case where, before, the result depended on how files were batched,
a refresh or re-read quarantined a row twice, or a backfill or log cleanup re-ingested
files.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from conftest import add_landing_file, medallion

HEADER = "event_id,user_id,event_type,amount,event_date,updated_at,region"


def lake(project: Path, table: str) -> pl.DataFrame:
    return pl.read_delta(str(project / "lake" / table))


def silver_row(project: Path, event_id: str) -> pl.DataFrame:
    return lake(project, "silver_events").filter(pl.col("event_id") == event_id)


def ok(*args) -> None:
    r = medallion(*args)
    assert r.exit_code == 0, r


def write_csv(project: Path, name: str, rows: list[str], *, mtime: float | None = None) -> Path:
    path = project / "data" / "landing" / "events" / name
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


# -- 1. the newest *valid* version wins, on both paths ---------------------------------------
def test_an_invalid_correction_never_erases_good_data_incremental_or_full(ran_project):
    before = silver_row(ran_project, "evt-00002")
    assert before.height == 1
    write_csv(ran_project, "update.csv", ["evt-00002,22,click,-5.0,2024-01-02,2024-01-03T00:00:00.000000+0000,north"])
    ok("run", "all", "-C", ran_project, "-q")
    incremental = silver_row(ran_project, "evt-00002")
    ok("run", "silver", "gold", "--full-refresh", "--yes", "-C", ran_project, "-q")
    full = silver_row(ran_project, "evt-00002")
    assert incremental.height == full.height == 1
    assert_frame_equal(incremental, full)
    assert_frame_equal(full, before)
    quarantine = lake(ran_project, "silver_events__quarantine")
    assert quarantine.filter(pl.col("event_id") == "evt-00002")["amount"].to_list() == [-5.0]


def test_a_valid_correction_replaces_the_stored_version(ran_project):
    write_csv(ran_project, "update.csv", ["evt-00002,22,purchase,7.5,2024-01-02,2024-01-03T00:00:00.000000+0000,north"])
    ok("run", "all", "-C", ran_project, "-q")
    assert silver_row(ran_project, "evt-00002")["amount"].to_list() == [7.5]


# -- arrival order survives a full refresh -----------------------------------------------------
def test_full_refresh_keeps_arrival_order_when_versions_tie(project):
    landing = project / "data" / "landing" / "events"
    for f in landing.iterdir():
        if not f.name.startswith("."):
            f.unlink()
    same_time = "2024-01-05T00:00:00.000000+0000"
    # z_first.csv arrives first, a_second.csv later: by name a_ sorts first, by arrival last.
    write_csv(project, "z_first.csv", [f"k1,1,purchase,1.0,2024-01-05,{same_time},north"])
    ok("run", "all", "-C", project, "-q")
    write_csv(project, "a_second.csv", [f"k1,1,purchase,2.0,2024-01-05,{same_time},north"])
    ok("run", "all", "-C", project, "-q")
    assert silver_row(project, "k1")["amount"].to_list() == [2.0]  # the later arrival wins the tie
    times_before = lake(project, "bronze_events").group_by("_source_file").agg(pl.col("_ingested_at").max()).sort("_source_file")
    silver_before = lake(project, "silver_events").sort("event_id")
    gold_before = lake(project, "gold_daily_sales").sort("event_date", "region")

    ok("run", "all", "--full-refresh", "--yes", "-C", project, "-q")
    times_after = lake(project, "bronze_events").group_by("_source_file").agg(pl.col("_ingested_at").max()).sort("_source_file")
    assert_frame_equal(times_after, times_before)
    assert_frame_equal(lake(project, "silver_events").sort("event_id"), silver_before)
    assert_frame_equal(lake(project, "gold_daily_sales").sort("event_date", "region"), gold_before)
    # ...and after the state file is lost, the refresh takes the times from bronze's rows.
    shutil.rmtree(project / ".medallion")
    ok("run", "all", "--full-refresh", "--yes", "-C", project, "-q")
    assert_frame_equal(lake(project, "silver_events").sort("event_id"), silver_before)


# -- each invalid source row is quarantined exactly once ------------------------------------
def quarantine_rows(project: Path) -> int:
    q = lake(project, "silver_events__quarantine")
    assert q["_row_key"].is_duplicated().sum() == 0
    return q.height


def test_quarantine_once_after_full_refresh_backfill_and_lookback(ran_project):
    assert quarantine_rows(ran_project) == 4
    first = lake(ran_project, "silver_events__quarantine").select("_row_key", "_run_id").sort("_row_key")
    ok("run", "all", "--full-refresh", "--yes", "-C", ran_project, "-q")
    assert quarantine_rows(ran_project) == 4
    ok("run", "silver", "--since", "2024-01-01", "--until", "2024-02-01", "-C", ran_project, "-q")
    assert quarantine_rows(ran_project) == 4
    # A row keeps the run that first quarantined it, whatever re-read it since.
    assert_frame_equal(lake(ran_project, "silver_events__quarantine").select("_row_key", "_run_id").sort("_row_key"), first)

    cfg = ran_project / "conf" / "pipelines" / "silver_events.yml"
    cfg.write_text(cfg.read_text().replace("    column: _ingested_at\n", "    column: _ingested_at\n    lookback: 1 hour\n"))
    for i in range(3):
        add_landing_file(ran_project, f"more-{i}.csv", [(f"lb-{i}", 5, "purchase", -1.0, "2024-01-03", "2024-01-03T12:00:00Z", "north")])
        ok("run", "all", "-C", ran_project, "-q")
    assert quarantine_rows(ran_project) == 7


def test_full_refresh_removes_quarantined_rows_the_recompute_no_longer_finds(ran_project):
    # The unknown event type becomes valid: a full refresh takes its row out of the quarantine.
    schemas = ran_project / "schemas.py"
    schemas.write_text(schemas.read_text().replace('EVENT_TYPES = ["click", "view", "purchase", "refund"]',
                                                   'EVENT_TYPES = ["click", "view", "purchase", "refund", "hover"]'))
    ok("run", "silver", "gold", "--full-refresh", "--yes", "-C", ran_project, "-q")
    assert quarantine_rows(ran_project) == 3


def test_a_failed_main_write_after_the_quarantine_does_not_quarantine_twice(ran_project):
    add_landing_file(ran_project, "bad.csv", [("bad-1", 5, "purchase", -3.0, "2024-01-03", "2024-01-03T12:00:00Z", "north"),
                                              ("good-1", 5, "purchase", 3.0, "2024-01-03", "2024-01-03T12:00:00Z", "north")])
    ok("run", "bronze", "-C", ran_project, "-q")
    os.environ["MEDALLION_TEST_FAIL_AT"] = "silver_events:quarantined"  # after the quarantine commit, before the MERGE
    try:
        r = medallion("run", "silver", "-C", ran_project, "-q")
    finally:
        del os.environ["MEDALLION_TEST_FAIL_AT"]
    assert r.exit_code == 1, r
    assert quarantine_rows(ran_project) == 5
    ok("run", "silver", "-C", ran_project, "-q")
    assert quarantine_rows(ran_project) == 5
    assert silver_row(ran_project, "good-1").height == 1


def test_policy_fail_hint_names_a_recovery_that_works(ran_project):
    cfg = ran_project / "conf" / "pipelines" / "silver_events.yml"
    cfg.write_text(cfg.read_text().replace("    policy: quarantine\n", "    policy: fail\n"))
    add_landing_file(ran_project, "bad.csv", [("bad-1", 5, "purchase", -3.0, "2024-01-03", "2024-01-03T12:00:00Z", "north")])
    r = medallion("run", "all", "-C", ran_project)
    assert r.exit_code == 3, r
    assert "--quality-policy quarantine" in r.stderr
    # The fixed row is re-landed; the bad one stays in bronze. The hint's command goes on.
    add_landing_file(ran_project, "fixed.csv", [("bad-1", 5, "purchase", 3.0, "2024-01-03", "2024-01-03T13:00:00Z", "north")])
    assert medallion("run", "all", "-C", ran_project, "-q").exit_code == 3
    ok("run", "all", "--quality-policy", "quarantine", "-C", ran_project, "-q")
    assert silver_row(ran_project, "bad-1")["amount"].to_list() == [3.0]
    assert medallion("run", "all", "-C", ran_project, "-q").exit_code == 0


# -- 2. backfills and log cleanup never ingest a file twice -----------------------------------
def test_bronze_backfill_never_re_appends_ingested_files(ran_project):
    rows = lake(ran_project, "bronze_events").height
    r = medallion("run", "bronze", "--since", "2000-01-01", "-C", ran_project, "--json")
    assert r.exit_code == 0, r
    assert lake(ran_project, "bronze_events").height == rows
    path = add_landing_file(ran_project, "late.csv")
    old = time.time() - 10 * 86400
    os.utime(path, (old, old))
    r = medallion("run", "bronze", "--since", "30 days ago", "--until", "1 day ago", "-C", ran_project, "-q")
    assert r.exit_code == 0, r
    assert lake(ran_project, "bronze_events").height == rows + 1
    ok("run", "bronze", "-C", ran_project, "-q")  # the file was recorded: not ingested again
    assert lake(ran_project, "bronze_events").height == rows + 1


def clean_up_log(table: Path) -> None:
    """What a checkpoint past delta.logRetentionDuration does: JSON commits are deleted."""
    from deltalake import DeltaTable

    dt = DeltaTable(str(table))
    dt.alter.set_table_properties({"delta.logRetentionDuration": "interval 0 seconds"})
    dt = DeltaTable(str(table))
    dt.create_checkpoint()
    time.sleep(0.05)
    dt.cleanup_metadata()
    versions = sorted(int(p.name.split(".")[0]) for p in (table / "_delta_log").glob("*.json"))
    assert versions and versions[0] > 0


@pytest.mark.parametrize("lose_state", [False, True])
def test_ingested_files_survive_log_cleanup(ran_project, lose_state):
    add_landing_file(ran_project, "second.csv")
    ok("run", "all", "-C", ran_project, "-q")
    rows = lake(ran_project, "bronze_events").height
    clean_up_log(ran_project / "lake" / "bronze_events")
    if lose_state:
        (ran_project / ".medallion" / "state.duckdb").unlink()
    else:
        ok("watermark", "repair", "-C", ran_project, "-q")
    r = medallion("watermark", "show", "bronze_events", "-C", ran_project, "--json")
    assert r.exit_code == 0, r
    ok("run", "all", "-C", ran_project, "-q")
    assert lake(ran_project, "bronze_events").height == rows  # nothing re-ingested
    # A file modified after its rows were ingested is ingested again, as a changed file
    # (replacing its earlier rows).
    path = ran_project / "data" / "landing" / "events" / "second.csv"
    path.write_text(path.read_text().replace("10.0", "11.0"))
    ok("run", "all", "-C", ran_project, "-q")
    assert lake(ran_project, "bronze_events").height == rows
    assert silver_row(ran_project, "added-1")["amount"].to_list() == [11.0]


def test_log_cleanup_without_lineage_columns_refuses_instead_of_re_ingesting(ran_project):
    from deltalake import write_deltalake

    table = ran_project / "lake" / "bronze_events"
    frame = lake(ran_project, "bronze_events").drop("_source_file")
    write_deltalake(str(table), frame.to_arrow(), mode="overwrite", schema_mode="overwrite")
    clean_up_log(table)
    (ran_project / ".medallion" / "state.duckdb").unlink()
    r = medallion("run", "bronze", "-C", ran_project)
    assert r.exit_code == 1, r
    assert "cannot be rebuilt" in r.stderr and "Traceback" not in r.stderr
    assert DeltaTable(str(table)).to_pyarrow_table().num_rows == frame.height


# -- re-reading the same source rows changes nothing -------------------------------------------
def verify_equal(project: Path) -> dict:
    import json

    r = medallion("verify", "-C", project, "--json")
    assert r.exit_code == 0, r
    tables = {t["table"]: t for t in json.loads(r.stdout)["tables"]}
    assert all(t["equal"] for t in tables.values()), tables
    return tables


def test_a_touched_file_is_read_again_without_duplicating_a_row(ran_project):
    bronze_rows = lake(ran_project, "bronze_events").height
    os.utime(ran_project / "data" / "landing" / "events" / "events_2024-01-01.csv")  # same content, new mtime
    ok("run", "all", "-C", ran_project, "-q")
    assert lake(ran_project, "bronze_events").height == bronze_rows  # its earlier rows were replaced
    assert quarantine_rows(ran_project) == 4
    verify_equal(ran_project)


def test_a_rewritten_file_replaces_its_rows_in_bronze(ran_project):
    path = write_csv(ran_project, "f.csv", ["r1,1,purchase,1.0,2024-01-02,2024-01-02T00:00:00Z,north",
                                            "r2,1,purchase,-1.0,2024-01-02,2024-01-02T00:00:00Z,north"])
    ok("run", "all", "-C", ran_project, "-q")
    time.sleep(0.01)
    write_csv(ran_project, "f.csv", ["r1,1,purchase,3.0,2024-01-02,2024-01-03T00:00:00Z,north"])
    os.utime(path, (time.time() + 5, time.time() + 5))
    ok("run", "all", "-C", ran_project, "-q")
    rows = lake(ran_project, "bronze_events").filter(pl.col("_source_file") == "f.csv")
    assert rows["event_id"].to_list() == ["r1"]
    assert silver_row(ran_project, "r1")["amount"].to_list() == [3.0]


def test_restoring_bronze_and_running_again_quarantines_nothing_twice(project):
    landing = project / "data" / "landing" / "events"
    for f in landing.iterdir():
        if not f.name.startswith("."):
            f.unlink()
    write_csv(project, "f1.csv", ["A,1,purchase,2.0,2024-01-02,2024-01-02T00:00:00Z,north"])
    ok("run", "all", "-C", project, "-q")
    write_csv(project, "f2.csv", ["B,1,purchase,-2.0,2024-01-02,2024-01-02T00:00:00Z,north"])
    ok("run", "all", "-C", project, "-q")
    ok("restore", "bronze_events", "--version", "0", "--yes", "-C", project, "-q")
    ok("run", "all", "-C", project, "-q")
    assert quarantine_rows(project) == 1
    verify_equal(project)


def test_a_full_refresh_of_an_empty_landing_folder_empties_the_chain(ran_project):
    for f in (ran_project / "data" / "landing" / "events").iterdir():
        if not f.name.startswith("."):
            f.unlink()
    ok("run", "all", "--full-refresh", "--yes", "-C", ran_project, "-q")
    for table in ("bronze_events", "silver_events", "silver_events__quarantine", "gold_daily_sales"):
        assert lake(ran_project, table).height == 0, table
    verify_equal(ran_project)


def test_a_file_that_changes_while_it_is_read_is_not_committed(ran_project):
    import subprocess
    import sys

    path = write_csv(ran_project, "slow.csv", ["s1,1,purchase,1.0,2024-01-02,2024-01-02T00:00:00Z,north"])
    flag = ran_project / ".paused"
    env = dict(os.environ, MEDALLION_TEST_PAUSE_AT="bronze_events:computed=3", MEDALLION_TEST_PAUSE_FILE=str(flag))
    proc = subprocess.Popen([sys.executable, "-m", "medallion_cli", "run", "all", "-C", str(ran_project)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    with path.open("a") as f:  # the writer is not done yet
        f.write("s2,1,purchase,2.0,2024-01-02,2024-01-02T00:00:00Z,north\n")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "landing file slow.csv changed while it was read" in err and "Traceback" not in err
    assert "slow.csv" not in lake(ran_project, "bronze_events")["_source_file"].to_list()
    ok("run", "all", "-C", ran_project, "-q")
    assert sorted(silver_row(ran_project, e).height for e in ("s1", "s2")) == [1, 1]


# -- plans, backfill meanings, watermark values ---------------------------------------------------
def test_plan_names_a_landing_file_missing_a_column_instead_of_crashing(ran_project):
    (ran_project / "data" / "landing" / "events" / "nocol.csv").write_text("event_id,user_id\nq,1\n")
    for args in (("--plan",), ("--plan", "--json"), ("--full-refresh",)):
        r = medallion("run", "all", "-C", ran_project, *args)
        assert r.exit_code == 1, r
        assert "landing file nocol.csv" in r.stderr and "bug in medallion" not in r.stderr, r


def test_readme_backfill_example_selects_januarys_events_by_business_date(ran_project):
    import json

    r = medallion("run", "silver", "--since", "2024-01-01", "--until", "2024-02-01", "-C", ran_project, "--json")
    assert r.exit_code == 0, r
    # `run silver` runs both silver tables; the events one backfills by business date.
    silver = {l["table"]: l for l in json.loads(r.stdout)["layers"]}["silver_events"]
    assert silver["kind"] == "backfill" and "event_date in [2024-01-01" in silver["window"]
    assert silver["rows_in"] == 94  # every sample event is dated January 2024
    r = medallion("run", "silver", "--since", "2024-02-01", "-C", ran_project, "--json")
    assert {l["table"]: l for l in json.loads(r.stdout)["layers"]}["silver_events"]["rows_in"] == 0


def test_watermark_set_refuses_values_the_source_has_not_reached(ran_project):
    r = medallion("watermark", "set", "gold_daily_sales", "999", "--yes", "-C", ran_project)
    assert r.exit_code == 2 and "silver_events is at version 0: 999 is beyond it" in r.stderr, r
    r = medallion("watermark", "set", "silver_events", "2999-01-01", "--yes", "-C", ran_project)
    assert r.exit_code == 2 and "is past the newest _ingested_at in bronze_events" in r.stderr, r
    ok("watermark", "set", "gold_daily_sales", "0", "--yes", "-C", ran_project, "-q")
