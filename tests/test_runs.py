"""Run records (`medallion runs`, `runs show`, `--output-json`, retention) and `medallion retry`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from conftest import add_landing_file, medallion


def runs(project, *args):
    r = medallion("runs", "-C", project, "--json", *args)
    assert r.exit_code == 0, r
    return json.loads(r.stdout)["runs"]


def show(project, run_id=None):
    r = medallion("runs", "show", *([run_id] if run_id else []), "-C", project, "--json")
    assert r.exit_code == 0, r
    return json.loads(r.stdout)


def versions(project):
    from deltalake import DeltaTable

    return {t: DeltaTable(str(project / "lake" / t)).version()
            for t in ("bronze_customers", "bronze_events", "silver_customers", "silver_events", "gold_daily_sales",
                      "gold_sales_by_segment") if (project / "lake" / t / "_delta_log").is_dir()}


def set_project_yaml(project, **section):
    path = project / "conf" / "project.yml"
    data = yaml.safe_load(path.read_text())
    data["medallion"].update(section)
    path.write_text(yaml.safe_dump(data))


def test_a_run_is_recorded_per_table(ran_project):
    [run] = runs(ran_project)
    assert run["command"] == "run" and run["status"] == "succeeded"
    assert run["table_counts"] == {"written": 6, "unchanged": 0, "failed": 0, "skipped": 0}
    assert run["started_at"].endswith("Z") and run["ended_at"] >= run["started_at"]
    doc = show(ran_project, run["run_id"])
    assert doc["schema_version"] == 1 and doc["exit_code"] == 0
    assert doc["command_line"] == "medallion run all -C " + str(ran_project) + " --quiet"
    from medallion_cli import __version__

    assert doc["medallion_version"] == __version__ and doc["user"] and doc["host"] and doc["pid"] == os.getpid()
    layers = {layer["table"]: layer for layer in doc["layers"]}
    assert [layer["table"] for layer in doc["layers"]] == ["bronze_customers", "bronze_events", "silver_customers", "silver_events", "gold_daily_sales", "gold_sales_by_segment"]
    assert {t: layer["version"] for t, layer in layers.items()} == dict.fromkeys(["bronze_customers", "bronze_events", "silver_customers", "silver_events", "gold_daily_sales", "gold_sales_by_segment"], 0)
    silver = layers["silver_events"]
    assert silver["status"] == "written" and silver["rows_in"] == 94 and silver["rows_out"] == 86
    assert silver["quality"]["rows_invalid"] == 4 and silver["quality"]["rows_quarantined"] == 4
    assert silver["watermark_before"] is None and silver["watermark_after"] and silver["window"]
    assert silver["duration_s"] > 0
    # the per-table rows are queryable ("how long did silver take last week")
    import duckdb

    con = duckdb.connect(str(ran_project / ".medallion" / "state.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT table_name, status, rows_out, rows_invalid, delta_version FROM run_tables "
                           "WHERE run_id = ? ORDER BY position", [run["run_id"]]).fetchall()
    finally:
        con.close()
    assert rows == [("bronze_customers", "written", 24, None, 0), ("bronze_events", "written", 94, None, 0),
                    ("silver_customers", "written", 20, 1, 0), ("silver_events", "written", 86, 4, 0),
                    ("gold_daily_sales", "written", 29, None, 0), ("gold_sales_by_segment", "written", 27, None, 0)]


@pytest.mark.parametrize("fail", [False, True])
def test_run_json_is_the_runs_show_document_and_the_artifact(ran_project, tmp_path, monkeypatch, fail):
    add_landing_file(ran_project, "more.csv")
    if fail:
        monkeypatch.setenv("MEDALLION_TEST_FAIL_AT", "silver_events:computed")
    artifact = tmp_path / "ci" / "run_results.json"
    r = medallion("run", "all", "-C", ran_project, "--json", "--output-json", artifact)
    assert r.exit_code == (1 if fail else 0), r
    printed = json.loads(r.stdout)
    assert printed == show(ran_project, printed["run_id"])
    assert json.loads(artifact.read_text()) == printed
    assert json.loads((ran_project / ".medallion" / "runs" / f"{printed['run_id']}.json").read_text()) == printed
    if fail:
        assert printed["status"] == "failed" and printed["exit_code"] == 1
        assert printed["failed"] == ["silver_events"] and printed["skipped"] == ["gold_daily_sales", "gold_sales_by_segment"]
        assert printed["error"]["message"] == "injected failure at silver_events:computed"
    else:
        assert printed["status"] == "succeeded" and printed["error"] is None


def test_secrets_on_the_command_line_are_masked_in_the_record(ran_project):
    secret = "s3cr3t-value-that-must-not-leak"
    r = medallion("run", "all", "-C", ran_project, "--quiet", "--storage-option", f"AWS_SECRET_ACCESS_KEY={secret}")
    assert r.exit_code == 0, r
    doc = show(ran_project)
    assert doc["command_line"].endswith("--storage-option 'AWS_SECRET_ACCESS_KEY=***'")
    artifact = ran_project / ".medallion" / "runs" / f"{doc['run_id']}.json"
    assert secret not in artifact.read_text()
    assert secret.encode() not in (ran_project / ".medallion" / "state.duckdb").read_bytes()


def test_a_state_file_of_schema_1_is_migrated(ran_project):
    import duckdb

    path = ran_project / ".medallion" / "state.duckdb"
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE run_tables")
    con.execute("DROP TABLE runs")
    con.execute("UPDATE medallion_meta SET value = '1' WHERE key = 'schema_version'")
    marks = con.execute("SELECT table_name, value FROM watermarks ORDER BY 1").fetchall()
    con.close()
    add_landing_file(ran_project, "more.csv")
    r = medallion("run", "all", "-C", ran_project, "--json")
    assert r.exit_code == 0, r
    doc = json.loads(r.stdout)
    # the watermarks of schema 1 were used: bronze read only the new file
    assert {layer["table"]: layer["rows_in"] for layer in doc["layers"]}["bronze_events"] == 1
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute("SELECT value FROM medallion_meta WHERE key = 'schema_version'").fetchall() == [("2",)]
        assert [t for t, _ in con.execute("SELECT table_name, value FROM watermarks ORDER BY 1").fetchall()] == [t for t, _ in marks]
    finally:
        con.close()
    assert [run["run_id"] for run in runs(ran_project)] == [doc["run_id"]]


def test_a_killed_run_shows_as_interrupted_and_retry_finishes_it(ran_project):
    add_landing_file(ran_project, "more.csv")
    before = versions(ran_project)
    env = {**os.environ, "MEDALLION_TEST_CRASH_AT": "silver_events:computed",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-m", "medallion_cli", "run", "+gold_daily_sales", "-C", str(ran_project),
                           "--quiet"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    [killed, _] = runs(ran_project)
    assert killed["status"] == "interrupted", killed
    doc = show(ran_project, killed["run_id"])
    assert doc["status"] == "interrupted" and doc["ended_at"] is None
    assert doc["succeeded"] == ["bronze_events"] and doc["not_finished"] == ["silver_events", "gold_daily_sales"]
    assert not (ran_project / ".medallion" / "locks" / "runs" / f"{killed['run_id']}.lock").exists()
    assert json.loads((ran_project / ".medallion" / "runs" / f"{killed['run_id']}.json").read_text()) == doc
    bronze = versions(ran_project)["bronze_events"]
    assert bronze == before["bronze_events"] + 1

    r = medallion("retry", "-C", ran_project, "--json")
    assert r.exit_code == 0, r
    retried = json.loads(r.stdout)
    assert retried["command"] == "retry" and retried["retry_of"] == killed["run_id"]
    assert retried["tables"] == ["silver_events", "gold_daily_sales"]
    assert versions(ran_project)["bronze_events"] == bronze


def test_retry_runs_only_failed_and_skipped_tables(ran_project, monkeypatch):
    add_landing_file(ran_project, "more.csv")
    monkeypatch.setenv("MEDALLION_TEST_FAIL_AT", "silver_events:computed")
    r = medallion("run", "all", "-C", ran_project, "--quiet")
    assert r.exit_code == 1, r
    failed = show(ran_project)
    assert failed["skipped"] == ["gold_daily_sales", "gold_sales_by_segment"]
    after_failure = versions(ran_project)
    monkeypatch.delenv("MEDALLION_TEST_FAIL_AT")

    r = medallion("retry", "-C", ran_project)
    assert r.exit_code == 0, r
    assert (f"retrying 3 table(s) of run {failed['run_id']} (failed): silver_events, gold_daily_sales, "
            "gold_sales_by_segment") in r.stderr
    now = versions(ran_project)
    assert now["bronze_events"] == after_failure["bronze_events"]  # committed table not rewritten
    assert now["silver_events"] == after_failure["silver_events"] + 1
    assert now["gold_daily_sales"] == after_failure["gold_daily_sales"] + 1
    assert now["gold_sales_by_segment"] == after_failure["gold_sales_by_segment"] + 1
    for table in ("bronze_customers", "silver_customers"):  # the other branch succeeded: not run again
        assert now[table] == after_failure[table]
    retry = show(ran_project)
    assert retry["retry_of"] == failed["run_id"] and retry["status"] == "succeeded"
    assert [layer["table"] for layer in retry["layers"]] == ["silver_events", "gold_daily_sales", "gold_sales_by_segment"]

    # retrying the failed run again, or the retry: nothing left
    for target in (failed["run_id"], None):
        r = medallion("retry", *([target] if target else []), "-C", ran_project)
        assert r.exit_code == 0, r
        assert "no table to retry" in r.stderr
    assert versions(ran_project) == now
    assert len(runs(ran_project)) == 3  # nothing to retry records nothing


def test_retry_keeps_the_runs_overrides_and_window(ran_project, monkeypatch):
    monkeypatch.setenv("MEDALLION_TEST_FAIL_AT", "gold_daily_sales:computed")
    r = medallion("run", "silver_events+", "-C", ran_project, "--quiet", "--set", "gold_daily_sales.rolling_window_days=14",
                  "--since", "2024-01-01", "--until", "2024-02-01")
    assert r.exit_code == 1, r
    monkeypatch.delenv("MEDALLION_TEST_FAIL_AT")
    r = medallion("retry", "-C", ran_project, "--json")
    assert r.exit_code == 0, r
    doc = json.loads(r.stdout)
    assert doc["tables"] == ["gold_daily_sales"]
    assert doc["selection"]["overrides"] == {"gold_daily_sales.rolling_window_days": 14}
    assert (doc["selection"]["since"], doc["selection"]["until"]) == ("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")
    assert doc["layers"][0]["kind"] == "backfill"


def test_runs_filters_and_errors(ran_project, monkeypatch):
    monkeypatch.setenv("MEDALLION_TEST_FAIL_AT", "bronze_events:locked")
    assert medallion("run", "bronze_events", "-C", ran_project, "--quiet").exit_code == 1
    monkeypatch.delenv("MEDALLION_TEST_FAIL_AT")
    everything = runs(ran_project)
    assert [r["status"] for r in everything] == ["failed", "succeeded"]
    assert everything[0]["error"] == "injected failure at bronze_events:locked"
    assert [r["run_id"] for r in runs(ran_project, "--status", "failed")] == [everything[0]["run_id"]]
    assert runs(ran_project, "--limit", "1") == everything[:1]
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert runs(ran_project, "--since", future) == []
    assert show(ran_project, everything[1]["run_id"][:-2])["run_id"] == everything[1]["run_id"]  # a unique prefix

    table = medallion("runs", "-C", ran_project)
    assert table.exit_code == 0 and everything[0]["run_id"] in table.stdout and "failed" in table.stdout
    shown = medallion("runs", "show", everything[1]["run_id"], "-C", ran_project)
    assert shown.exit_code == 0 and "silver_events" in shown.stdout

    for args, words in ((("runs", "--status", "bogus"), "unknown run status"),
                        (("runs", "show", "nope"), "no run 'nope' is recorded"),
                        (("retry", "nope"), "no run 'nope' is recorded")):
        r = medallion(*args, "-C", ran_project)
        assert r.exit_code == 2 and words in r.stderr, r


def test_maintenance_commands_are_recorded(ran_project):
    assert medallion("optimize", "silver_events", "-C", ran_project, "--yes", "--quiet").exit_code == 0
    assert medallion("vacuum", "bronze_events", "-C", ran_project, "--quiet").exit_code == 0
    r = medallion("restore", "silver_events", "--version", "99", "-C", ran_project, "--yes", "--quiet")
    assert r.exit_code == 2, r
    found = runs(ran_project)
    assert [(x["command"], x["status"]) for x in found] == [
        ("restore", "failed"), ("vacuum", "succeeded"), ("optimize", "succeeded"), ("run", "succeeded")]
    restore = show(ran_project, found[0]["run_id"])
    assert restore["tables"] == ["silver_events"] and restore["exit_code"] == 2 and restore["error"]["message"]
    r = medallion("retry", found[1]["run_id"], "-C", ran_project)
    assert r.exit_code == 2 and "only runs can be retried" in r.stderr, r
    assert medallion("retry", "-C", ran_project).exit_code == 0  # the last *run* succeeded


def test_retention_prunes_old_records_and_artifacts(ran_project):
    set_project_yaml(ran_project, runs={"keep_runs": 2, "keep_days": 30})
    first = runs(ran_project)[0]["run_id"]
    assert medallion("run", "gold", "-C", ran_project, "--quiet").exit_code == 0
    found = [r["run_id"] for r in runs(ran_project)]
    assert len(found) == 2 and found[1] == first
    assert medallion("run", "gold", "-C", ran_project, "--quiet").exit_code == 0
    kept = [r["run_id"] for r in runs(ran_project)]
    assert len(kept) == 2 and first not in kept and kept[1] == found[0]
    assert sorted(p.stem for p in (ran_project / ".medallion" / "runs").glob("*.json")) == sorted(kept)

    set_project_yaml(ran_project, runs={"keep_runs": "many"})
    r = medallion("run", "gold", "-C", ran_project, "--quiet")
    assert r.exit_code == 2 and "medallion.runs.keep_runs must be a positive integer" in r.stderr, r


def test_ctrl_c_is_recorded_as_interrupted(ran_project, tmp_path):
    import signal
    import time

    add_landing_file(ran_project, "more.csv")
    flag = tmp_path / "paused"
    env = {**os.environ, "MEDALLION_TEST_PAUSE_AT": "silver_events:locked=30", "MEDALLION_TEST_PAUSE_FILE": str(flag),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-m", "medallion_cli", "run", "all", "-C", str(ran_project), "--threads", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a background shell may have left SIGINT ignored; Python then keeps it so
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert flag.exists()
        [running, _] = runs(ran_project)  # seen from another process while it runs
        assert running["status"] == "running"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Interrupted." in err, err
    doc = show(ran_project, running["run_id"])
    assert doc["status"] == "interrupted" and doc["exit_code"] == 130 and doc["ended_at"]
    # --threads 1: the run order is bronze_customers, bronze_events, silver_customers, silver_events...
    assert doc["succeeded"] == ["bronze_customers", "bronze_events", "silver_customers"]
    assert doc["not_finished"] == ["silver_events", "gold_daily_sales", "gold_sales_by_segment"]


def test_runs_in_a_project_never_run(project):
    assert runs(project) == []
    assert not (project / ".medallion" / "state.duckdb").exists()
    r = medallion("retry", "-C", project)
    assert r.exit_code == 2 and "no run is recorded yet" in r.stderr, r
