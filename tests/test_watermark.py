"""`medallion watermark`: show, history, set, reset, repair."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import add_landing_file, medallion
from medallion_cli.errors import ExitCode


def all_marks(project) -> dict[tuple[str, str], dict]:
    """Every watermark line, by (table, input): a table with snapshot inputs has one line per input."""
    r = medallion("watermark", "show", "-C", project, "--json")
    assert r.exit_code == 0, r
    return {(w["table"], w["input"]): w for w in json.loads(r.stdout)["watermarks"]}


def marks(project) -> dict[str, dict]:
    """Each table's own watermark (the input it reads incrementally), by table."""
    return {table: w for (table, _), w in all_marks(project).items() if not w["column"].endswith("(snapshot)")}


def test_show_lists_every_incremental_table(ran_project):
    found = marks(ran_project)
    assert set(found) == {"bronze_events", "silver_events", "gold_daily_sales",
                          "bronze_customers", "silver_customers", "gold_sales_by_segment"}
    silver = found["silver_events"]
    assert silver["column"] == "_ingested_at" and silver["value"].endswith("Z")
    assert silver["run_id"] and silver["updated_at"].endswith("Z")
    assert found["gold_daily_sales"]["value"] == "0"  # silver version processed
    assert set(silver) == {"table", "column", "value", "value_int", "delta_version", "updated_at", "run_id", "files_ingested", "input"}
    assert silver["files_ingested"] is None and found["bronze_events"]["files_ingested"] == 3
    assert silver["input"] == "bronze_events" and found["bronze_events"]["input"] == "landing"
    assert found["gold_sales_by_segment"]["input"] == "silver_events"
    snapshot = all_marks(ran_project)["gold_sales_by_segment", "silver_customers"]  # a line per snapshot input
    assert snapshot["column"] == "silver_customers version (snapshot)" and snapshot["value"] == "0"
    r = medallion("watermark", "show", "silver_events", "-C", ran_project, "--json")
    assert r.exit_code == 0 and [w["table"] for w in json.loads(r.stdout)["watermarks"]] == ["silver_events"]


def test_set_moves_the_window_and_is_audited(ran_project):
    r = medallion("watermark", "set", "silver_events", "2020-01-01", "-C", ran_project, "--yes")
    assert r.exit_code == 0, r
    assert marks(ran_project)["silver_events"]["value"] == "2020-01-01T00:00:00Z"
    r = medallion("run", "silver_events", "-C", ran_project, "--json")
    layer = json.loads(r.stdout)["layers"][0]
    assert layer["kind"] == "incremental" and layer["rows_in"] == 94  # everything after 2020
    r = medallion("watermark", "history", "silver_events", "-C", ran_project, "--json")
    actions = [c["action"] for c in json.loads(r.stdout)["history"]]
    assert actions[:3] == ["advance", "set", "advance"]


def test_reset_makes_the_next_run_start_over(ran_project):
    r = medallion("watermark", "reset", "gold_daily_sales", "-C", ran_project, "--yes")
    assert r.exit_code == 0, r
    assert marks(ran_project)["gold_daily_sales"]["value"] is None
    r = medallion("run", "gold", "-C", ran_project, "--json")
    assert {l["table"]: l for l in json.loads(r.stdout)["layers"]}["gold_daily_sales"]["kind"] == "full"


def test_reset_of_bronze_ingests_every_file_again(ran_project):
    assert medallion("watermark", "reset", "bronze_events", "-C", ran_project, "--yes", "-q").exit_code == 0
    r = medallion("run", "all", "-C", ran_project, "--json")
    layers = {l["table"]: l for l in json.loads(r.stdout)["layers"]}
    bronze, silver = layers["bronze_events"], layers["silver_events"]
    assert layers["bronze_customers"]["kind"] == "nothing"  # only the reset table starts over
    assert bronze["source_files"] == 3 and bronze["rows_out"] == 94
    assert silver["rows_out"] == 86  # the merge absorbs the second copy


def test_changes_need_yes_without_a_terminal_and_dry_run_changes_nothing(ran_project):
    before = marks(ran_project)
    r = medallion("watermark", "reset", "silver_events", "-C", ran_project)
    assert r.exit_code == ExitCode.USAGE and "pass --yes" in r.stderr
    r = medallion("watermark", "set", "silver_events", "2021-01-01", "-C", ran_project, "--dry-run", "--json")
    assert r.exit_code == 0, r
    assert json.loads(r.stdout)["applied"] is False
    assert "2021-01-01T00:00:00Z" in r.stderr
    assert marks(ran_project) == before


@pytest.mark.parametrize("args, message", [
    (["set", "nope", "1"], "unknown table 'nope'"),
    (["set", "x'; drop table watermarks; --", "1"], "unknown table"),
    (["set", "bronze_events", "2024-01-01"], "tracks ingested files"),
    (["set", "gold_daily_sales", "yesterday"], "is not an integer"),
    (["set", "silver_events", "soon"], "cannot read 'soon' as a time"),
])
def test_bad_watermark_input(ran_project, args, message):
    before = all_marks(ran_project)
    r = medallion("watermark", *args, "-C", ran_project, "--yes")
    assert r.exit_code == ExitCode.USAGE, r
    assert message in r.stderr
    assert all_marks(ran_project) == before


def test_repair_rebuilds_a_lost_state_file(ran_project):
    before = all_marks(ran_project)
    shutil.rmtree(ran_project / ".medallion")
    r = medallion("watermark", "repair", "-C", ran_project, "--json")
    assert r.exit_code == 0, r
    reports = {x["table"]: x for x in json.loads(r.stdout)["repair"]}
    assert reports["bronze_events"]["files_added"] == 3
    assert all(x["action"] == "repaired" for x in reports.values())
    after = all_marks(ran_project)
    assert set(after) == set(before)
    for key in before:
        assert after[key]["value"] == before[key]["value"], key
        assert after[key]["value_int"] == before[key]["value_int"], key
    add_landing_file(ran_project, "x.csv")
    r = medallion("run", "all", "-C", ran_project, "--json")
    layers = {l["table"]: l for l in json.loads(r.stdout)["layers"]}
    assert layers["bronze_events"]["source_files"] == 1  # nothing ingested twice
    assert layers["bronze_customers"]["kind"] == "nothing"


def test_repair_dry_run_and_unchanged(ran_project):
    r = medallion("watermark", "repair", "-C", ran_project, "--dry-run", "--json")
    assert r.exit_code == 0, r
    assert {x["action"] for x in json.loads(r.stdout)["repair"]} == {"unchanged"}


def test_a_missed_state_update_is_picked_up_from_the_delta_log(ran_project, monkeypatch):
    """A run killed after its Delta commit but before the state update loses nothing."""
    import subprocess
    import sys

    add_landing_file(ran_project, "late.csv")
    env = {**__import__("os").environ, "MEDALLION_TEST_CRASH_AT": "bronze_events:committed"}
    p = subprocess.run([sys.executable, "-m", "medallion_cli", "run", "all", "-C", str(ran_project)], env=env,
                       capture_output=True, text=True)
    assert p.returncode == -9
    assert marks(ran_project)["bronze_events"]["delta_version"] == 1  # show syncs from the log
    r = medallion("run", "all", "-C", ran_project, "--json")
    bronze = {l["table"]: l for l in json.loads(r.stdout)["layers"]}["bronze_events"]
    assert bronze["kind"] == "nothing"  # late.csv is not ingested twice
