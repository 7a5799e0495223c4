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
    ("region = 'a\\' OR region = ' ) UNION ALL SELECT * FROM t WHERE (1=1 --'", "backslashes are not allowed"),
    ("region = `north`", "'`' is not allowed"),
])
def test_where_accepts_one_condition_and_nothing_else(ran_project, where, fragment):
    r = medallion("show", "silver_events", "-C", ran_project, "--where", where, "--limit", "2", "--json")
    assert_clean_error(r, ExitCode.USAGE, "--where", fragment)
    assert r.stdout == ""


def test_where_filters_with_the_limit_kept(ran_project):
    def rows(where):
        r = medallion("show", "silver_events", "-C", ran_project, "--where", where, "--limit", "3", "--json")
        assert r.exit_code == 0, r
        return json.loads(r.stdout)["rows"]

    north = rows("region = 'north' AND (amount > 100 OR event_type = 'refund')")
    assert 0 < len(north) <= 3 and all(x["region"] == "north" for x in north)
    assert all(x["event_date"] >= "2024-01-03" for x in rows("event_date >= '2024-01-03'"))
    assert rows("region = 'it''s'") == []
    assert len(rows("amount::int > 100")) == 3


def test_as_of_before_the_table_existed_is_refused(ran_project):
    from deltalake import DeltaTable

    uri = str(ran_project / "lake" / "silver_events")
    version = DeltaTable(uri).version()
    for args in (["show", "silver_events"], ["restore", "silver_events", "--yes"]):
        r = medallion(*args, "-C", ran_project, "--as-of", "2001-01-01")
        assert_clean_error(r, ExitCode.USAGE, "silver_events did not exist at 2001-01-01T00:00:00Z: it was created at 20")
    assert DeltaTable(uri).version() == version
    r = medallion("show", "silver_events", "-C", ran_project, "--as-of", "now", "--limit", "1", "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)["rows"]) == 1, r


def test_quarantine_tables_are_project_tables(project):
    r = medallion("tables", "-C", project, "--json")
    assert [t["table"] for t in json.loads(r.stdout)["tables"]] == [
        "bronze_customers", "bronze_events", "silver_customers", "silver_events",
        "gold_daily_sales", "gold_sales_by_segment",
    ]
    assert medallion("run", "all", "-C", project, "-q").exit_code == 0
    r = medallion("tables", "-C", project, "--json")
    found = {t["table"]: t for t in json.loads(r.stdout)["tables"]}
    q = found["silver_events__quarantine"]
    assert q["kind"] == "quarantine" and q["layer"] == "silver_events" and q["exists"] and q["rows"] > 0, q
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


def _wide_table(path) -> str:
    import polars as pl
    from deltalake import write_deltalake

    frame = pl.DataFrame({f"column_number_{i:02d}": [f"value {i} of row {r}" for r in range(3)] for i in range(23)})
    write_deltalake(str(path), frame)
    return str(path)


def test_show_vertical_prints_one_block_per_row(tmp_path):
    uri = _wide_table(tmp_path / "wide")
    r = medallion("show", uri, "-x", "--limit", "2")
    assert r.exit_code == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] == "2 row(s)" and lines[1].startswith("-[ row 1 ]") and lines[25].startswith("-[ row 2 ]"), r
    assert lines[2] == "column_number_00 | value 0 of row 0" and lines[24] == "column_number_22 | value 22 of row 0", r
    r = medallion("show", uri, "--no-vertical", "--limit", "2")  # piped output stays a table
    assert r.exit_code == 0 and "-[ row" not in r.stdout and "column_number_22" in r.stdout.splitlines()[1], r


def _show_on_a_terminal(uri: str, columns: int) -> str:
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios

    from conftest import python

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    p = subprocess.Popen([python(), "-m", "medallion_cli", "show", uri, "--limit", "1"], stdout=slave, stderr=slave,
                         env={**env, "TERM": "dumb"})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    p.wait(timeout=60)
    os.close(master)
    return b"".join(chunks).decode()


def test_show_picks_records_when_the_terminal_is_too_narrow(tmp_path):
    uri = _wide_table(tmp_path / "wide")
    narrow = _show_on_a_terminal(uri, 100)
    assert "-[ row 1 ]" in narrow and "column_number_22 | value 22 of row 0" in narrow, narrow
    wide = _show_on_a_terminal(uri, 1000)
    assert "-[ row 1 ]" not in wide and "value 22 of row 0" in wide, wide


def test_diff_by_key_shows_updates_as_changes(ran_project):
    from conftest import add_landing_file

    add_landing_file(ran_project, "updates.csv", [
        ("evt-00001", 24, "click", 5.5, "2024-01-01", "2025-01-01T08:15:00Z", "east"),  # an update
        ("evt-99999", 1, "click", 1.0, "2024-01-01", "2025-01-01T08:15:00Z", "east"),  # a new row
    ])
    assert medallion("run", "all", "-C", ran_project, "-q").exit_code == 0
    r = medallion("diff", "silver_events", "0", "-C", ran_project, "--key", "event_id", "--json")
    assert r.exit_code == 0, r
    doc = json.loads(r.stdout)
    assert doc["key"] == ["event_id"]
    assert [x["event_id"] for x in doc["rows_added"]] == ["evt-99999"] and doc["rows_removed"] == []
    [changed] = doc["rows_changed"]
    assert changed["key"] == {"event_id": "evt-00001"}
    assert {k: v for k, v in changed["changes"].items() if not k.startswith("_")} == {
        "amount": {"from": 0.0, "to": 5.5},
        "updated_at": {"from": "2024-01-01T08:15:00Z", "to": "2025-01-01T08:15:00Z"},
        "region": {"from": "south", "to": "east"}}
    assert changed["changes"]["_source_file"] == {"from": "events_2024-01-01.csv", "to": "updates.csv"}
    r = medallion("diff", "silver_events", "0", "-C", ran_project, "--key", "event_id")
    assert r.exit_code == 0 and "rows changed (at most the limit): 1" in r.stdout, r
    assert any(line.split() == ["evt-00001", "region", "south", "east"] for line in r.stdout.splitlines()), r
    r = medallion("diff", "silver_events", "0", "-C", ran_project, "--key", "nosuch")
    assert_clean_error(r, ExitCode.USAGE, "--key 'nosuch' is not a column of both versions")
    r = medallion("diff", "silver_events", "0", "-C", ran_project, "--rows", "--json")  # without --key: as before
    doc = json.loads(r.stdout)
    assert sorted(x["event_id"] for x in doc["rows_added"]) == ["evt-00001", "evt-99999"] and "rows_changed" not in doc
