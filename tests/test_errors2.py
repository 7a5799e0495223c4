"""Errors a user can act on (issue 9): one line, the documented exit code, no traceback."""

from __future__ import annotations

import json

import pytest

from conftest import medallion
from medallion_cli.errors import ExitCode
from test_errors import assert_clean_error, versions


def test_project_and_debug_before_the_command(ran_project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = medallion("-C", ran_project, "tables", "--json")
    assert r.exit_code == 0, r
    assert "silver_events" in r.stdout
    r = medallion("-C", ran_project, "show", "silver_events", "--limit", "1")
    assert r.exit_code == 0, r
    r = medallion("--project", ran_project, "--debug", "run", "platinum")
    assert r.exit_code == ExitCode.USAGE, r
    assert "Traceback" in r.stderr  # --debug before the command counts too
    # the command's own -C still wins
    r = medallion("-C", tmp_path, "tables", "-C", ran_project)
    assert r.exit_code == 0, r


@pytest.mark.parametrize("args, fragments", [
    (["run", "gold", "--until", "0001-01-01"], ("--until: '0001-01-01' is out of range", "1900-01-01")),
    (["run", "silver", "--since", "99999999 days ago"], ("--since: '99999999 days ago' is too far in the past", "1900-01-01")),
    (["run", "silver", "--since", "999999999999 days ago"], ("too long a duration",)),
    (["show", "silver_events", "--as-of", "0001-01-01T00:00+01:00"], ("out of range", "1900-01-01")),
])
def test_times_out_of_range_are_usage_errors(ran_project, args, fragments):
    before = versions(ran_project)
    r = medallion(*args, "-C", ran_project)
    assert_clean_error(r, ExitCode.USAGE, *fragments)
    assert versions(ran_project) == before


@pytest.mark.parametrize("pair, fragment", [
    ("rolling_window_days=abc", "--set rolling_window_days='abc': layer 'gold_daily_sales' expects int, got str"),
    ("sales_event_types=purchase", "layer 'gold_daily_sales' expects list[str], got str"),
    ("amount_decimals=[1, 2]", "--set amount_decimals=[1, 2]: layer 'silver_events' expects int, got list"),
])
def test_bad_set_values_are_found_before_any_layer_runs(project, pair, fragment):
    r = medallion("run", "all", "-C", project, "--set", pair)
    assert_clean_error(r, ExitCode.USAGE, fragment)
    assert versions(project) == {"bronze_events": None, "silver_events": None, "gold_daily_sales": None}


def test_a_good_set_value_still_runs(project):
    r = medallion("run", "all", "-C", project, "--quiet", "--set", "sales_event_types=[purchase, refund]",
                  "--set", "amount_decimals=3", "--set", "rolling_window_days=14")
    assert r.exit_code == 0, r


def test_hamilton_type_error_shows_the_real_reason(ran_project):
    cfg = ran_project / "conf" / "pipelines" / "silver_events.yml"
    cfg.write_text(cfg.read_text().replace("amount_decimals: 2", "amount_decimals: two"))
    r = medallion("run", "silver", "-C", ran_project, "--full-refresh", "--yes")
    assert_clean_error(r, ExitCode.RUN_FAILED, "Type requirement mismatch. Expected amount_decimals:<class 'int'> got two")


@pytest.mark.parametrize("code", ["3", "0", "None", "'bye'"])
def test_sys_exit_in_a_pipeline_is_a_pipeline_failure(ran_project, code):
    before = versions(ran_project)
    module = ran_project / "pipelines" / "gold_daily_sales.py"
    module.write_text(module.read_text().replace('    """Total amount', f'    import sys\n    sys.exit({code})\n    """Total amount'))
    r = medallion("run", "gold_daily_sales", "-C", ran_project, "--full-refresh", "--yes")
    assert_clean_error(r, ExitCode.RUN_FAILED, f"layer 'gold_daily_sales' failed: the pipeline called sys.exit({code})",
                       "pipelines/gold_daily_sales.py:")
    assert versions(ran_project) == before


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, text
    path.write_text(text.replace(old, new))


def test_keys_and_partition_by_may_be_one_column_as_a_string(project):
    from deltalake import DeltaTable

    _edit(project / "conf" / "pipelines" / "silver_events.yml", "keys: [event_id]", "keys: event_id")
    _edit(project / "conf" / "pipelines" / "gold_daily_sales.yml", "    mode: overwrite\n", "    mode: overwrite\n    partition_by: event_date\n")
    for _ in range(2):
        r = medallion("run", "all", "-C", project, "--quiet")
        assert r.exit_code == 0, r
    assert DeltaTable(str(project / "lake" / "gold_daily_sales")).metadata().partition_columns == ["event_date"]
    r = medallion("check", "-C", project, "--json")
    assert r.exit_code == 0, r
    assert "keys: event_id" in r.stdout and "partition_by: event_date" in r.stdout


def test_a_comma_separated_string_is_refused_clearly(project):
    _edit(project / "conf" / "pipelines" / "silver_events.yml", "keys: [event_id]", "keys: event_id, user_id")
    r = medallion("run", "all", "-C", project)
    assert_clean_error(r, ExitCode.USAGE, "medallion.target.keys: 'event_id, user_id' is not a valid column name", "YAML list")


def test_order_by_naming_a_missing_column_is_a_config_error(project):
    _edit(project / "conf" / "pipelines" / "silver_events.yml", "order_by: [updated_at, _ingested_at, _source_file]", "order_by: nosuch")
    r = medallion("run", "all", "-C", project)  # first run: found in the output, before silver writes
    assert_clean_error(r, ExitCode.USAGE, "silver_events.yml", "order_by of layer 'silver_events' names column 'nosuch'")
    assert versions(project)["silver_events"] is None
    _edit(project / "conf" / "pipelines" / "silver_events.yml", "order_by: nosuch", "order_by: [updated_at, _ingested_at, _source_file]")
    assert medallion("run", "all", "-C", project, "-q").exit_code == 0
    before = versions(project)
    _edit(project / "conf" / "pipelines" / "silver_events.yml", "order_by: [updated_at, _ingested_at, _source_file]", "order_by: nosuch")
    r = medallion("run", "all", "-C", project)  # table exists: refused before any layer runs
    assert_clean_error(r, ExitCode.USAGE, "names column 'nosuch'", "nor does table silver_events")
    assert versions(project) == before


def test_check_finds_key_partition_and_order_columns_the_output_lacks(project):
    _edit(project / "conf" / "pipelines" / "silver_events.yml", "keys: [event_id]", "keys: [event_id, nokey]")
    _edit(project / "conf" / "pipelines" / "silver_events.yml", "order_by: [updated_at, _ingested_at, _source_file]", "order_by: noorder")
    _edit(project / "conf" / "pipelines" / "gold_daily_sales.yml", "    mode: overwrite\n", "    mode: overwrite\n    partition_by: nopart\n")
    r = medallion("check", "-C", project, "--json")
    assert r.exit_code == ExitCode.USAGE, r
    failed = {c["layer"]: c["message"] for c in json.loads(r.stdout)["checks"] if not c["ok"]}
    assert set(failed) == {"silver_events", "gold_daily_sales"}, failed
    assert "keys of layer 'silver_events' names column 'nokey'" in failed["silver_events"]
    assert "partition_by of layer 'gold_daily_sales' names column 'nopart'" in failed["gold_daily_sales"]
    _edit(project / "conf" / "pipelines" / "silver_events.yml", "keys: [event_id, nokey]", "keys: [event_id]")
    r = medallion("check", "-C", project, "--json")
    failed = {c["layer"]: c["message"] for c in json.loads(r.stdout)["checks"] if not c["ok"]}
    assert "order_by of layer 'silver_events' names column 'noorder'" in failed["silver_events"]


def test_a_layer_listed_twice_is_named(project):
    # medallion.layers is optional now (display order only); a kept list is still checked.
    _edit(project / "conf" / "project.yml", "\nmedallion:\n",
          "\nmedallion:\n  layers: [bronze_events, silver_events, silver_events, gold_daily_sales]\n")
    for args in (["run", "all"], ["check"]):
        r = medallion(*args, "-C", project)
        assert_clean_error(r, ExitCode.USAGE, "layer 'silver_events' is listed more than once in medallion.layers")


def test_two_layers_writing_one_table_are_named(project):
    import shutil

    shutil.copy(project / "conf" / "pipelines" / "gold_daily_sales.yml", project / "conf" / "pipelines" / "gold2.yml")
    shutil.copy(project / "pipelines" / "gold_daily_sales.py", project / "pipelines" / "gold2.py")
    # Pipelines are discovered from conf/pipelines/: the copy takes part without being listed.
    for args in (["run", "all"], ["check"]):
        r = medallion(*args, "-C", project)
        assert_clean_error(r, ExitCode.USAGE, "layers 'gold2' and 'gold_daily_sales' both write table 'gold_daily_sales'")


def _run_process(project, *args, preexec_fn=None, prefix=()):
    import os
    import subprocess

    from conftest import python

    return subprocess.run([*prefix, python(), "-m", "medallion_cli", *args, "-C", str(project)], capture_output=True,
                          text=True, timeout=300, preexec_fn=preexec_fn, env={**os.environ, "RUST_BACKTRACE": "1"})


def _assert_one_clean_line(p, *fragments):
    assert p.returncode == ExitCode.RUN_FAILED, p.stderr
    for noise in ("panicked", "stack backtrace", "Traceback", "bug in medallion", "RUST_BACKTRACE"):
        assert noise not in p.stderr, p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, p.stderr
    for fragment in fragments:
        assert fragment in p.stderr, p.stderr


def test_a_read_only_lake_is_one_clear_line_without_rust_panics(ran_project):
    import os
    import shutil
    import stat

    from conftest import add_landing_file

    prefix = ()
    if os.geteuid() == 0:  # root ignores file modes unless it gives up CAP_DAC_OVERRIDE
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a directory read-only")
        prefix = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner")
    add_landing_file(ran_project, "late.csv")
    before = versions(ran_project)
    lake = ran_project / "lake"
    paths = [lake, *lake.rglob("*")]
    for path in paths:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        p = _run_process(ran_project, "run", "all", prefix=prefix)
        _assert_one_clean_line(p, f"cannot access {lake}/bronze_events", "permission denied", "hint: make it writable")
        p = _run_process(ran_project, "run", "all", "--debug", prefix=prefix)  # --debug shows everything
        assert p.returncode == ExitCode.RUN_FAILED and "Traceback" in p.stderr and "panicked" in p.stderr, p.stderr
    finally:
        for path in paths:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert versions(ran_project) == before


def test_a_full_disk_or_file_size_limit_is_one_clear_line(ran_project):
    import resource
    import signal

    import polars as pl

    n = 300_000
    pl.DataFrame({
        "event_id": [f"big-{i:07d}-{i * 7919 % 1000003:x}{i * 31 % 999983:x}" for i in range(n)],
        "user_id": [i % 1000 for i in range(n)], "event_type": ["purchase"] * n,
        "amount": [float(i % 10007) / 7 for i in range(n)], "event_date": ["2024-01-03"] * n,
        "updated_at": ["2024-01-03T12:00:00Z"] * n, "region": [f"r{i * 2654435761 % 4294967296:x}" for i in range(n)],
    }).write_csv(ran_project / "data" / "landing" / "events" / "big.csv")
    before = versions(ran_project)

    def limit():  # the write fails with EFBIG, as a full disk fails with ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (6_000_000, 6_000_000))

    p = _run_process(ran_project, "run", "bronze", preexec_fn=limit)
    _assert_one_clean_line(p, "a file size limit was hit", "bronze_events")
    assert versions(ran_project) == before


@pytest.mark.parametrize("exc, fragment", [
    (OSError(28, "No space left on device", "/lake/t/part-1.parquet"), "cannot write /lake/t/part-1.parquet: the disk is full"),
    (RuntimeError("Generic LocalFileSystem error: Unable to open file /lake/t/x.parquet#1: No space left on device (os error 28)"),
     "cannot write /lake/t/x.parquet: the disk is full"),
    (RuntimeError("IO error: Read-only file system (os error 30)"), "cannot write /lake/t: the file system is read-only"),
    (OSError(122, "Disk quota exceeded"), "cannot write /lake/t: the disk quota is exhausted"),
])
def test_os_errors_are_classified(exc, fragment):
    from medallion_cli.storage import classify_os_error

    err = classify_os_error(exc, uri="/lake/t")
    assert err is not None and err.message == fragment and err.exit_code == ExitCode.RUN_FAILED
    assert classify_os_error(RuntimeError("division by zero")) is None


def test_sys_exit_at_import_of_a_pipeline_module_is_reported_by_check(project):
    module = project / "pipelines" / "gold_daily_sales.py"
    module.write_text("import sys\nsys.exit(3)\n" + module.read_text())
    r = medallion("check", "-C", project, "--json")
    assert r.exit_code == ExitCode.USAGE, r
    failed = {c["layer"]: c["message"] for c in json.loads(r.stdout)["checks"] if not c["ok"]}
    assert failed == {"gold_daily_sales": "gold_daily_sales.py fails to import: SystemExit: 3"}, failed
    r = medallion("run", "all", "-C", project, "--set", "rolling_window_days=3")
    assert_clean_error(r, ExitCode.RUN_FAILED, "sys.exit(3)")
