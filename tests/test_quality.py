"""Data-quality gates with real pandera schemas and real Delta tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
import pytest
from deltalake import DeltaTable

from conftest import add_landing_file, medallion
from medallion_cli.errors import ExitCode

BAD_ROWS = [
    ("q-null-amount", 3, "purchase", None, "2024-01-04", "2024-01-04T10:00:00Z", "north"),
    ("q-negative", 3, "purchase", -2.0, "2024-01-04", "2024-01-04T10:00:00Z", "north"),
    ("q-good", 3, "purchase", 2.0, "2024-01-04", "2024-01-04T10:00:00Z", "north"),
]


def set_quality(project, block: str) -> None:
    cfg = project / "conf" / "pipelines" / "silver_events.yml"
    text = cfg.read_text()
    start = text.index("  quality:")
    end = text.index("  target:")
    cfg.write_text(text[:start] + block + text[end:])


def silver_version(project) -> int:
    return DeltaTable(str(project / "lake" / "silver_events")).version()


def quarantine(project) -> pl.DataFrame:
    return pl.read_delta(str(project / "lake" / "silver_events__quarantine"))


def test_quarantine_is_the_template_default(ran_project):
    q = quarantine(ran_project)
    assert q.height == 4
    assert set(q.columns) >= {"event_id", "amount", "_errors", "_run_id", "_quarantined_at", "_layer"}
    reasons = {(e["column"], e["check"]) for errors in q["_errors"].to_list() for e in errors}
    assert ("event_id", "not_nullable") in reasons and ("amount", "greater_than_or_equal_to(0)") in reasons
    assert any(c.startswith("isin") for _, c in reasons)
    doc = json.loads(medallion("run", "all", "-C", ran_project, "--json").stdout)  # nothing new: no re-quarantine
    assert quarantine(ran_project).height == 4 and doc["status"] == "succeeded"


def test_run_summary_reports_counts_and_destination(project):
    r = medallion("run", "all", "-C", project, "--json")
    silver = {l["layer"]: l for l in json.loads(r.stdout)["layers"]}["silver_events"]
    q = silver["quality"]
    assert (q["rows_checked"], q["rows_valid"], q["rows_invalid"], q["rows_quarantined"]) == (94, 90, 4, 4)
    assert q["quarantine_table"] == "silver_events__quarantine"
    assert {c["check"] for c in q["checks"]} >= {"not_nullable", "greater_than_or_equal_to(0)"}
    r = medallion("run", "all", "-C", project)
    assert r.exit_code == 0


def test_fail_policy_stops_the_run_and_writes_nothing(ran_project):
    set_quality(ran_project, "  quality:\n    schemas: [SilverEvents]\n    policy: fail\n")
    add_landing_file(ran_project, "bad.csv", BAD_ROWS)
    before = silver_version(ran_project)
    r = medallion("run", "all", "-C", ran_project)
    assert r.exit_code == ExitCode.QUALITY, r
    assert "2 of 3 rows fail the quality checks" in r.stderr and "amount" in r.stderr and "Traceback" not in r.stderr
    assert silver_version(ran_project) == before
    assert quarantine(ran_project).height == 4  # nothing new quarantined either
    r = medallion("run", "silver", "-C", ran_project)  # still failing: the watermark did not move
    assert r.exit_code == ExitCode.QUALITY


def test_drop_policy_counts_and_leaves_rows_out(ran_project):
    set_quality(ran_project, "  quality:\n    schemas: [SilverEvents]\n    policy: drop\n")
    add_landing_file(ran_project, "bad.csv", BAD_ROWS)
    r = medallion("run", "all", "-C", ran_project, "--json")
    silver = {l["layer"]: l for l in json.loads(r.stdout)["layers"]}["silver_events"]
    assert silver["quality"]["rows_dropped"] == 2 and silver["quality"]["rows_quarantined"] == 0
    ids = pl.read_delta(str(ran_project / "lake" / "silver_events"))["event_id"].to_list()
    assert "q-good" in ids and "q-negative" not in ids
    assert quarantine(ran_project).height == 4


def test_threshold_turns_quarantine_into_fail(ran_project):
    set_quality(ran_project, "  quality:\n    schemas: [SilverEvents]\n    policy: quarantine\n    max_invalid_fraction: 0.5\n")
    add_landing_file(ran_project, "bad.csv", BAD_ROWS)  # 2 of 3 invalid: 67% > 50%
    before = silver_version(ran_project)
    r = medallion("run", "all", "-C", ran_project)
    assert r.exit_code == ExitCode.QUALITY and "above max_invalid_fraction 50.00%" in r.stderr, r
    assert silver_version(ran_project) == before and quarantine(ran_project).height == 4
    set_quality(ran_project, "  quality:\n    schemas: [SilverEvents]\n    policy: quarantine\n    max_invalid_fraction: 0.7\n")
    assert medallion("run", "all", "-C", ran_project, "-q").exit_code == 0
    assert quarantine(ran_project).height == 6


@pytest.mark.parametrize("policy", ["fail", "drop", "quarantine"])
def test_schema_level_problems_fail_under_every_policy(ran_project, policy):
    set_quality(ran_project, f"  quality:\n    schemas: [SilverEvents]\n    policy: {policy}\n")
    module = ran_project / "pipelines" / "silver_events.py"
    module.write_text(module.read_text().replace(".select(*EVENT_COLUMNS, \"_ingested_at\", \"_source_file\")", ".select(*EVENT_COLUMNS, \"_ingested_at\", \"_source_file\").with_columns(pl.col('user_id').cast(pl.String))"))
    add_landing_file(ran_project, "more.csv")
    before = silver_version(ran_project)
    r = medallion("run", "all", "-C", ran_project)
    assert r.exit_code == ExitCode.QUALITY, r
    assert "does not fit schema SilverEvents: user_id" in r.stderr
    assert silver_version(ran_project) == before


def test_a_missing_column_fails_whatever_the_policy(ran_project):
    module = ran_project / "pipelines" / "silver_events.py"
    module.write_text(module.read_text().replace(".select(*EVENT_COLUMNS, \"_ingested_at\", \"_source_file\")", ".select(*EVENT_COLUMNS, \"_ingested_at\", \"_source_file\").drop('region')"))
    add_landing_file(ran_project, "more.csv")
    r = medallion("run", "all", "-C", ran_project)
    assert r.exit_code == ExitCode.QUALITY and "region" in r.stderr, r


def test_per_schema_policies(ran_project):
    schemas = ran_project / "schemas.py"
    schemas.write_text(schemas.read_text() + '''

class NoBigAmounts(pa.DataFrameModel):
    amount: float = pa.Field(nullable=True, le=200)
''')
    set_quality(ran_project, "  quality:\n    policy: quarantine\n    schemas:\n      - SilverEvents\n"
                             "      - name: NoBigAmounts\n        policy: drop\n")
    add_landing_file(ran_project, "mix.csv", BAD_ROWS + [("q-big", 3, "purchase", 500.0, "2024-01-04", "2024-01-04T10:00:00Z", "north")])
    r = medallion("run", "all", "-C", ran_project, "--json")
    q = {l["layer"]: l for l in json.loads(r.stdout)["layers"]}["silver_events"]["quality"]
    assert (q["rows_invalid"], q["rows_quarantined"], q["rows_dropped"]) == (3, 2, 1)


def test_quality_command_summarizes_the_quarantine(ran_project):
    doc = json.loads(medallion("quality", "silver_events", "-C", ran_project, "--json").stdout)
    assert doc["rows"] == 4 and len(doc["runs"]) == 1
    checks = {(c["column"], c["check"]): c for c in doc["checks"]}
    assert checks[("amount", "greater_than_or_equal_to(0)")]["samples"] == ["-12.5"]
    run_id = doc["runs"][0]["run_id"]
    assert json.loads(medallion("quality", "silver_events", "-C", ran_project, "--run", run_id, "--json").stdout)["rows"] == 4
    r = medallion("quality", "silver_events", "-C", ran_project, "--run", "nope")
    assert r.exit_code == ExitCode.USAGE and run_id in r.stderr
    r = medallion("quality", "gold_daily_sales", "-C", ran_project)
    assert r.exit_code == ExitCode.USAGE and "no quarantine table" in r.stderr
    r = medallion("quality", "silver_events", "-C", ran_project)
    assert r.exit_code == 0 and "not_nullable" in r.stdout


def test_quarantine_is_not_duplicated_when_a_run_is_killed_after_it(ran_project):
    add_landing_file(ran_project, "bad.csv", BAD_ROWS)
    env = {**os.environ, "MEDALLION_TEST_CRASH_AT": "silver_events:quarantined"}
    p = subprocess.run([sys.executable, "-m", "medallion_cli", "run", "all", "-C", str(ran_project)], env=env,
                       capture_output=True, text=True)
    assert p.returncode == -9
    assert quarantine(ran_project).height == 6
    assert medallion("run", "all", "-C", ran_project, "-q").exit_code == 0
    assert quarantine(ran_project).height == 6
    assert "q-good" in pl.read_delta(str(ran_project / "lake" / "silver_events"))["event_id"].to_list()


def test_check_passes_on_a_fresh_project_and_names_problems(project):
    r = medallion("check", "-C", project, "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 0 and doc["ok"] and {c["check"] for c in doc["checks"]} == {"configuration", "pipeline", "columns", "executor", "quality"}
    (project / "pipelines" / "gold_daily_sales.py").write_text(
        (project / "pipelines" / "gold_daily_sales.py").read_text().replace("rolling_window_days: int)", "rolling_window_days: int, missing_input: str)"))
    (project / "schemas.py").write_text((project / "schemas.py").read_text().replace("class SilverEvents", "class Renamed"))
    r = medallion("check", "-C", project, "--json")
    assert r.exit_code == ExitCode.USAGE
    failed = {c["layer"]: c["message"] for c in json.loads(r.stdout)["checks"] if not c["ok"]}
    assert "missing_input" in failed["gold_daily_sales"] and "no schema 'SilverEvents'" in failed["silver_events"]
    (project / "conf" / "pipelines" / "bronze_events.yml").write_text("run: [unclosed\n")
    r = medallion("check", "-C", project)
    assert r.exit_code == ExitCode.USAGE and "invalid YAML" in r.stderr


def test_bad_quality_config(project):
    set_quality(project, "  quality:\n    schemas: [SilverEvents]\n    policy: maybe\n")
    r = medallion("run", "all", "-C", project)
    assert r.exit_code == ExitCode.USAGE and "quality policy must be one of fail, drop, quarantine" in r.stderr
