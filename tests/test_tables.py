"""Table inspection and maintenance, on the project's tables and on tables other tools wrote."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import add_landing_file, medallion
from medallion_cli.errors import ExitCode

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "delta-tables"
if not CORPUS.is_dir():  # CI lays shared/ beside the checkout
    CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "delta-tables"
OPENABLE = sorted(p.name for p in CORPUS.iterdir() if p.is_dir() and p.name != "simple_table_features") if CORPUS.is_dir() else []
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="shared/data/delta-tables not present")


def j(r) -> dict:
    assert r.exit_code == 0, r
    return json.loads(r.stdout)


def test_tables_lists_the_project(ran_project):
    doc = j(medallion("tables", "-C", ran_project, "--json"))
    rows = {t["table"]: t for t in doc["tables"]}
    assert rows["bronze_events"]["rows"] == 94 and rows["silver_events"]["rows"] == 86
    assert all(t["exists"] and t["version"] == 0 and t["last_run_id"] for t in rows.values())
    assert rows["gold_daily_sales"]["last_commit"].endswith("Z")


def test_history_of_a_project_table(ran_project):
    add_landing_file(ran_project, "more.csv")
    assert medallion("run", "all", "-C", ran_project, "-q").exit_code == 0
    doc = j(medallion("history", "silver_events", "-C", ran_project, "--json"))
    entries = doc["history"]
    assert [e["version"] for e in entries] == [1, 0]  # newest first
    assert entries[0]["operation"] == "MERGE" and entries[0]["rows_added"] == 1
    assert entries[1]["operation"] == "WRITE" and entries[1]["rows_added"] == 86
    assert entries[0]["run_id"] and entries[0]["layer"] == "silver_events" and entries[0]["watermark"]
    assert j(medallion("history", "silver_events", "-C", ran_project, "--json", "--limit", "1"))["history"][0]["version"] == 1


@needs_corpus
@pytest.mark.parametrize("name", OPENABLE)
def test_history_and_describe_work_on_every_table_deltalake_opens(name):
    path = CORPUS / name
    entries = j(medallion("history", path, "--json"))["history"]
    assert entries and entries[0]["version"] >= entries[-1]["version"]
    info = j(medallion("describe", path, "--json"))
    assert info["columns"] and info["min_reader_version"] >= 1


@needs_corpus
@pytest.mark.parametrize("name", OPENABLE)
def test_show_reads_what_it_can_and_fails_clearly_otherwise(name):
    r = medallion("show", CORPUS / name, "--json", "--limit", "3")
    if name == "checkpoints_vacuumed":
        assert r.exit_code == ExitCode.RUN_FAILED and "data files are missing" in r.stderr, r
        assert "Traceback" not in r.stderr
    else:
        assert r.exit_code == 0, r
        assert len(json.loads(r.stdout)["rows"]) <= 3


@needs_corpus
def test_deletion_vectors_and_column_mapping_are_read_correctly():
    assert len(j(medallion("show", CORPUS / "table_with_deletion_logs", "--json", "-n", "1000"))["rows"]) == 98
    rows = j(medallion("show", CORPUS / "table_with_column_mapping", "--json", "--columns", "Company Very Short"))["rows"]
    assert len(rows) == 5 and list(rows[0]) == ["Company Very Short"]


@needs_corpus
def test_an_invalid_protocol_is_a_clear_error():
    for cmd in ("history", "describe", "show"):
        r = medallion(cmd, CORPUS / "simple_table_features")
        assert r.exit_code == ExitCode.RUN_FAILED, r
        assert "cannot open" in r.stderr and "Reader features" in r.stderr and "Traceback" not in r.stderr


@needs_corpus
def test_time_travel_by_version_and_by_time():
    path = CORPUS / "simple_table_with_checkpoint"
    for v in (0, 4, 10):
        assert len(j(medallion("show", path, "--version", str(v), "--json", "-n", "100"))["rows"]) == v + 1
    r = medallion("show", path, "--version", "11")
    assert r.exit_code == ExitCode.USAGE and "has no version 11" in r.stderr and "0 to 10" in r.stderr
    r = medallion("show", CORPUS / "checkpoint-cdf-table", "--version", "1")
    assert r.exit_code == ExitCode.USAGE and "cannot load" in r.stderr


def test_show_filters_columns_csv_and_as_of(ran_project):
    doc = j(medallion("show", "silver_events", "-C", ran_project, "--where", "region = 'north' AND amount > 100",
                      "--columns", "event_id,amount", "--json", "-n", "100"))
    assert doc["rows"] and all(set(r) == {"event_id", "amount"} and r["amount"] > 100 for r in doc["rows"])
    r = medallion("show", "gold_daily_sales", "-C", ran_project, "--csv", "-n", "2")
    assert r.exit_code == 0 and r.stdout.splitlines()[0].startswith("event_date,region,total_sales")
    r = medallion("show", "gold_daily_sales", "-C", ran_project, "--as-of", "now", "--json")
    assert r.exit_code == 0, r
    r = medallion("show", "gold_daily_sales", "-C", ran_project, "--columns", "nope")
    assert r.exit_code == ExitCode.USAGE and "has no column 'nope'" in r.stderr


def make_evolving_table(path: Path) -> str:
    uri = str(path)
    write_deltalake(uri, pl.DataFrame({"id": [1, 2, 3], "v": ["a", "b", "c"]}))
    write_deltalake(uri, pl.DataFrame({"id": [4], "v": ["d"], "extra": [1.5]}), mode="append", schema_mode="merge")
    DeltaTable(uri).delete("id = 2")
    return uri


def test_diff_reports_schema_rows_and_row_changes(tmp_path):
    uri = make_evolving_table(tmp_path / "t")
    doc = j(medallion("diff", uri, "0", "--rows", "--json"))
    assert doc["to_version"] == 2 and doc["added_columns"] == ["extra"] and doc["dropped_columns"] == []
    assert (doc["rows_from"], doc["rows_to"], doc["row_count_change"]) == (3, 3, 0)
    assert doc["rows_added"] == [{"id": 4, "v": "d"}] and doc["rows_removed"] == [{"id": 2, "v": "b"}]
    r = medallion("diff", uri, "0", "1")
    assert r.exit_code == 0 and "extra" in r.stdout


def test_bad_table_inputs(tmp_path, ran_project):
    r = medallion("history", "nope", "-C", ran_project)
    assert r.exit_code == ExitCode.USAGE and "unknown table 'nope'" in r.stderr and "silver_events" in r.stderr
    (tmp_path / "plain").mkdir()
    r = medallion("describe", tmp_path / "plain")
    assert r.exit_code == ExitCode.USAGE and "not a Delta table" in r.stderr
    r = medallion("describe", "silver_events", "-C", ran_project, "--version", "9")
    assert r.exit_code == ExitCode.USAGE and "has no version 9" in r.stderr


def test_corrupt_log_entry_is_a_clear_error_and_nothing_is_modified(tmp_path):
    uri = make_evolving_table(tmp_path / "t")
    log = Path(uri) / "_delta_log" / "00000000000000000002.json"
    log.write_text("{not json")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in Path(uri).rglob("*"))
    for cmd in (["history", uri], ["describe", uri], ["show", uri], ["restore", uri, "--version", "0", "--yes"]):
        r = medallion(*cmd)
        assert r.exit_code in (ExitCode.RUN_FAILED, ExitCode.USAGE), (cmd, r)
        assert r.stderr.startswith("error:") and "Traceback" not in r.stderr, (cmd, r)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in Path(uri).rglob("*")) == before


def test_restore_puts_the_watermark_back_and_leaves_no_gap(ran_project, tmp_path):
    add_landing_file(ran_project, "more.csv", [("late-1", 4, "purchase", 55.0, "2024-01-09", "2024-01-09T09:00:00Z", "east")])
    assert medallion("run", "all", "-C", ran_project, "-q").exit_code == 0
    marks = {w["table"]: w for w in j(medallion("watermark", "show", "-C", ran_project, "--json"))["watermarks"]}
    r = medallion("restore", "silver_events", "-C", ran_project, "--version", "0", "--dry-run", "--json")
    plan = j(r)["plan"]
    assert plan["target_version"] == 0 and plan["watermark_then"] != plan["watermark_now"]
    assert plan["downstream_resets"] == ["gold_daily_sales", "gold_sales_by_segment"]  # both read silver_events
    assert "delta-rs does not roll app transactions back" in r.stderr
    assert DeltaTable(str(ran_project / "lake" / "silver_events")).version() == 1  # dry run changed nothing
    r = medallion("restore", "silver_events", "-C", ran_project, "--version", "0")
    assert r.exit_code == ExitCode.USAGE and "--yes" in r.stderr
    doc = j(medallion("restore", "silver_events", "-C", ran_project, "--version", "0", "--yes", "--json"))
    assert doc["new_version"] == 2
    after = {(w["table"], w["input"]): w for w in j(medallion("watermark", "show", "-C", ran_project, "--json"))["watermarks"]}
    assert after["silver_events", "bronze_events"]["value"] == plan["watermark_then"] != marks["silver_events"]["value"]
    assert after["gold_daily_sales", "silver_events"]["value"] is None
    assert after["gold_sales_by_segment", "silver_events"]["value"] is None
    assert "late-1" not in pl.read_delta(str(ran_project / "lake" / "silver_events"))["event_id"].to_list()
    # The next run re-reads what came after the restored version: no gap, no double load.
    r = medallion("run", "all", "-C", ran_project, "--json")
    layers = {l["layer"]: l for l in j(r)["layers"]}
    assert layers["silver_events"]["rows_out"] == 1 and layers["gold_daily_sales"]["kind"] == "full"
    assert layers["gold_sales_by_segment"]["kind"] == "full"
    silver = pl.read_delta(str(ran_project / "lake" / "silver_events"))
    assert "late-1" in silver["event_id"].to_list() and silver["event_id"].is_duplicated().sum() == 0
    r = medallion("watermark", "repair", "-C", ran_project, "--json")
    assert {x["table"]: x["action"] for x in j(r)["repair"]}["silver_events"] == "unchanged"


def test_restore_of_bronze_forgets_the_later_files(ran_project):
    add_landing_file(ran_project, "more.csv")
    assert medallion("run", "bronze_events", "-C", ran_project, "-q").exit_code == 0
    assert medallion("restore", "bronze_events", "-C", ran_project, "--version", "0", "--yes", "-q").exit_code == 0
    r = medallion("run", "bronze_events", "-C", ran_project, "--json")
    assert j(r)["layers"][0]["source_files"] == 1  # more.csv again, the other three not
    assert pl.read_delta(str(ran_project / "lake" / "bronze_events")).height == 95


def test_vacuum_is_a_dry_run_unless_yes_and_guards_short_retention(tmp_path):
    uri = make_evolving_table(tmp_path / "t")
    write_deltalake(uri, pl.DataFrame({"id": [9], "v": ["z"], "extra": [0.0]}), mode="overwrite")
    r = medallion("vacuum", uri, "--retention-hours", "0")
    assert r.exit_code == ExitCode.USAGE and "--allow-short-retention" in r.stderr
    r = medallion("vacuum", uri, "--retention-hours", "0", "--allow-short-retention", "--json")
    plan = j(r)["plan"]
    assert plan["file_count"] >= 3 and "dry run" in r.stderr and "will stop working" in r.stderr
    assert len(list(Path(uri).glob("*.parquet"))) >= 4
    doc = j(medallion("vacuum", uri, "--retention-hours", "0", "--allow-short-retention", "--yes", "--json"))
    assert doc["deleted"] == plan["file_count"]
    r = medallion("show", uri, "--version", "0")
    assert r.exit_code == ExitCode.RUN_FAILED and "data files are missing" in r.stderr
    assert j(medallion("show", uri, "--json"))["rows"] == [{"id": 9, "v": "z", "extra": 0.0}]


def test_optimize_compacts_and_validates_z_order(tmp_path):
    uri = str(tmp_path / "t")
    for i in range(6):
        write_deltalake(uri, pl.DataFrame({"id": [i], "v": [str(i)]}), mode="append")
    r = medallion("optimize", uri, "--z-order", "nope", "--yes")
    assert r.exit_code == ExitCode.USAGE and "no column 'nope'" in r.stderr
    assert j(medallion("optimize", uri, "--dry-run", "--json"))["plan"]["files"] == 6
    doc = j(medallion("optimize", uri, "--z-order", "id", "--yes", "--json"))
    assert doc["applied"] and len(DeltaTable(uri).file_uris()) == 1
    assert sorted(pl.read_delta(uri)["id"].to_list()) == list(range(6))


def test_schema_evolution_merge_adds_the_column_and_names_it(ran_project):
    cfg = ran_project / "conf" / "pipelines" / "gold_daily_sales.yml"
    cfg.write_text(cfg.read_text().replace("medallion:\n", "medallion:\n  schema_evolution: merge\n", 1))
    module = ran_project / "pipelines" / "gold_daily_sales.py"
    module.write_text(module.read_text().replace(
        '.alias("rolling_mean_sales")\n    )', '.alias("rolling_mean_sales"),\n        pl.lit("v2").alias("model")\n    )'))
    add_landing_file(ran_project, "more.csv")
    r = medallion("run", "all", "-C", ran_project)
    assert r.exit_code == 0, r
    assert "added column model to gold_daily_sales" in r.stderr
    gold = pl.read_delta(str(ran_project / "lake" / "gold_daily_sales"))
    assert gold["model"].null_count() > 0 and "v2" in gold["model"].to_list()


def test_schema_evolution_fail_stops_before_writing(ran_project):
    module = ran_project / "pipelines" / "gold_daily_sales.py"
    module.write_text(module.read_text().replace(
        '.alias("rolling_mean_sales")\n    )', '.alias("rolling_mean_sales"),\n        pl.lit(1).alias("extra")\n    )'))
    add_landing_file(ran_project, "more.csv")
    before = DeltaTable(str(ran_project / "lake" / "gold_daily_sales")).version()
    r = medallion("run", "all", "-C", ran_project)
    assert r.exit_code == ExitCode.RUN_FAILED, r
    assert "new columns extra" in r.stderr and "schema_evolution: merge" in r.stderr
    assert DeltaTable(str(ran_project / "lake" / "gold_daily_sales")).version() == before


def test_diff_and_history_of_a_table_after_restore_and_vacuum(tmp_path):
    uri = make_evolving_table(tmp_path / "t")
    DeltaTable(uri).restore(0)
    entries = j(medallion("history", uri, "--json"))["history"]
    assert entries[0]["operation"] == "RESTORE"
    doc = j(medallion("diff", uri, "1", "3", "--json"))
    assert doc["dropped_columns"] == ["extra"] and doc["rows_to"] == 3
