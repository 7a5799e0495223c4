"""Secrets never leave the process: not on stdout, not on stderr, in no mode."""

from __future__ import annotations

import pytest

from conftest import medallion

SECRET = "aws-secret-7Hq/2x+Zk9"
DB_PASSWORD = "db-password-81c4e6f0"


def _leaky_pipeline(project) -> None:
    module = project / "pipelines" / "gold_daily_sales.py"
    module.write_text(module.read_text().replace(
        '    """Total amount',
        "    import os, warnings\n"
        "    warnings.warn('retrying with ' + os.environ['DB_PASSWORD'])\n"
        "    raise ValueError('login refused for key ' + os.environ['AWS_SECRET_ACCESS_KEY']"
        " + ' and ' + os.environ['DB_PASSWORD'])\n"
        '    """Total amount',
    ))


@pytest.mark.parametrize("flags", [[], ["--json"], ["--debug"], ["--debug", "--json"]])
def test_a_secret_in_a_pipeline_error_is_masked_everywhere(ran_project, monkeypatch, flags):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # becomes a storage option
    monkeypatch.setenv("DB_PASSWORD", DB_PASSWORD)  # only the pipeline reads it
    _leaky_pipeline(ran_project)
    r = medallion("run", "gold", "-C", ran_project, "--full-refresh", "--yes", *flags)
    assert r.exit_code == 1, r
    streams = r.stdout + r.stderr
    assert "login refused for key *** and ***" in streams, r  # the error itself is shown
    for secret in (SECRET, DB_PASSWORD, SECRET.replace("/", "\\/")):
        assert secret not in streams, r
    if "--json" in flags:
        assert "login refused for key *** and ***" in r.stdout, r
    if "--debug" in flags:
        assert "Traceback" in r.stderr, r


@pytest.mark.parametrize("flags", [[], ["--debug"], ["--json"]])
def test_url_user_info_is_masked(tmp_path, monkeypatch, flags):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    r = medallion("show", "s3://lake-bucket/t", "--storage-option", "AWS_ENDPOINT_URL=http://alice:hunter2pass@127.0.0.1:9",
                  "--storage-option", "AWS_ALLOW_HTTP=true", "--storage-option", "AWS_REGION=us-east-1",
                  "--storage-option", "max_retries=0", *flags)
    assert r.exit_code == 1, r
    streams = r.stdout + r.stderr
    assert "http://***@127.0.0.1:9" in streams, r
    assert "hunter2pass" not in streams and "alice" not in streams, r


def test_scrub_masks_user_info_and_escaped_forms():
    import json

    from medallion_cli.storage import _SECRETS, scrub

    _SECRETS.add('p"w\\x/secret')
    assert scrub("s3://k:v@host/x and https://u@h") == "s3://***@host/x and https://***@h"
    assert scrub(json.dumps({"e": 'p"w\\x/secret'})) == '{"e": "***"}'
    assert scrub(repr('p"w\\x/secret')) == "'***'"


def test_a_real_process_prints_no_secret_in_warnings_or_tracebacks(ran_project):
    import os
    import subprocess

    from conftest import python

    _leaky_pipeline(ran_project)
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": SECRET, "DB_PASSWORD": DB_PASSWORD, "PYTHONWARNINGS": "always"}
    for flags in ([], ["--debug"]):
        p = subprocess.run([python(), "-m", "medallion_cli", "run", "gold", "-C", str(ran_project), "--full-refresh", "--yes",
                            *flags], capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 1, p.stderr
        assert "login refused for key *** and ***" in p.stderr, p.stderr
        if flags:
            assert "retrying with ***" in p.stderr, p.stderr  # the pipeline's warning, shown with --debug
        assert SECRET not in p.stdout + p.stderr and DB_PASSWORD not in p.stdout + p.stderr, p.stderr
