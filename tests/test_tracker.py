"""The Hamilton UI tracker (`medallion.tracker` in conf/project.yml): each table's DAG run is
sent to a real Hamilton UI server on 127.0.0.1 (started here when `apache-hamilton-ui` is
installed); an unreachable or silent server and a missing SDK fail before any table runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import medallion

USER = "ci@example.com"
HEADERS = {"x-api-user": USER, "x-api-key": "unused", "Content-Type": "application/json"}


def configure(project: Path, tracker: dict) -> None:
    path = project / "conf" / "project.yml"
    data = yaml.safe_load(path.read_text())
    data["medallion"]["tracker"] = tracker
    path.write_text(yaml.safe_dump(data))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(url: str, method: str = "GET", body: dict | None = None):
    request = urllib.request.Request(url, method=method, headers=HEADERS,
                                     data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


SERVE = textwrap.dedent("""
    import os, sys
    import hamilton_ui
    from django.core.management import execute_from_command_line
    port, base = sys.argv[1], sys.argv[2]
    for sub in ("blobs", "db"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    os.environ["HAMILTON_BASE_DIR"] = base
    sys.path.insert(0, hamilton_ui.__path__[0])
    execute_from_command_line(["manage.py", "migrate", "--settings=server.settings_mini", "-v", "0"])
    execute_from_command_line(["manage.py", "runserver", "--settings=server.settings_mini",
                               f"127.0.0.1:{port}", "--noreload", "--insecure"])
""")


@pytest.fixture(scope="module")
def hamilton_ui(tmp_path_factory):
    """`hamilton ui` (Django, SQLite under a temporary HOME), bound to 127.0.0.1 only."""
    pytest.importorskip("hamilton_ui", reason="the Hamilton UI server (pip install apache-hamilton-ui) is not installed")
    home = tmp_path_factory.mktemp("hamilton-home")
    port = free_port()
    env = {**os.environ, "HOME": str(home)}
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(port), str(home / "db")], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            api(f"{url}/api/v1/phone_home")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the Hamilton UI did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
    project = api(f"{url}/api/v1/projects", "POST", {
        "name": "shop", "description": "medallion tests", "tags": {}, "attributes": [], "documentation": [],
        "visibility": {"user_ids_visible": [], "user_ids_writable": [USER], "team_ids_visible": [], "team_ids_writable": []},
    })
    yield url, project["id"]
    proc.terminate()
    proc.wait(10)
    log.close()


def test_run_is_tracked_in_a_real_hamilton_ui(project, hamilton_ui):
    url, project_id = hamilton_ui
    configure(project, {"project_id": project_id, "username": USER, "api_url": url, "tags": {"env": "test"}})

    r = medallion("run", "all", "-C", project, "--json")
    assert r.exit_code == 0, r
    run_id = json.loads(r.stdout)["run_id"]
    assert "Captured execution run" not in r.stderr  # the SDK's link line stays off stderr

    runs = api(f"{url}/api/v1/dag_runs/latest/?project_id={project_id}&limit=50")
    ours = [x for x in runs if x["tags"].get("medallion_run_id") == run_id]
    assert sorted(x["tags"]["table"] for x in ours) == sorted(
        ["bronze_events", "bronze_customers", "silver_events", "silver_customers", "gold_daily_sales",
         "gold_sales_by_segment"])
    assert {x["run_status"] for x in ours} == {"SUCCESS"}
    assert all(x["tags"]["env"] == "test" for x in ours)
    # no tracker client thread is left behind by the run
    assert not [t for t in threading.enumerate() if "HamiltonClient.worker" in repr(getattr(t, "_target", None))]


def test_a_failed_table_is_tracked_as_a_failure(project, hamilton_ui):
    url, project_id = hamilton_ui
    configure(project, {"project_id": project_id, "username": USER, "api_url": url})
    module = project / "pipelines" / "gold_daily_sales.py"
    module.write_text(module.read_text().replace(
        "    return daily_sales.sort(", "    raise ValueError('boom in gold')\n    return daily_sales.sort(", 1))
    r = medallion("run", "all", "-C", project, "--json")
    assert r.exit_code == 1, r
    assert r.stderr.strip().splitlines()[-2] == "error: layer 'gold_daily_sales' failed: ValueError: boom in gold"
    run_id = json.loads(r.stdout)["run_id"]
    runs = api(f"{url}/api/v1/dag_runs/latest/?project_id={project_id}&limit=50")
    status = {x["tags"]["table"]: x["run_status"] for x in runs if x["tags"].get("medallion_run_id") == run_id}
    assert status["gold_daily_sales"] == "FAILURE" and status["silver_events"] == "SUCCESS"


def test_unknown_project_id_is_a_config_error(project, hamilton_ui):
    url, _ = hamilton_ui
    configure(project, {"project_id": 999, "username": USER, "api_url": url})
    r = medallion("run", "all", "-C", project)
    assert r.exit_code == 2, r
    assert "has no project 999" in r.stderr
    assert not (project / "lake").exists() or not any((project / "lake").iterdir())


def test_unreachable_server_fails_before_any_table(project):
    port = free_port()  # nothing listens there: connection refused
    configure(project, {"project_id": 1, "username": USER, "api_url": f"http://127.0.0.1:{port}"})
    r = medallion("run", "all", "-C", project)
    assert r.exit_code == 1, r
    assert f"the Hamilton tracker at http://127.0.0.1:{port} is unreachable" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (project / "lake").exists() or not any((project / "lake").iterdir())
    runs = medallion("runs", "-C", project, "--json")
    assert runs.exit_code == 0, runs
    assert json.loads(runs.stdout)["runs"] == []  # the run never started


def test_silent_server_times_out(project):
    """A server that accepts the connection and never answers: bounded by timeout_s."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    try:
        configure(project, {"project_id": 1, "username": USER, "api_url": f"http://127.0.0.1:{port}", "timeout_s": 1})
        t0 = time.monotonic()
        r = medallion("run", "all", "-C", project)
        assert r.exit_code == 1, r
        assert time.monotonic() - t0 < 20
        assert "is unreachable" in r.stderr and "timed out" in r.stderr
    finally:
        server.close()


def test_missing_sdk_says_how_to_install(project):
    """The SDK made unimportable (sys.modules entry None, Python's own way to block an import)
    in a real `medallion run` subprocess."""
    configure(project, {"project_id": 1, "username": USER})
    code = ("import sys; sys.modules['hamilton_sdk'] = None; sys.modules['hamilton_sdk.adapters'] = None\n"
            "from medallion_cli.cli.app import main; main()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run([sys.executable, "-c", code, "run", "all", "-C", str(project)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "the Hamilton SDK is not installed" in p.stderr
    assert "pip install 'medallion-cli[tracker]'" in p.stderr
    assert "Traceback" not in p.stderr


def test_flowerpower_tracker_setting_is_refused(project):
    path = project / "conf" / "project.yml"
    data = yaml.safe_load(path.read_text())
    data["adapter"] = {"hamilton_tracker": {"username": USER, "api_url": "http://127.0.0.1:1"}}
    path.write_text(yaml.safe_dump(data))
    r = medallion("run", "all", "-C", project)
    assert r.exit_code == 2, r
    assert "adapter.hamilton_tracker is ignored by FlowerPower 0.37" in r.stderr
    assert "medallion.tracker" in r.stderr
    # the seed's form, in a pipeline's YAML
    data.pop("adapter")
    path.write_text(yaml.safe_dump(data))
    pipeline = project / "conf" / "pipelines" / "silver_events.yml"
    pipeline.write_text(pipeline.read_text() + "adapter:\n  hamilton_tracker:\n    enabled: true\n")
    r = medallion("run", "all", "-C", project)
    assert r.exit_code == 2 and "silver_events.yml: adapter.hamilton_tracker is ignored" in r.stderr, r
    # FlowerPower's defaults alone ask for nothing
    pipeline.write_text(pipeline.read_text().replace("    enabled: true\n", "    tags: {}\n"))
    r = medallion("run", "bronze_events", "-C", project, "--quiet")
    assert r.exit_code == 0, r


@pytest.mark.parametrize("tracker, message", [
    ({"username": USER}, "project_id must be"),
    ({"project_id": 1}, "username is required"),
    ({"project_id": 1, "username": USER, "api_url": "localhost:8241"}, "must be an http(s) URL"),
    ({"project_id": 1, "username": USER, "colour": "red"}, "unknown key 'colour'"),
])
def test_bad_tracker_config(project, tracker, message):
    configure(project, tracker)
    r = medallion("run", "all", "-C", project)
    assert r.exit_code == 2, r
    assert message in r.stderr


def test_check_reports_the_tracker(project):
    configure(project, {"project_id": 3, "username": USER, "api_url": "http://127.0.0.1:9"})
    r = medallion("check", "-C", project, "--json")
    assert r.exit_code == 0, r
    assert "Hamilton UI project 3 at http://127.0.0.1:9" in r.stdout
    configure(project, {"project_id": 3})
    r = medallion("check", "-C", project)
    assert r.exit_code != 0, r
    assert "username is required" in r.stdout + r.stderr
