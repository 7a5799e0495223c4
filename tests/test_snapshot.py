"""Pipelines with several inputs: facts read incrementally, dimensions read whole (snapshot).

The template's gold_sales_by_segment joins silver_events (incremental, by event_date) with
the current silver_customers (a snapshot input).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from conftest import add_landing_file, medallion
from medallion_cli.errors import ExitCode

def customers(project: Path, name: str, rows: list[tuple]) -> None:
    folder = project / "data" / "landing" / "customers"
    lines = ["customer_id,name,segment,country,updated_at"] + [",".join(map(str, r)) for r in rows]
    (folder / name).write_text("\n".join(lines) + "\n")


def with_segments(project: Path, on_change: str = "") -> Path:
    if on_change:
        cfg = project / "conf" / "pipelines" / "gold_sales_by_segment.yml"
        cfg.write_text(cfg.read_text().replace("      read: snapshot\n", f"      read: snapshot\n      {on_change}\n"))
    return project


def run(project: Path, *args: str) -> dict[str, dict]:
    r = medallion("run", "all", "-C", project, "--json", *args)
    assert r.exit_code == 0, r
    return {layer["table"]: layer for layer in json.loads(r.stdout)["layers"]}


def gold(project: Path) -> pl.DataFrame:
    return pl.read_delta(str(project / "lake" / "gold_sales_by_segment")).sort("event_date", "segment")


def expected(project: Path) -> pl.DataFrame:
    """The join in plain polars over the live silver tables."""
    events = pl.read_delta(str(project / "lake" / "silver_events"))
    dims = pl.read_delta(str(project / "lake" / "silver_customers"))
    segment = dict(zip(dims["customer_id"].to_list(), dims["segment"].to_list()))
    rows: dict[tuple, list] = {}
    for e in events.filter(pl.col("event_type") == "purchase").iter_rows(named=True):
        key = (e["event_date"], segment.get(e["user_id"], "unknown"))
        acc = rows.setdefault(key, [0.0, 0])
        acc[0] += e["amount"]
        acc[1] += 1
    return pl.DataFrame(
        [{"event_date": d, "segment": s, "total_sales": round(t, 2), "transaction_count": n} for (d, s), (t, n) in rows.items()],
        schema={"event_date": pl.Date, "segment": pl.String, "total_sales": pl.Float64, "transaction_count": pl.Int64},
    ).sort("event_date", "segment")


def assert_equals_full_refresh(project: Path, tmp_path: Path) -> None:
    twin = tmp_path / "twin"
    shutil.rmtree(twin, ignore_errors=True)
    shutil.copytree(project, twin)
    run(twin, "--full-refresh", "--yes")
    assert_frame_equal(gold(project), gold(twin), check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
    r = medallion("verify", "-C", project, "-q")
    assert r.exit_code == 0, r


def test_a_gold_table_joins_facts_with_the_current_dimension(project, tmp_path):
    with_segments(project)
    layers = run(project)
    assert list(layers) == ["bronze_customers", "bronze_events", "silver_customers", "silver_events",
                            "gold_daily_sales", "gold_sales_by_segment"]
    assert_frame_equal(gold(project), expected(project), check_exact=False, rel_tol=1e-9)

    # new facts: only the touched dates are recomputed, joined with the unchanged dimension
    add_landing_file(project, "more.csv", [("n-1", 2, "purchase", 5.0, "2024-01-03", "2024-01-03T12:00:00Z", "north"),
                                           ("n-2", 99, "purchase", 7.0, "2024-01-03", "2024-01-03T12:00:00Z", "north")])
    seg = run(project)["gold_sales_by_segment"]
    assert seg["kind"] == "incremental" and seg["window"].startswith("event_date in [2024-01-03, 2024-01-03]")
    assert_frame_equal(gold(project), expected(project), check_exact=False, rel_tol=1e-9)
    assert "unknown" in gold(project)["segment"].to_list()  # user 99 has no customer row
    assert_equals_full_refresh(project, tmp_path)

    # a customer changes segment: every row it joined with must follow
    customers(project, "c2.csv", [(2, "user2", "enterprise", "DE", "2024-02-01T00:00:00Z")])
    seg = run(project)["gold_sales_by_segment"]
    assert seg["kind"] == "full" and "silver_customers version 0 → 1" in seg["window"]
    assert_frame_equal(gold(project), expected(project), check_exact=False, rel_tol=1e-9)
    assert_equals_full_refresh(project, tmp_path)
    assert run(project)["gold_sales_by_segment"]["kind"] == "nothing"

    r = medallion("watermark", "show", "gold_sales_by_segment", "-C", project, "--json")
    marks = {m["input"]: m for m in json.loads(r.stdout)["watermarks"]}
    assert marks["silver_customers"]["value"] == "1" and marks["silver_events"]["column"] == "silver_events version"
    r = medallion("dag", "-C", project)
    assert "silver_customers → gold_sales_by_segment [snapshot]" in r.stdout, r


def test_on_change_ignore_keeps_history(project):
    with_segments(project, "on_change: ignore")
    run(project)
    before = gold(project)
    customers(project, "c2.csv", [(2, "user2", "enterprise", "DE", "2024-02-01T00:00:00Z")])
    r = medallion("run", "all", "-C", project, "--json")
    seg = {layer["table"]: layer for layer in json.loads(r.stdout)["layers"]}["gold_sales_by_segment"]
    assert seg["kind"] == "nothing" and any("on_change: ignore" in w for w in seg["warnings"])
    assert_frame_equal(gold(project), before)


def test_graph_order_and_plan_follow_the_snapshot_edge(project):
    cfg = project / "conf" / "project.yml"  # listed before what it reads: the graph orders it
    cfg.write_text(cfg.read_text().replace("layers: [", "layers: [gold_segments, "))
    cfg.write_text(cfg.read_text().replace(", gold_segments]", "]"))
    r = medallion("run", "all", "-C", project, "--plan", "--json")
    assert r.exit_code == 0, r
    plan = [p["table"] for p in json.loads(r.stdout)["plan"]]
    assert plan.index("gold_sales_by_segment") > plan.index("silver_customers")


@pytest.mark.parametrize("inputs, message", [
    ("  inputs:\n    a: {table: silver_events}\n    b: {table: silver_customers}\n", "exactly one input that is not `read: snapshot`"),
    ("  inputs:\n    a: {table: silver_events}\n    b: {read: snapshot}\n", "a snapshot input needs `table:`"),
    ("  inputs:\n    a: {table: silver_events}\n    b: {table: silver_customers, read: snapshot, on_change: maybe}\n",
     "on_change must be one of recompute, ignore"),
    ("  inputs:\n    a: {landing: data/x, schema: {a: string}}\n    b: {table: silver_customers, read: snapshot}\n",
     "snapshot inputs need the incremental input to be a table"),
])
def test_bad_inputs_are_config_errors(project, inputs, message):
    with_segments(project)
    cfg = project / "conf" / "pipelines" / "gold_sales_by_segment.yml"
    text = cfg.read_text()
    start, end = text.index("  inputs:\n    # The facts"), text.index("  output:")
    cfg.write_text(text[:start] + inputs + text[end:])
    r = medallion("check", "-C", project)
    assert r.exit_code == ExitCode.USAGE and message in r.stderr, r
