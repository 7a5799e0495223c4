"""Table commands: --where is one condition, time travel before creation, wide tables,
diffs by key, quarantine tables."""

from __future__ import annotations

import json

import pytest

from conftest import medallion
from medallion_cli.errors import ExitCode
from test_errors import assert_clean_error


@pytest.mark.parametrize("where, fragment", [
    ("1=1 --", "comments are not allowed"),
    ("1=1 /* x */", "comments are not allowed"),
    ("1=0 UNION ALL SELECT * FROM t", "not allowed"),
    ("event_id IN (SELECT event_id FROM t)", "not allowed"),
    ("1=1) OR (1=1", "without its"),
    ("amount > 1; DROP TABLE t", "';' is not allowed"),
    ("amount > 1 LIMIT 1000", "LIMIT is not allowed"),
    ("region = 'north", "unclosed quote"),
    ("amount", "not a condition"),
    ("nosuch > 1", "no column 'nosuch'"),
    ("amount > 'x'", "Cannot cast string"),
])
def test_where_accepts_one_condition_and_nothing_else(ran_project, where, fragment):
    r = medallion("show", "silver", "-C", ran_project, "--where", where, "--limit", "2", "--json")
    assert_clean_error(r, ExitCode.USAGE, "--where", fragment)
    assert r.stdout == ""


def test_where_filters_with_the_limit_kept(ran_project):
    def rows(where):
        r = medallion("show", "silver", "-C", ran_project, "--where", where, "--limit", "3", "--json")
        assert r.exit_code == 0, r
        return json.loads(r.stdout)["rows"]

    north = rows("region = 'north' AND (amount > 100 OR event_type = 'refund')")
    assert 0 < len(north) <= 3 and all(x["region"] == "north" for x in north)
    assert all(x["event_date"] >= "2024-01-03" for x in rows("event_date >= '2024-01-03'"))
    assert rows("region = 'it''s'") == []


def test_as_of_before_the_table_existed_is_refused(ran_project):
    from deltalake import DeltaTable

    uri = str(ran_project / "lake" / "silver_events")
    version = DeltaTable(uri).version()
    for args in (["show", "silver"], ["restore", "silver", "--yes"]):
        r = medallion(*args, "-C", ran_project, "--as-of", "2001-01-01")
        assert_clean_error(r, ExitCode.USAGE, "silver_events did not exist at 2001-01-01T00:00:00Z: it was created at 20")
    assert DeltaTable(uri).version() == version
    r = medallion("show", "silver", "-C", ran_project, "--as-of", "now", "--limit", "1", "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)["rows"]) == 1, r


def test_quarantine_tables_are_project_tables(project):
    r = medallion("tables", "-C", project, "--json")
    assert [t["table"] for t in json.loads(r.stdout)["tables"]] == ["bronze_events", "silver_events", "gold_daily_sales"]
    assert medallion("run", "all", "-C", project, "-q").exit_code == 0
    r = medallion("tables", "-C", project, "--json")
    found = {t["table"]: t for t in json.loads(r.stdout)["tables"]}
    q = found["silver_events__quarantine"]
    assert q["kind"] == "quarantine" and q["layer"] == "silver" and q["exists"] and q["rows"] > 0, q
    assert found["silver_events"]["kind"] == "layer"
    r = medallion("history", "silver_events__quarantine", "-C", project, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["history"][0]["operation"] == "WRITE", r
    r = medallion("describe", "silver_events__quarantine", "-C", project, "--json")
    assert r.exit_code == 0 and "_errors" in [c["name"] for c in json.loads(r.stdout)["columns"]], r
    r = medallion("show", "silver_events__quarantine", "-C", project, "--json", "--columns", "event_id,_layer")
    assert r.exit_code == 0 and len(json.loads(r.stdout)["rows"]) == q["rows"], r
    r = medallion("show", "gold_daily_sales__quarantine", "-C", project)
    assert_clean_error(r, ExitCode.USAGE, "is not a Delta table")
    r = medallion("show", "nosuch", "-C", project)
    assert_clean_error(r, ExitCode.USAGE, "silver_events__quarantine")
