"""Errors a user can act on (issue 9): one line, the documented exit code, no traceback."""

from __future__ import annotations

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
