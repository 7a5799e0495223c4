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
    r = medallion("-C", ran_project, "show", "silver", "--limit", "1")
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
    (["show", "silver", "--as-of", "0001-01-01T00:00+01:00"], ("out of range", "1900-01-01")),
])
def test_times_out_of_range_are_usage_errors(ran_project, args, fragments):
    before = versions(ran_project)
    r = medallion(*args, "-C", ran_project)
    assert_clean_error(r, ExitCode.USAGE, *fragments)
    assert versions(ran_project) == before


@pytest.mark.parametrize("pair, fragment", [
    ("rolling_window_days=abc", "--set rolling_window_days='abc': layer 'gold' expects int, got str"),
    ("sales_event_types=purchase", "layer 'gold' expects list[str], got str"),
    ("amount_decimals=[1, 2]", "--set amount_decimals=[1, 2]: layer 'silver' expects int, got list"),
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
    cfg = ran_project / "conf" / "pipelines" / "silver.yml"
    cfg.write_text(cfg.read_text().replace("amount_decimals: 2", "amount_decimals: two"))
    r = medallion("run", "silver", "-C", ran_project, "--full-refresh", "--yes")
    assert_clean_error(r, ExitCode.RUN_FAILED, "Type requirement mismatch. Expected amount_decimals:<class 'int'> got two")


@pytest.mark.parametrize("code", ["3", "0", "None", "'bye'"])
def test_sys_exit_in_a_pipeline_is_a_pipeline_failure(ran_project, code):
    before = versions(ran_project)
    module = ran_project / "pipelines" / "gold.py"
    module.write_text(module.read_text().replace('    """Total amount', f'    import sys\n    sys.exit({code})\n    """Total amount'))
    r = medallion("run", "gold", "-C", ran_project, "--full-refresh", "--yes")
    assert_clean_error(r, ExitCode.RUN_FAILED, f"layer 'gold' failed: the pipeline called sys.exit({code})",
                       "pipelines/gold.py:")
    assert versions(ran_project) == before


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, text
    path.write_text(text.replace(old, new))


def test_keys_and_partition_by_may_be_one_column_as_a_string(project):
    from deltalake import DeltaTable

    _edit(project / "conf" / "pipelines" / "silver.yml", "keys: [event_id]", "keys: event_id")
    _edit(project / "conf" / "pipelines" / "gold.yml", "    mode: overwrite\n", "    mode: overwrite\n    partition_by: event_date\n")
    for _ in range(2):
        r = medallion("run", "all", "-C", project, "--quiet")
        assert r.exit_code == 0, r
    assert DeltaTable(str(project / "lake" / "gold_daily_sales")).metadata().partition_columns == ["event_date"]
    r = medallion("check", "-C", project, "--json")
    assert r.exit_code == 0, r
    assert "keys: event_id" in r.stdout and "partition_by: event_date" in r.stdout


def test_a_comma_separated_string_is_refused_clearly(project):
    _edit(project / "conf" / "pipelines" / "silver.yml", "keys: [event_id]", "keys: event_id, user_id")
    r = medallion("run", "all", "-C", project)
    assert_clean_error(r, ExitCode.USAGE, "medallion.target.keys: 'event_id, user_id' is not a valid column name", "YAML list")


def test_order_by_naming_a_missing_column_is_a_config_error(project):
    _edit(project / "conf" / "pipelines" / "silver.yml", "order_by: updated_at", "order_by: nosuch")
    r = medallion("run", "all", "-C", project)  # first run: found in the output, before silver writes
    assert_clean_error(r, ExitCode.USAGE, "silver.yml", "order_by of layer 'silver' names column 'nosuch'")
    assert versions(project)["silver_events"] is None
    _edit(project / "conf" / "pipelines" / "silver.yml", "order_by: nosuch", "order_by: updated_at")
    assert medallion("run", "all", "-C", project, "-q").exit_code == 0
    before = versions(project)
    _edit(project / "conf" / "pipelines" / "silver.yml", "order_by: updated_at", "order_by: nosuch")
    r = medallion("run", "all", "-C", project)  # table exists: refused before any layer runs
    assert_clean_error(r, ExitCode.USAGE, "names column 'nosuch'", "nor does table silver_events")
    assert versions(project) == before


def test_check_finds_key_partition_and_order_columns_the_output_lacks(project):
    _edit(project / "conf" / "pipelines" / "silver.yml", "keys: [event_id]", "keys: [event_id, nokey]")
    _edit(project / "conf" / "pipelines" / "silver.yml", "order_by: updated_at", "order_by: noorder")
    _edit(project / "conf" / "pipelines" / "gold.yml", "    mode: overwrite\n", "    mode: overwrite\n    partition_by: nopart\n")
    r = medallion("check", "-C", project, "--json")
    assert r.exit_code == ExitCode.USAGE, r
    failed = {c["layer"]: c["message"] for c in json.loads(r.stdout)["checks"] if not c["ok"]}
    assert set(failed) == {"silver", "gold"}, failed
    assert "keys of layer 'silver' names column 'nokey'" in failed["silver"]
    assert "partition_by of layer 'gold' names column 'nopart'" in failed["gold"]
    _edit(project / "conf" / "pipelines" / "silver.yml", "keys: [event_id, nokey]", "keys: [event_id]")
    r = medallion("check", "-C", project, "--json")
    failed = {c["layer"]: c["message"] for c in json.loads(r.stdout)["checks"] if not c["ok"]}
    assert "order_by of layer 'silver' names column 'noorder'" in failed["silver"]


def test_a_layer_listed_twice_is_named(project):
    _edit(project / "conf" / "project.yml", "layers: [bronze, silver, gold]", "layers: [bronze, silver, silver, gold]")
    for args in (["run", "all"], ["check"]):
        r = medallion(*args, "-C", project)
        assert_clean_error(r, ExitCode.USAGE, "layer 'silver' is listed more than once in medallion.layers")


def test_two_layers_writing_one_table_are_named(project):
    import shutil

    shutil.copy(project / "conf" / "pipelines" / "gold.yml", project / "conf" / "pipelines" / "gold2.yml")
    shutil.copy(project / "pipelines" / "gold.py", project / "pipelines" / "gold2.py")
    _edit(project / "conf" / "project.yml", "layers: [bronze, silver, gold]", "layers: [bronze, silver, gold, gold2]")
    for args in (["run", "all"], ["check"]):
        r = medallion(*args, "-C", project)
        assert_clean_error(r, ExitCode.USAGE, "layers 'gold' and 'gold2' both write table 'gold_daily_sales'")
