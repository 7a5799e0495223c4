"""The command line as a whole: help, startup cost, documented exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import medallion
from medallion_cli.cli.app import app
from medallion_cli.errors import ExitCode

HEAVY = ("polars", "deltalake", "duckdb", "pandera", "flowerpower", "hamilton", "pyarrow", "pandas", "s3fs")


def commands() -> list[tuple[str, ...]]:
    """Every leaf command as its argv path, e.g. ("watermark", "show")."""
    import typer.main

    def walk(group, prefix):
        for name, cmd in sorted(group.commands.items()):
            if hasattr(cmd, "commands"):
                yield from walk(cmd, (*prefix, name))
            else:
                yield (*prefix, name)

    return list(walk(typer.main.get_command(app), ()))


def test_every_command_has_help_with_an_example():
    assert ("init",) in commands() and ("watermark", "repair") in commands()
    for path in commands():
        r = medallion(*path, "--help")
        assert r.exit_code == 0, r
        assert "Example:" in r.stdout, path
    for path in {p[:1] for p in commands()}:
        assert "Exit codes:" in medallion(*path, "--help").stdout, path


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["init", "--help"], ["--version"]])
def test_help_does_not_import_heavy_libraries(argv):
    code = (
        "import sys\n"
        "from medallion_cli.cli.app import main\n"
        f"sys.argv = ['medallion', *{argv!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "HEAVY=", p.stdout


def test_exit_codes_are_documented_in_readme_and_help():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    help_text = medallion("--help").stdout
    for code in ExitCode:
        assert f"| {int(code)} |" in readme, code
        assert f"{int(code)} " in help_text, code


def test_version():
    from medallion_cli import __version__

    r = medallion("--version")
    assert (r.exit_code, r.stdout.strip()) == (0, f"medallion {__version__}")


def test_run_json_is_the_only_thing_on_stdout(ran_project):
    r = medallion("run", "gold", "-C", ran_project, "--json")
    assert r.exit_code == 0, r
    doc = json.loads(r.stdout)
    assert set(doc) == {"run_id", "project", "started_at", "status", "duration_s", "medallion_version", "layers",
                        "storage_retries", "succeeded", "failed", "skipped",
                        # the run record's (issue 12): `run --json` prints what `runs show --json` prints
                        "schema_version", "command", "command_line", "exit_code", "ended_at", "user", "host", "pid",
                        "retry_of", "selection", "tables", "not_finished", "error"}
    assert set(doc["layers"][0]) == {
        "layer", "table", "table_uri", "mode", "status", "rows_in", "rows_out", "version", "operation",
        "duration_s", "metrics", "source_files", "warnings", "error", "kind", "window", "watermark_before",
        "watermark_after", "files_skipped", "quality", "attempts",
    }
    assert doc["started_at"].endswith("Z")


def test_project_is_found_from_a_subdirectory(ran_project, monkeypatch):
    monkeypatch.chdir(ran_project / "pipelines")
    r = medallion("run", "gold", "-q")
    assert r.exit_code == 0, r


def test_failed_run_in_a_real_process_prints_no_library_noise(ran_project):
    """loguru and Hamilton write to the process's own stderr: check it in a subprocess."""
    module = ran_project / "pipelines" / "gold_daily_sales.py"
    module.write_text(module.read_text().replace('    """Total amount', '    1 / 0\n    """Total amount'))
    p = subprocess.run(
        [sys.executable, "-m", "medallion_cli", "run", "gold", "-C", str(ran_project), "--full-refresh", "--yes", "-q"],
        capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == ExitCode.RUN_FAILED, p.stderr
    assert p.stdout == ""
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: layer 'gold_daily_sales' failed: ZeroDivisionError: division by zero",
        "  hint: see pipelines/gold_daily_sales.py:7 in daily_sales; run with --debug for the traceback",
    ], p.stderr
