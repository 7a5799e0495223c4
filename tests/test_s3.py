"""The whole flow against a real S3 API (moto's server on 127.0.0.1), faults included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import polars as pl
import pytest
from deltalake import DeltaTable

from conftest import LANDING, add_landing_file, medallion
from medallion_cli.errors import ExitCode
from s3fixtures import SECRET, FaultProxy

LAKE = "s3://lake-bucket/shop/lake"


def options(s3, endpoint=None) -> dict[str, str]:
    return s3.env(endpoint)


@pytest.fixture
def s3_project(s3, tmp_path):
    r = medallion("init", "shop", "--directory", tmp_path, "--storage", "s3", "--bucket", "lake-bucket", "-q")
    assert r.exit_code == 0, r
    return tmp_path / "shop"


def outputs(*results) -> str:
    return "\n".join(r.stdout + r.stderr for r in results)


def test_whole_flow_on_s3(s3_project, s3):
    runs = [medallion("run", "all", "-C", s3_project, "--json")]
    assert runs[0].exit_code == 0, runs[0]
    for table, rows in (("bronze_events", 94), ("silver_events", 86), ("gold_daily_sales", 29)):
        assert pl.read_delta(f"{LAKE}/{table}", storage_options=options(s3)).height == rows
    assert not (s3_project / "lake").exists()
    add_landing_file(s3_project, "more.csv")
    runs.append(medallion("run", "all", "-C", s3_project, "--json"))
    layers = {l["layer"]: l for l in json.loads(runs[-1].stdout)["layers"]}
    assert layers["bronze_events"]["source_files"] == 1 and layers["silver_events"]["kind"] == "incremental"
    assert layers["gold_daily_sales"]["mode"] == "replace"
    assert layers["bronze_customers"]["kind"] == "nothing"
    runs.append(medallion("history", "silver_events", "-C", s3_project, "--json"))
    assert [e["operation"] for e in json.loads(runs[-1].stdout)["history"]] == ["MERGE", "WRITE"]
    runs.append(medallion("watermark", "show", "-C", s3_project, "--json"))
    assert len(json.loads(runs[-1].stdout)["watermarks"]) == 7
    runs.append(medallion("show", "gold_daily_sales", "-C", s3_project, "--json", "-n", "5"))
    assert len(json.loads(runs[-1].stdout)["rows"]) == 5
    runs.append(medallion("tables", "-C", s3_project, "--json"))
    assert {t["uri"] for t in json.loads(runs[-1].stdout)["tables"]} == {f"{LAKE}/{t}" for t in (
        "bronze_events", "silver_events", "gold_daily_sales", "silver_events__quarantine", "bronze_customers",
        "silver_customers", "gold_sales_by_segment", "silver_customers__quarantine")}
    runs.append(medallion("quality", "silver_events", "-C", s3_project, "--json"))
    assert json.loads(runs[-1].stdout)["rows"] == 4
    assert all(r.exit_code == 0 for r in runs), outputs(*runs)
    # Secrets appear nowhere: not in output, not in the Delta logs, not in the state file.
    assert SECRET not in outputs(*runs)
    import s3fs

    fs = s3fs.S3FileSystem(key="testing-key-id", secret=SECRET, endpoint_url=s3.endpoint)
    for path in fs.find("lake-bucket/shop/lake"):
        if "_delta_log" in path and path.endswith(".json"):
            assert SECRET not in fs.cat(path).decode()
    assert SECRET.encode() not in (s3_project / ".medallion" / "state.duckdb").read_bytes()


def test_landing_files_on_s3(s3_project, s3):
    import s3fs

    fs = s3fs.S3FileSystem(key="testing-key-id", secret=SECRET, endpoint_url=s3.endpoint)
    for f in LANDING.iterdir():
        if not f.name.startswith("."):
            fs.put(str(f), f"lake-bucket/incoming/{f.name}")
    cfg = s3_project / "conf" / "pipelines" / "bronze_events.yml"
    cfg.write_text(cfg.read_text().replace("landing: data/landing/events", "landing: s3://lake-bucket/incoming"))
    r = medallion("run", "all", "-C", s3_project, "--json")
    assert r.exit_code == 0, r
    bronze = {l["table"]: l for l in json.loads(r.stdout)["layers"]}["bronze_events"]
    assert (bronze["source_files"], bronze["rows_out"]) == (3, 94)
    names = set(pl.read_delta(f"{LAKE}/bronze_events", storage_options=options(s3))["_source_file"])
    assert names == {"events_2024-01-01.csv", "events_2024-01-06.parquet", "events_2024-01-11.jsonl"}
    r = medallion("run", "bronze_events", "-C", s3_project, "--json")
    assert json.loads(r.stdout)["layers"][0]["kind"] == "nothing"


def test_storage_options_from_config_with_env_interpolation_and_cli(s3_project, s3, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    r = medallion("run", "bronze", "-C", s3_project, "--storage-option", f"AWS_ENDPOINT_URL={s3.endpoint}", "-q")
    assert r.exit_code == 0, r
    cfg = s3_project / "conf" / "project.yml"
    cfg.write_text(cfg.read_text().replace("    # AWS_ENDPOINT_URL: ${S3_ENDPOINT:-}", "    AWS_ENDPOINT_URL: ${S3_ENDPOINT}"))
    r = medallion("run", "silver", "-C", s3_project)
    assert r.exit_code == ExitCode.USAGE and "environment variable S3_ENDPOINT is not set" in r.stderr
    monkeypatch.setenv("S3_ENDPOINT", s3.endpoint)
    assert medallion("run", "silver", "gold", "-C", s3_project, "-q").exit_code == 0


def test_wrong_endpoint_fails_fast_with_one_clear_line(s3_project, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    t0 = time.perf_counter()
    r = medallion("run", "all", "-C", s3_project)
    assert time.perf_counter() - t0 < 60
    assert r.exit_code == ExitCode.RUN_FAILED, r
    assert "cannot reach the object store at http://127.0.0.1:9" in r.stderr and "Traceback" not in r.stderr
    assert SECRET not in r.stderr


def test_missing_bucket_is_named(s3, tmp_path):
    r = medallion("init", "shop", "--directory", tmp_path, "--storage", "s3", "--bucket", "no-such-bucket", "-q")
    assert r.exit_code == 0
    t0 = time.perf_counter()
    r = medallion("run", "all", "-C", tmp_path / "shop")
    assert time.perf_counter() - t0 < 30
    assert r.exit_code == ExitCode.RUN_FAILED, r
    assert "bucket 'no-such-bucket' does not exist" in r.stderr, r


def test_refused_credentials_are_one_clear_line(s3_project, monkeypatch):
    from s3fixtures import MotoS3

    strict = MotoS3(check_credentials=True)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", strict.endpoint)
        t0 = time.perf_counter()
        r = medallion("run", "all", "-C", s3_project)
        assert time.perf_counter() - t0 < 30  # access denied is not retried
    finally:
        strict.stop()
    assert r.exit_code == ExitCode.RUN_FAILED, r
    assert f"access to bucket 'lake-bucket' at {strict.endpoint} was denied" in r.stderr, r
    assert "AWS_SECRET_ACCESS_KEY" in r.stderr and SECRET not in r.stderr and "Traceback" not in r.stderr


def test_transient_503s_are_retried(s3_project, s3, monkeypatch):
    proxy = FaultProxy(s3.endpoint, fail_first=6)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        r = medallion("run", "all", "-C", s3_project, "--json")
        assert r.exit_code == 0, r
        stats = proxy.stats()
        assert stats["failed"] == 6 and stats["seen"] > 6
        assert json.loads(r.stdout)["storage_retries"] >= 1  # some reached medallion's own retry loop
    finally:
        proxy.stop()
    assert pl.read_delta(f"{LAKE}/silver_events", storage_options=options(s3)).height == 86


def test_faults_beyond_the_budget_fail_cleanly_with_nothing_half_written(s3_project, s3, monkeypatch):
    assert medallion("run", "all", "-C", s3_project, "-q").exit_code == 0
    versions = {t: DeltaTable(f"{LAKE}/{t}", storage_options=options(s3)).version() for t in ("bronze_events", "silver_events")}
    cfg = s3_project / "conf" / "project.yml"
    cfg.write_text(cfg.read_text().replace("budget_s: 45", "budget_s: 4"))
    add_landing_file(s3_project, "more.csv")
    proxy = FaultProxy(s3.endpoint, fail_first=10**6)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        t0 = time.perf_counter()
        r = medallion("run", "all", "-C", s3_project)
        assert time.perf_counter() - t0 < 60
    finally:
        proxy.stop()
    assert r.exit_code == ExitCode.RUN_FAILED, r
    assert "Traceback" not in r.stderr and r.stderr.count("error:") == 1
    for table, version in versions.items():
        assert DeltaTable(f"{LAKE}/{table}", storage_options=options(s3)).version() == version


def test_concurrent_appenders_lose_no_rows(s3):
    code = """
import polars as pl
from medallion_cli.materialize import write
from medallion_cli.project import TargetConfig
from medallion_cli.storage import Storage
storage = Storage.resolve()
for i in range(8):
    df = pl.DataFrame({"writer": [WRITER] * 5, "i": [i] * 5})
    write(df, "s3://lake-bucket/concurrent", TargetConfig(table="concurrent", mode="append"), metadata={}, storage=storage)
print(storage.retries)
"""
    procs = [subprocess.Popen([sys.executable, "-c", code.replace("WRITER", str(w))], env=os.environ.copy(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in (1, 2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    df = pl.read_delta("s3://lake-bucket/concurrent", storage_options=options(s3))
    assert df.height == 80 and df.group_by("writer").len().sort("writer")["len"].to_list() == [40, 40]
