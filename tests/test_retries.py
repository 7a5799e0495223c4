"""Retries: the object-store retry (tenacity) and a pipeline's node-level `medallion.retry`."""

from __future__ import annotations

import json

import pytest
from deltalake import DeltaTable

from conftest import medallion
from medallion_cli.errors import ExitCode, MedallionError
from medallion_cli.storage import RetryPolicy, Storage, StorageError

# -- storage retries ----------------------------------------------------------------------------


class Flaky:
    """Fails ``failures`` times with ``exc``, then returns ``"ok"``; counts its calls."""

    def __init__(self, failures: int, exc: BaseException) -> None:
        self.failures, self.exc, self.calls = failures, exc, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"


FAST = RetryPolicy(max_attempts=4, initial_delay_s=0.01, max_delay_s=0.02, budget_s=10)


def test_storage_retries_transient_faults_and_counts_them():
    storage = Storage(retry=FAST)
    fn = Flaky(3, ConnectionError("connection reset by peer"))
    assert storage.call(fn, what="reading x") == "ok"
    assert fn.calls == 4 and storage.retries == 3


@pytest.mark.parametrize("code", ["SlowDown", "ServiceUnavailable", "InternalError", "503", "500"])
def test_s3fs_throttling_and_server_errors_are_transient(code):
    """s3fs turns these S3 replies into OSError(EBUSY or EREMOTEIO, the server's message),
    whose text names no status: they are retried all the same (a Ray worker's unit file
    PUT that got SlowDown used to fail the run as "unexpected OSError")."""
    from botocore.exceptions import ClientError
    from s3fs.errors import translate_boto_error

    from medallion_cli.storage import is_transient

    reply = {"Error": {"Code": code, "Message": "Please reduce your request rate."}}
    exc = translate_boto_error(ClientError(reply, "PutObject"))
    assert isinstance(exc, OSError) and is_transient(exc), repr(exc)
    storage = Storage(retry=FAST)
    fn = Flaky(2, exc)
    assert storage.call(fn, what="writing x") == "ok" and storage.retries == 2
    denied = translate_boto_error(ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject"))
    assert not is_transient(denied)


def test_storage_gives_up_after_max_attempts():
    storage = Storage(retry=FAST)
    fn = Flaky(10, OSError("HTTP status 503 Service Unavailable"))
    with pytest.raises(StorageError, match=r"reading x failed after 4 attempt\(s\)"):
        storage.call(fn, what="reading x")
    assert fn.calls == 4 and storage.retries == 3


def test_storage_stops_before_the_budget_is_spent(monkeypatch):
    import time

    slept: list[float] = []
    real_sleep = time.sleep

    def recording_sleep(seconds: float) -> None:
        slept.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", recording_sleep)
    storage = Storage(retry=RetryPolicy(max_attempts=50, initial_delay_s=0.2, max_delay_s=0.2, budget_s=0.5))
    fn = Flaky(100, TimeoutError("timed out"))
    with pytest.raises(StorageError):
        storage.call(fn, what="reading x")
    # waits are 0.1-0.2 s (jitter): at most 0.5/0.1 of them fit, and their sum never reaches the
    # budget, however slow the machine (the stop rule counts elapsed time plus the next wait)
    assert 2 <= fn.calls <= 6 and len(slept) == fn.calls - 1
    assert all(0.1 <= s <= 0.2 for s in slept) and sum(slept) < 0.5


@pytest.mark.parametrize("exc", [ValueError("schema mismatch"), PermissionError("access denied"),
                                 MedallionError("refused by medallion")])
def test_storage_does_not_retry_deterministic_errors(exc):
    storage = Storage(retry=FAST)
    fn = Flaky(10, exc)
    with pytest.raises(type(exc)):
        storage.call(fn, what="reading x")
    assert fn.calls == 1 and storage.retries == 0


def test_a_write_that_landed_is_not_retried():
    storage = Storage(retry=FAST)
    fn = Flaky(10, ConnectionError("connection reset by peer"))
    assert storage.call(fn, what="writing x", done=lambda: True) is None
    assert fn.calls == 1 and storage.recovered == 1 and storage.retries == 0


# -- node-level retries of a pipeline's DAG ---------------------------------------------------

RETRY_YAML = """
  retry:
    max_attempts: {attempts}
    initial_delay_s: 0.01
    max_delay_s: 0.05
    retry_exceptions: {names}
"""


def flaky_bronze(project, calls, raises: list[str]) -> None:
    """bronze_events raises ``raises[i]`` on call i (counted in ``calls``), then succeeds."""
    module = project / "pipelines" / "bronze_events.py"
    module.write_text(module.read_text().replace(
        "    return landing.with_columns(",
        f"    import pathlib\n"
        f"    calls = pathlib.Path({str(calls)!r})\n"
        f"    n = len(calls.read_text().splitlines()) if calls.exists() else 0\n"
        f"    calls.write_text('call\\n' * (n + 1))\n"
        f"    raises = {raises!r}\n"
        f"    if n < len(raises):\n"
        f"        if raises[n] == 'Flaky':\n"
        f"            from hooks.flaky import Flaky\n"
        f"            raise Flaky('the API hiccuped')\n"
        f"        raise {{'ConnectionError': ConnectionError, 'ValueError': ValueError}}[raises[n]]('call %d failed' % n)\n"
        f"    return landing.with_columns(",
    ))
    (project / "hooks" / "flaky.py").write_text("class Flaky(Exception):\n    pass\n")


def set_retry(project, attempts: int, names: list[str]) -> None:
    cfg = project / "conf" / "pipelines" / "bronze_events.yml"
    cfg.write_text(cfg.read_text() + RETRY_YAML.format(attempts=attempts, names=json.dumps(names)))


def test_dag_is_retried_on_listed_exceptions_and_commits_once(project, tmp_path):
    calls = tmp_path / "calls.txt"
    flaky_bronze(project, calls, ["ConnectionError", "Flaky"])
    set_retry(project, 3, ["ConnectionError", "hooks.flaky.Flaky"])
    r = medallion("run", "bronze_events", "-C", project, "--json")
    assert r.exit_code == 0, r
    assert len(calls.read_text().splitlines()) == 3
    [layer] = json.loads(r.stdout)["layers"]
    assert layer["status"] == "written" and layer["attempts"] == 3
    assert any("attempt 1 of 3 failed (ConnectionError: call 0 failed)" in w for w in layer["warnings"])
    assert any("attempt 2 of 3 failed (Flaky: the API hiccuped)" in w for w in layer["warnings"])
    dt = DeltaTable(str(project / "lake" / "bronze_events"))
    assert dt.version() == 0 and dt.to_pyarrow_table().num_rows == layer["rows_out"]


def test_runs_show_reports_node_retries(project, tmp_path):
    """The recorded run says how many times each table's DAG ran, in JSON and for people."""
    calls = tmp_path / "calls.txt"
    flaky_bronze(project, calls, ["ConnectionError"])
    set_retry(project, 3, ["ConnectionError"])
    r = medallion("run", "bronze_events", "-C", project, "--quiet")
    assert r.exit_code == 0, r
    doc = medallion("runs", "show", "-C", project, "--json")
    [layer] = json.loads(doc.stdout)["layers"]
    assert layer["attempts"] == 2
    assert any("attempt 1 of 3 failed (ConnectionError: call 0 failed)" in w for w in layer["warnings"])
    shown = medallion("runs", "show", "-C", project)
    assert shown.exit_code == 0, shown
    header = next(line for line in shown.stdout.splitlines() if line.startswith("table "))
    assert "attempts" in header
    row = next(line for line in shown.stdout.splitlines() if line.lstrip().startswith("bronze_events"))
    at = header.index("attempts")
    assert row[at:at + len("attempts")].strip() == "2", shown.stdout


def test_an_exception_not_listed_is_not_retried(project, tmp_path):
    calls = tmp_path / "calls.txt"
    flaky_bronze(project, calls, ["ValueError"])
    set_retry(project, 5, ["ConnectionError"])
    r = medallion("run", "bronze_events", "-C", project, "--json")
    assert r.exit_code == ExitCode.RUN_FAILED, r
    assert len(calls.read_text().splitlines()) == 1
    [layer] = json.loads(r.stdout)["layers"]
    assert layer["status"] == "failed" and layer["attempts"] == 1
    assert "ValueError: call 0 failed" in r.stderr and "attempts" not in r.stderr.split("error:")[1]


def test_retries_run_out(project, tmp_path):
    calls = tmp_path / "calls.txt"
    flaky_bronze(project, calls, ["ConnectionError"] * 5)
    set_retry(project, 2, ["ConnectionError"])
    r = medallion("run", "bronze_events", "-C", project, "--json")
    assert r.exit_code == ExitCode.RUN_FAILED, r
    assert len(calls.read_text().splitlines()) == 2
    assert "layer 'bronze_events' failed after 2 attempts: ConnectionError: call 1 failed" in r.stderr
    assert json.loads(r.stdout)["layers"][0]["attempts"] == 2
    assert not (project / "lake" / "bronze_events" / "_delta_log").exists()


def test_no_retries_by_default(project, tmp_path):
    calls = tmp_path / "calls.txt"
    flaky_bronze(project, calls, ["ConnectionError"])
    r = medallion("run", "+gold_daily_sales", "-C", project, "--json")
    assert r.exit_code == ExitCode.RUN_FAILED, r
    assert len(calls.read_text().splitlines()) == 1
    doc = json.loads(r.stdout)
    assert [(x["table"], x["attempts"]) for x in doc["layers"]] == [
        ("bronze_events", 1), ("silver_events", 0), ("gold_daily_sales", 0)]  # the others were skipped
    r = medallion("run", "+gold_daily_sales", "-C", project, "--json")  # the second call succeeds
    assert r.exit_code == 0, r
    assert [x["attempts"] for x in json.loads(r.stdout)["layers"]] == [1, 1, 1]


@pytest.mark.parametrize("retry, message", [
    ("  retry: {max_attempts: 3}\n", "retry_exceptions must list"),
    ("  retry: {max_attempts: 3, retry_exceptions: [ConnectionError], backoff: 2}\n", "unknown key 'backoff'"),
    ("  retry: {max_attempts: 0, retry_exceptions: [ConnectionError]}\n", "max_attempts >= 1"),
    ("  retry: {max_attempts: 2, retry_exceptions: [NoSuchError]}\n", "cannot find 'NoSuchError'"),
    ("  retry: {max_attempts: 2, retry_exceptions: [hooks.nothing.Here]}\n", "cannot find 'hooks.nothing.Here'"),
    ("  retry: {max_attempts: 2, retry_exceptions: [len]}\n", "'len' is not an exception class"),
])
def test_bad_retry_settings_are_refused(project, retry, message):
    cfg = project / "conf" / "pipelines" / "bronze_events.yml"
    cfg.write_text(cfg.read_text() + retry)
    r = medallion("run", "bronze_events", "-C", project)
    assert r.exit_code == ExitCode.USAGE, r
    assert message in r.stderr and "Traceback" not in r.stderr
    assert "run bronze" not in r.stderr  # refused before any table runs


def test_check_resolves_the_retry_exceptions(project):
    set_retry(project, 3, ["ConnectionError"])
    r = medallion("check", "-C", project, "--json")
    assert r.exit_code == 0, r
    [check] = [c for c in json.loads(r.stdout)["checks"] if c["check"] == "retry"]
    assert check["ok"] and check["layer"] == "bronze_events" and "ConnectionError" in check["message"]
    set_retry(project, 3, ["hooks.nothing.Flaky"])  # appended last: this one wins
    r = medallion("check", "-C", project, "--json")
    assert r.exit_code == ExitCode.USAGE, r
    [check] = [c for c in json.loads(r.stdout)["checks"] if c["check"] == "retry"]
    assert not check["ok"] and "hooks.nothing.Flaky" in check["message"]


# -- the README's CI script ---------------------------------------------------------------------

def _readme_block(heading: str, lang: str) -> str:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split(f"### {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


def test_readme_ci_workflow_runs_check_run_and_retry():
    import yaml

    steps = yaml.safe_load(_readme_block("Running from CI", "yaml"))["steps"]
    runs = [s.get("run", "") for s in steps]
    check = runs.index("medallion check")
    run = next(i for i, x in enumerate(runs) if x.startswith("medallion run all --output-json"))
    retry = next(i for i, x in enumerate(runs) if "medallion retry" in x and "medallion runs --status failed" in x)
    assert check < run < retry
    assert steps[run]["continue-on-error"] is True and steps[retry]["if"] == f"steps.{steps[run]['id']}.outcome == 'failure'"
    upload = steps[-1]
    assert upload["uses"].startswith("actions/upload-artifact@") and upload["if"] == "always()"


def test_readme_ci_script_retries_a_failed_run(project, tmp_path):
    """The README's shell script, run as written (project folder and delay aside) with a real
    `medallion` on PATH: bronze_events fails once, the retry runs what failed and was skipped."""
    import os
    import subprocess
    import sys

    marker = tmp_path / "fail-once"
    marker.touch()
    module = project / "pipelines" / "bronze_events.py"  # fails once on real data (`check` runs it on none)
    module.write_text(module.read_text().replace(
        "    return landing.with_columns(",
        f"    import pathlib\n"
        f"    marker = pathlib.Path({str(marker)!r})\n"
        f"    if marker.exists() and landing.head(1).collect().height:\n"
        f"        marker.unlink()\n"
        f"        raise ConnectionError('the feed hiccuped')\n"
        f"    return landing.with_columns(",
    ))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "medallion"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -m medallion_cli \"$@\"\n")
    exe.chmod(0o755)
    script = tmp_path / "ci.sh"
    script.write_text(_readme_block("Running from CI", "bash").replace("cd /srv/shop", f"cd {project}"))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RETRY_DELAY": "0",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    p = subprocess.run(["sh", str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    run, retry = (json.loads((project / name).read_text()) for name in ("run.json", "retry.json"))
    assert run["status"] == "failed" and run["failed"] == ["bronze_events"]
    assert set(run["skipped"]) == {"silver_events", "gold_daily_sales", "gold_sales_by_segment"}
    assert retry["status"] == "succeeded" and retry["retry_of"] == run["run_id"]
    assert set(retry["tables"]) == {"bronze_events", "silver_events", "gold_daily_sales", "gold_sales_by_segment"}
    assert run["run_id"] in p.stderr  # `runs --status failed` listed the failed run
