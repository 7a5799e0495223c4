"""Bad input: one clear line, a documented exit code, no traceback, nothing lost."""

from __future__ import annotations

import pytest
from deltalake import DeltaTable

from conftest import add_landing_file, medallion
from medallion_cli.errors import ExitCode


def versions(project) -> dict[str, int | None]:
    out = {}
    for name in ("bronze_events", "silver_events", "gold_daily_sales"):
        uri = str(project / "lake" / name)
        out[name] = DeltaTable(uri).version() if DeltaTable.is_deltatable(uri) else None
    return out


def assert_clean_error(r, code: ExitCode, *fragments: str) -> None:
    assert r.exit_code == code, r
    assert "Traceback" not in r.stderr, r
    for fragment in fragments:
        assert fragment in r.stderr, r
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r  # one line saying what is wrong (a hint line may follow)


def test_unknown_layer(project):
    r = medallion("run", "platinum", "-C", project)
    assert_clean_error(r, ExitCode.USAGE, "unknown table or layer 'platinum'", "bronze, silver, gold")


def test_malformed_yaml_names_file_and_line(project):
    cfg = project / "conf" / "pipelines" / "silver_events.yml"
    cfg.write_text(cfg.read_text() + "  broken: [unclosed\n")
    r = medallion("run", "all", "-C", project)
    assert_clean_error(r, ExitCode.USAGE, "silver_events.yml", "invalid YAML at line")
    assert not (project / "lake").exists()  # nothing ran


def test_missing_landing_dir(project):
    (project / "data" / "landing" / "events").rename(project / "data" / "elsewhere")
    r = medallion("run", "bronze", "-C", project)
    assert_clean_error(r, ExitCode.USAGE, "landing folder", "does not exist")


def test_missing_project(tmp_path):
    r = medallion("run", "all", "-C", tmp_path)
    assert_clean_error(r, ExitCode.USAGE, "no medallion project found", "medallion init")


def test_upstream_table_missing(project):
    r = medallion("run", "silver", "-C", project)
    assert_clean_error(r, ExitCode.USAGE, "'bronze_events' does not exist yet")


def test_unknown_set_key_names_known_ones(project):
    r = medallion("run", "gold", "-C", project, "--set", "rolling_window=3")
    assert_clean_error(r, ExitCode.USAGE, "unknown --set key 'rolling_window'", "rolling_window_days")


@pytest.mark.parametrize("value", ["0", "big", "-3"])
def test_bad_target_file_size(project, value):
    r = medallion("run", "gold", "-C", project, "--set", f"target_file_size_mb={value}")
    assert_clean_error(r, ExitCode.USAGE, "target_file_size_mb")


def test_set_needs_key_value(project):
    r = medallion("run", "gold", "-C", project, "--set", "novalue")
    assert_clean_error(r, ExitCode.USAGE, "is not KEY=VALUE")


@pytest.mark.parametrize("executor", ["ray", "dask", "local"])
def test_unknown_executor_is_refused(project, executor):
    r = medallion("run", "all", "-C", project, "--executor", executor)
    assert_clean_error(r, ExitCode.USAGE, f"unknown executor '{executor}'")


def test_legacy_retry_key_is_refused_before_flowerpower_rewrites_the_file(project):
    cfg = project / "conf" / "pipelines" / "gold_daily_sales.yml"
    text = cfg.read_text().replace("  retry:\n    max_retries: 0\n", "  max_retries: 0\n")
    cfg.write_text(text)
    r = medallion("run", "all", "-C", project)
    assert_clean_error(r, ExitCode.USAGE, "run.max_retries", "run.retry")
    assert cfg.read_text() == text


def test_pipeline_exception_stops_later_layers_and_writes_nothing(ran_project):
    add_landing_file(ran_project, "more.csv")
    before = versions(ran_project)
    module = ran_project / "pipelines" / "silver_events.py"
    module.write_text(module.read_text().replace(
        '    return normalized_events.select', '    raise ValueError("boom in silver")\n    return normalized_events.select'
    ))
    r = medallion("run", "all", "-C", ran_project)
    assert_clean_error(r, ExitCode.RUN_FAILED, "layer 'silver_events' failed: ValueError: boom in silver", "pipelines/silver_events.py:")
    after = versions(ran_project)
    assert after["bronze_events"] == before["bronze_events"] + 1  # bronze ran before the failure
    assert after["silver_events"] == before["silver_events"]
    assert after["gold_daily_sales"] == before["gold_daily_sales"]
    assert "gold" not in r.stderr.split("boom")[0].split("silver")[-1]
    assert "run gold_daily_sales" not in r.stderr and "skipped gold_daily_sales" in r.stderr


def test_pipeline_failure_fails_fast_without_retries(ran_project):
    calls = ran_project / "calls.txt"
    module = ran_project / "pipelines" / "gold_daily_sales.py"
    module.write_text(module.read_text() + (
        "\n\ndef gold_daily_sales(daily_sales: pl.LazyFrame) -> pl.LazyFrame:\n"
        f"    with open({str(calls)!r}, 'a') as f:\n        f.write('call\\n')\n"
        "    raise RuntimeError('x')\n"
    ))
    r = medallion("run", "gold", "-C", ran_project, "--json", "--full-refresh", "--yes")
    assert r.exit_code == ExitCode.RUN_FAILED, r
    # FlowerPower's default would run the DAG 3 more times (with delays) on any exception.
    assert calls.read_text().splitlines() == ["call"]
    import json

    doc = json.loads(r.stdout)
    gold = {l["table"]: l for l in doc["layers"]}["gold_daily_sales"]
    assert doc["status"] == "failed" and gold["status"] == "failed"
    assert "RuntimeError: x" in gold["error"]
    assert doc["error"]["exit_code"] == 1


def test_debug_shows_the_traceback(ran_project):
    module = ran_project / "pipelines" / "gold_daily_sales.py"
    module.write_text(module.read_text().replace('    """Total amount', '    1 / 0\n    """Total amount'))
    r = medallion("run", "gold", "-C", ran_project, "--debug", "--full-refresh", "--yes")
    assert r.exit_code == ExitCode.RUN_FAILED
    assert "Traceback" in r.stderr and "ZeroDivisionError" in r.stderr


def test_lossy_type_change_is_refused_and_table_untouched(ran_project):
    before = versions(ran_project)
    module = ran_project / "pipelines" / "gold_daily_sales.py"
    module.write_text(module.read_text().replace(
        'pl.len().cast(pl.Int64).alias("transaction_count")', 'pl.len().cast(pl.Float64).alias("transaction_count")'
    ))
    add_landing_file(ran_project, "more.csv")
    r = medallion("run", "all", "-C", ran_project)
    assert_clean_error(r, ExitCode.RUN_FAILED, "column 'transaction_count' of gold_daily_sales is Int64 but the output is Float64")
    after = versions(ran_project)
    assert after["gold_daily_sales"] == before["gold_daily_sales"]
    # An explicit full refresh rebuilds the table with the new type.
    r = medallion("run", "gold", "-C", ran_project, "--full-refresh", "--yes")
    assert r.exit_code == 0, r


def test_output_node_must_return_a_frame(ran_project):
    module = ran_project / "pipelines" / "gold_daily_sales.py"
    module.write_text(module.read_text() + "\n\ndef gold_daily_sales(daily_sales: pl.LazyFrame) -> int:\n    return 3\n")
    r = medallion("run", "gold", "-C", ran_project, "--full-refresh", "--yes")
    assert_clean_error(r, ExitCode.RUN_FAILED, "returned int, not a polars frame")


def test_no_layers_named(project):
    r = medallion("run", "-C", project)
    assert r.exit_code == ExitCode.USAGE
    assert "Missing argument" in r.stderr


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("bad.parquet", b"garbage", "parquet"),
        ("bad.csv", b"event_id,user_id,event_type,amount,event_date,updated_at,region\nx,1,click,abc,2024-01-01,2024-01-01T00:00:00Z,north\n", "column amount has value(s) that do not convert to float64"),
        ("short.csv", b"event_id,user_id\nx,1\n", "event_type"),
        ("bad.jsonl", b'{"event_id": "x", "user_id": "not a number"}\n', "bad.jsonl"),
    ],
)
def test_unreadable_landing_file_is_named_and_nothing_is_written(project, name, content, reason):
    (project / "data" / "landing" / "events" / name).write_bytes(content)
    r = medallion("run", "all", "-C", project)
    assert_clean_error(r, ExitCode.RUN_FAILED, f"landing file {name} cannot be read", reason, "fix or remove the file")
    # Nothing of the events chain is written; the independent customers feed still runs.
    assert versions(project) == {"bronze_events": None, "silver_events": None, "gold_daily_sales": None}
    assert not (project / "lake" / "bronze_events").exists()
    assert not (project / "lake" / "gold_sales_by_segment").exists()
