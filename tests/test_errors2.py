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
