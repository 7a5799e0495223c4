"""Hooks (`medallion.hooks` in conf/project.yml): callables and webhooks, against a real HTTP
server on 127.0.0.1; a failing or hanging hook is a warning and never changes the exit code."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from conftest import add_landing_file, medallion


class Receiver:
    """A real HTTP server on 127.0.0.1 that records what is POSTed to it."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body.decode()})
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def configure(project, hooks: dict) -> None:
    path = project / "conf" / "project.yml"
    data = yaml.safe_load(path.read_text())
    data["medallion"]["hooks"] = hooks
    path.write_text(yaml.safe_dump(data))


def write_hook(project, body: str) -> None:
    (project / "hooks" / "notify.py").write_text(body)


def test_webhooks_post_a_summary_of_a_failed_run(ran_project, receiver, monkeypatch):
    token = "T0KEN-abcdef-123456"
    monkeypatch.setenv("SLACK_WEBHOOK_URL", receiver.url(f"/services/{token}"))
    monkeypatch.setenv("MY_API_TOKEN", "do-not-send-this-secret")
    configure(ran_project, {
        "on_failure": [{"webhook": "${SLACK_WEBHOOK_URL}"}],
        "on_success": [{"webhook": receiver.url("/never")}],
        "on_finish": [{"webhook": "${SLACK_WEBHOOK_URL}", "format": "slack"}],
    })
    add_landing_file(ran_project, "more.csv")
    monkeypatch.setenv("MEDALLION_TEST_FAIL_AT", "silver_events:computed")
    r = medallion("run", "all", "-C", ran_project, "--json")
    assert r.exit_code == 1, r
    doc = json.loads(r.stdout)
    assert [q["path"] for q in receiver.requests] == [f"/services/{token}"] * 2
    assert receiver.requests[0]["headers"]["Content-Type"] == "application/json"
    summary = json.loads(receiver.requests[0]["body"])
    assert summary["project"] == "shop" and summary["run_id"] == doc["run_id"] and summary["status"] == "failed"
    assert summary["exit_code"] == 1 and summary["command"] == "run"
    assert summary["failed"] == [{"table": "silver_events", "error": "injected failure at silver_events:computed"}]
    assert summary["skipped"] == ["gold_daily_sales", "gold_sales_by_segment"]
    durations = {t["table"]: t["duration_s"] for t in summary["tables"]}
    assert set(durations) == {"bronze_customers", "bronze_events", "silver_customers", "silver_events", "gold_daily_sales",
                              "gold_sales_by_segment"} and durations["bronze_events"] > 0
    assert summary["duration_s"] == doc["duration_s"]
    slack = json.loads(receiver.requests[1]["body"])
    assert set(slack) == {"text"}
    assert doc["run_id"] in slack["text"] and "`silver_events` failed: injected failure at silver_events:computed" in slack["text"]
    for q in receiver.requests:
        assert "do-not-send-this-secret" not in q["body"] and token not in q["body"]
    assert "warning" not in r.stderr


def test_a_callable_hook_gets_the_run_record(ran_project, tmp_path):
    seen = tmp_path / "seen.json"
    write_hook(ran_project, f"import json\n\ndef on_success(run):\n    open({str(seen)!r}, 'w').write(json.dumps(run))\n")
    configure(ran_project, {"on_success": [{"callable": "hooks.notify:on_success"}],
                            "on_failure": [{"callable": "hooks.notify:missing"}]})
    r = medallion("run", "all", "-C", ran_project, "--json")
    assert r.exit_code == 0, r
    assert json.loads(seen.read_text()) == json.loads(r.stdout)
    assert "warning" not in r.stderr  # on_failure's missing function is not called on success


@pytest.mark.parametrize("fail", [False, True])
def test_a_hook_that_raises_or_hangs_is_a_warning(ran_project, receiver, monkeypatch, fail):
    write_hook(ran_project, "import time\n\ndef boom(run):\n    raise ValueError('no Slack today')\n\n"
                            "def hang(run):\n    time.sleep(60)\n\ndef leave(run):\n    raise SystemExit(7)\n")
    failing = {"webhook": receiver.url("/x"), "timeout_s": 0.5}
    configure(ran_project, {"timeout_s": 0.5, "on_finish": [
        {"callable": "hooks.notify:boom"}, {"callable": "hooks.notify:hang"}, {"callable": "hooks.notify:leave"},
        {"webhook": "http://127.0.0.1:9/unreachable"}, {"webhook": "${NOT_SET_ANYWHERE}"}, failing]})
    if fail:
        monkeypatch.setenv("MEDALLION_TEST_FAIL_AT", "gold_daily_sales:locked")
    t0 = time.monotonic()
    r = medallion("run", "all", "-C", ran_project)
    took = time.monotonic() - t0
    assert r.exit_code == (1 if fail else 0), r
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: hook")]
    assert len(warnings) == 5, r.stderr
    assert "warning: hook on_finish[0] (hooks.notify:boom) failed: ValueError: no Slack today" in r.stderr
    assert "warning: hook on_finish[1] (hooks.notify:hang) failed: did not finish within 0.5s" in r.stderr
    assert "warning: hook on_finish[2] (hooks.notify:leave) failed: SystemExit: 7" in r.stderr
    assert "on_finish[3] (webhook) failed: URLError" in r.stderr
    assert "on_finish[4] (webhook) failed: ConfigError: medallion.hooks.on_finish[4].webhook: environment variable " \
           "NOT_SET_ANYWHERE is not set" in r.stderr
    assert len(receiver.requests) == 1  # the last hook ran after the others failed
    assert took < 30  # the hanging hook (60 s) was not waited for
    if fail:
        assert r.stderr.strip().splitlines()[-1] == "error: injected failure at gold_daily_sales:locked"


def test_a_webhook_answering_an_error_is_a_warning_without_its_url(project, monkeypatch):
    bad = Receiver(status=500)
    try:
        url = bad.url("/services/SECRET-PATH-998877")
        monkeypatch.setenv("HOOK_URL", url)
        configure(project, {"on_success": [{"webhook": "${HOOK_URL}"}]})
        r = medallion("run", "all", "-C", project)
    finally:
        bad.close()
    assert r.exit_code == 0, r
    assert "HTTPError: HTTP Error 500" in r.stderr
    assert "SECRET-PATH-998877" not in r.stderr and len(bad.requests) == 1


@pytest.mark.parametrize("hooks, words", [
    ({"on_failure": [{"callable": "notify"}]}, "must be MODULE:FUNCTION"),
    ({"on_failure": [{"webhook": "http://x", "callable": "a:b"}]}, "either `callable:` or `webhook:`"),
    ({"on_fail": []}, "unknown key 'on_fail'"),
    ({"timeout_s": 0}, "timeout_s must be a positive number"),
    ({"on_success": [{"webhook": "http://x", "format": "teams"}]}, "format must be json or slack"),
])
def test_a_bad_hook_configuration_stops_the_run_before_it_starts(project, hooks, words):
    configure(project, hooks)
    r = medallion("run", "all", "-C", project)
    assert r.exit_code == 2 and words in r.stderr, r
    assert not (project / "lake" / "bronze_events").exists()
    r = medallion("runs", "-C", project, "--json")
    assert json.loads(r.stdout)["runs"] == []
