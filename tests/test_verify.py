"""`medallion verify`: a scratch full recompute compared with the live tables, which it never touches."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from conftest import add_landing_file, medallion
from medallion_cli.errors import ExitCode
from medallion_cli.verify import compare_frames

# An incremental batch without ties: a new event and a later version of an existing one.
BATCH = [
    ("batch-1", 7, "purchase", 31.25, "2024-01-04", "2024-01-04T09:00:00Z", "east"),
    ("evt-00003", 3, "purchase", 12.5, "2024-01-05", "2024-01-09T06:14:00Z", "north"),
]
TABLE_FIELDS = {"table", "layer", "equal", "rows_live", "rows_recomputed", "missing", "extra", "changed", "examples",
                "key", "key_rule", "live_exists", "columns_only_live", "columns_only_recomputed", "columns_retyped"}


def snapshot(project: Path) -> dict:
    """Everything verify must leave alone: table versions and logs, lake files, the state file and locks."""
    lake = project / "lake"
    tables = {p.name: (DeltaTable(str(p)).version(), sorted(os.listdir(p / "_delta_log")))
              for p in sorted(lake.iterdir())}
    files = {str(p.relative_to(lake)): (p.stat().st_size, p.stat().st_mtime_ns) for p in lake.rglob("*")}
    # verify adds its own run record (issue 12): the state's other tables and files must not change
    local = {str(p.relative_to(project)): (p.stat().st_size, p.stat().st_mtime_ns) for p in (project / ".medallion").rglob("*")
             if p.name != "state.duckdb" and "runs" not in p.relative_to(project).parts}
    return {"tables": tables, "files": files, "local": local, "state": snapshot_state(project)}


def snapshot_state(project: Path) -> dict:
    """The state file but for run records (verify records itself)."""
    import duckdb

    con = duckdb.connect(str(project / ".medallion" / "state.duckdb"), read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
                for t in ("medallion_meta", "watermarks", "watermark_history", "ingested_files")}
    finally:
        con.close()


def by_table(doc: dict) -> dict[str, dict]:
    return {t["table"]: t for t in doc["tables"]}


@pytest.fixture
def incremental_project(ran_project) -> Path:
    add_landing_file(ran_project, "batch.csv", BATCH)
    r = medallion("run", "all", "-C", ran_project, "--json")
    assert r.exit_code == 0, r
    assert {l["layer"]: l["kind"] for l in json.loads(r.stdout)["layers"]}["silver_events"] == "incremental"
    return ran_project


def test_equal_after_an_incremental_batch_and_live_lake_untouched(incremental_project, tmp_path):
    before = snapshot(incremental_project)
    scratch = tmp_path / "scratch"
    # The events chain (`verify silver gold` would select the customers tables too).
    r = medallion("verify", "silver_events", "gold_daily_sales", "-C", incremental_project, "--json", "--scratch", scratch)
    assert r.exit_code == 0, r
    doc = json.loads(r.stdout)
    assert doc["equal"] is True and doc["rebuilt"] == ["bronze_events", "silver_events", "gold_daily_sales"]
    tables = by_table(doc)
    assert set(tables) == {"silver_events", "silver_events__quarantine", "gold_daily_sales"}
    for t in tables.values():
        assert set(t) == TABLE_FIELDS
        assert t["equal"] and (t["missing"], t["extra"], t["changed"]) == (0, 0, 0) and t["examples"] == []
        assert t["rows_live"] == t["rows_recomputed"] > 0
    assert tables["silver_events"]["rows_live"] == 87  # 86 sample events + batch-1
    assert tables["silver_events"]["key"] == ["event_id"] and tables["silver_events"]["key_rule"] == "keys"
    assert tables["gold_daily_sales"]["key_rule"] == "multiset"
    assert set(tables["gold_daily_sales"]["key"]) == {"event_date", "region", "transaction_count", "unique_customers"}
    assert snapshot(incremental_project) == before
    assert list(scratch.iterdir()) == []  # the scratch lake is removed


def test_bronze_equal_after_an_incremental_batch(incremental_project):
    r = medallion("verify", "bronze", "-C", incremental_project, "--json")
    assert r.exit_code == 0, r
    assert by_table(json.loads(r.stdout))["bronze_events"]["equal"]


def test_tampered_silver_is_reported_and_exits_3(ran_project):
    uri = str(ran_project / "lake" / "silver_events")
    dt = DeltaTable(uri)
    dt.delete("event_id = 'evt-00011'")
    dt.update(updates={"amount": "999.0"}, predicate="event_id = 'evt-00013'")
    before = snapshot(ran_project)

    r = medallion("verify", "silver_events", "-C", ran_project, "--json")
    assert r.exit_code == ExitCode.QUALITY, r
    assert "Traceback" not in r.stderr
    assert "error: 1 of 2 table(s) differ from a full recompute: silver_events has 1 missing, 0 extra, 1 changed" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["equal"] is False and doc["rebuilt"] == ["bronze_events", "silver_events"]
    tables = by_table(doc)
    assert set(tables) == {"silver_events", "silver_events__quarantine"}  # gold is not compared
    silver = tables["silver_events"]
    assert (silver["rows_live"], silver["rows_recomputed"]) == (85, 86)
    assert (silver["missing"], silver["extra"], silver["changed"]) == (1, 0, 1)
    assert silver["examples"] == [
        {"kind": "missing", "key": {"event_id": "evt-00011"}},
        {"kind": "changed", "key": {"event_id": "evt-00013"}, "columns": {"amount": {"live": 999.0, "recomputed": 68.22}}},
    ]
    assert tables["silver_events__quarantine"]["equal"]
    assert snapshot(ran_project) == before

    human = medallion("verify", "silver", "-C", ran_project)
    assert human.exit_code == ExitCode.QUALITY, human
    assert "silver_events" in human.stdout and "DIFFERENT" in human.stdout
    assert "evt-00013" in human.stdout and "999.0" in human.stdout and "68.22" in human.stdout


def test_float_tolerance_on_gold(ran_project):
    uri = str(ran_project / "lake" / "gold_daily_sales")
    gold = pl.read_delta(uri)
    row = gold.sort("event_date", "region").row(0, named=True)
    predicate = f"event_date = '{row['event_date']}' AND region = '{row['region']}'"
    DeltaTable(uri).update(new_values={"total_sales": row["total_sales"] * (1 + 1e-7)}, predicate=predicate)

    loose = medallion("verify", "gold", "-C", ran_project, "--json", "--tolerance", "1e-6")
    assert loose.exit_code == 0, loose
    strict = medallion("verify", "gold", "-C", ran_project, "--json")  # default 1e-9
    assert strict.exit_code == ExitCode.QUALITY, strict
    g = by_table(json.loads(strict.stdout))["gold_daily_sales"]
    assert (g["missing"], g["extra"], g["changed"]) == (0, 0, 1)
    [example] = g["examples"]
    assert example["key"]["region"] == row["region"] and example["key"]["event_date"] == str(row["event_date"])
    assert list(example["columns"]) == ["total_sales"]


def test_keep_scratch_says_where(ran_project, tmp_path):
    r = medallion("verify", "gold", "-C", ran_project, "--keep-scratch", "--scratch", tmp_path / "s")
    assert r.exit_code == 0, r
    [kept] = (tmp_path / "s").iterdir()
    assert f"scratch lake kept in {kept}" in r.stderr
    assert DeltaTable(str(kept / "lake" / "gold_daily_sales")).version() == 0
    assert (kept / "state.duckdb").is_file() and (kept / "locks" / "gold_daily_sales.lock").is_file()


def test_unknown_name_exits_2_listing_known_ones(project):
    r = medallion("verify", "silver", "platinum", "-C", project)
    assert r.exit_code == ExitCode.USAGE, r
    assert "unknown table or layer 'platinum'" in r.stderr
    assert ("bronze, silver, gold, bronze_customers, bronze_events, silver_customers, silver_events, gold_daily_sales, "
            "gold_sales_by_segment") in r.stderr
    assert "Traceback" not in r.stderr


def test_compare_rules():
    live = pl.DataFrame({"id": ["a", "b", "b", None], "x": [1.0, 2.0, 2.0, float("nan")], "_run_id": ["r1"] * 4})
    new = pl.DataFrame({"id": ["a", "b", "b", None], "x": [1.0 + 1e-12, 2.0, 2.5, float("nan")], "_run_id": ["r2"] * 4})
    # multiset: the key is every non-float column; the second "b" differs only in x
    c = compare_frames(live, new, table="t")
    assert (c.key, c.key_rule, c.missing, c.extra, c.changed) == (("id",), "multiset", 0, 0, 1)
    assert c.examples[0]["columns"] == {"x": {"live": 2.0, "recomputed": 2.5}}
    assert compare_frames(live, live.with_columns(pl.lit("r3").alias("_run_id")), table="t").equal
    assert not compare_frames(live, new.head(2).vstack(live.slice(2)), table="t", tolerance=0).equal  # 1e-12 counts
    assert compare_frames(live, new.head(2).vstack(live.slice(2)), table="t").equal
    # a column on one side only is a difference; a missing live table makes every row missing
    assert compare_frames(live, new.with_columns(pl.lit(1).alias("y")), table="t").columns_only_recomputed == ("y",)
    gone = compare_frames(None, new, table="t", keys=["id"])
    assert (gone.live_exists, gone.missing, gone.rows_live) == (False, 4, 0)


def test_scratch_project_keeps_every_table_in_the_scratch_lake(project, tmp_path):
    from medallion_cli.project import load_project
    from medallion_cli.verify import scratch_project

    twin = scratch_project(load_project(project), tmp_path / "s")
    lake = str(tmp_path / "s" / "lake")
    uris = [twin.table_uri(t) for t in ("silver_events", "/data/lake/gold", "s3://bucket/lake/gold", "s3://other/gold")]
    assert all(u.startswith(lake + "/") for u in uris) and len(set(uris)) == 4
    assert twin.lock_dir == tmp_path / "s" / "locks" and twin.state_path == tmp_path / "s" / "state.duckdb"
    assert twin.root == project.resolve() and twin.layers == load_project(project).layers


def test_s3_lake_with_a_local_scratch(s3, tmp_path):
    r = medallion("init", "shop", "--directory", tmp_path, "--storage", "s3", "--bucket", "lake-bucket", "-q")
    assert r.exit_code == 0, r
    shop = tmp_path / "shop"
    assert medallion("run", "all", "-C", shop, "-q").exit_code == 0
    add_landing_file(shop, "batch.csv", BATCH)
    assert medallion("run", "all", "-C", shop, "-q").exit_code == 0

    def objects() -> dict:
        listing = s3.client().list_objects_v2(Bucket="lake-bucket")["Contents"]
        return {o["Key"]: (o["ETag"], o["LastModified"]) for o in listing}

    before, state = objects(), snapshot_state(shop)
    r = medallion("verify", "silver_events", "gold_daily_sales", "-C", shop, "--json", "--scratch", tmp_path / "scratch")
    assert r.exit_code == 0, r
    tables = by_table(json.loads(r.stdout))
    assert set(tables) == {"silver_events", "silver_events__quarantine", "gold_daily_sales"}
    assert (tables["silver_events"]["rows_live"], tables["gold_daily_sales"]["rows_live"]) == (87, 29)
    assert all(t["equal"] and t["rows_live"] == t["rows_recomputed"] > 0 for t in tables.values())
    assert objects() == before and snapshot_state(shop) == state
    assert not (shop / "lake").exists() and list((tmp_path / "scratch").iterdir()) == []


def test_a_failing_recompute_exits_1_and_cleans_up(ran_project, tmp_path):
    # Landing files the live lake has not ingested are left out of the recompute; a
    # pipeline that now fails makes the recompute fail.
    (ran_project / "data" / "landing" / "events" / "not-yet.csv").write_text("event_id\nx\n")
    module = ran_project / "pipelines" / "silver_events.py"
    module.write_text(module.read_text().replace(
        "    return normalized_events.select", '    raise ValueError("boom")\n    return normalized_events.select'))
    before = snapshot(ran_project)
    r = medallion("verify", "silver", "-C", ran_project, "--scratch", tmp_path / "s")
    assert r.exit_code == ExitCode.RUN_FAILED, r
    assert "error: the recompute failed, nothing was compared: layer 'silver_events' failed: ValueError: boom" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert list((tmp_path / "s").iterdir()) == [] and snapshot(ran_project) == before
