"""Fixtures: every test starts from a project built by the real `medallion init`."""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from medallion_cli.cli.app import main
from medallion_cli.cli.options import State


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def __repr__(self) -> str:  # shown by `assert r.exit_code == 0, r`
        return f"exit={self.exit_code}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


def medallion(*args: str | Path) -> Result:
    """Run the real CLI entry point in-process; capture both streams and the exit code."""
    out, err = io.StringIO(), io.StringIO()
    State.debug = False
    State.output = None
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch, tmp_path):
    """No $HOME, no AWS or medallion settings from the developer's environment."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in list(__import__("os").environ):
        if name.startswith(("AWS_", "MEDALLION_")):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def template_project(tmp_path_factory) -> Path:
    """One pristine project from `medallion init`, copied for each test that needs it."""
    parent = tmp_path_factory.mktemp("template")
    r = medallion("init", "shop", "--directory", parent, "--quiet")
    assert r.exit_code == 0, r
    return parent / "shop"


@pytest.fixture
def project(template_project, tmp_path) -> Path:
    dest = tmp_path / "shop"
    shutil.copytree(template_project, dest)
    return dest


@pytest.fixture
def ran_project(project) -> Path:
    """A project after one successful `medallion run all`."""
    r = medallion("run", "all", "-C", project, "--quiet")
    assert r.exit_code == 0, r
    return project


LANDING = Path(__file__).resolve().parents[1] / "templates" / "events" / "data" / "landing" / "events"


def python() -> str:
    return sys.executable


def add_landing_file(project: Path, name: str, rows: list[tuple] | None = None) -> Path:
    """Drop a CSV of events into the project's landing folder.

    ``rows``: (event_id, user_id, event_type, amount, event_date, updated_at, region).
    """
    rows = rows or [("added-1", 5, "purchase", 10.0, "2024-01-03", "2024-01-03T12:00:00Z", "north")]
    lines = ["event_id,user_id,event_type,amount,event_date,updated_at,region"]
    lines += [",".join("" if v is None else str(v) for v in row) for row in rows]
    path = project / "data" / "landing" / "events" / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def moto_s3():
    from s3fixtures import MotoS3

    server = MotoS3()
    yield server
    server.stop()


@pytest.fixture
def s3(moto_s3, monkeypatch):
    """A fresh moto S3 with bucket `lake-bucket`; AWS_* variables point at it."""
    moto_s3.reset()
    for key, value in moto_s3.env().items():
        monkeypatch.setenv(key, value)
    moto_s3.client().create_bucket(Bucket="lake-bucket")
    return moto_s3
