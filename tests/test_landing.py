"""What a real feed brings: symlinks, ragged schemas, physical types, null markers,
compressed files, extra columns, half-written files, mistyped prefixes, odd paths."""

from __future__ import annotations

import gzip
import json
import os
import time
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from conftest import medallion
from medallion_cli.errors import ExitCode

HEADER = "event_id,user_id,event_type,amount,event_date,updated_at,region"
COLUMNS = HEADER.split(",")


def landing(project: Path) -> Path:
    return project / "data" / "landing"


def empty_landing(project: Path) -> Path:
    """The project's landing folder without the sample files."""
    folder = landing(project)
    for f in folder.iterdir():
        if not f.name.startswith("."):
            f.unlink()
    return folder


def set_source(project: Path, text: str) -> None:
    """Append keys to bronze's `medallion.source` section (indented under `source:`)."""
    cfg = project / "conf" / "pipelines" / "bronze.yml"
    lines = cfg.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.strip() == "source:") + 1
    extra = "".join(f"    {line}\n" for line in text.strip("\n").splitlines())
    cfg.write_text("".join(lines[:at]) + extra + "".join(lines[at:]))


def bronze(project: Path) -> pl.DataFrame:
    return pl.read_delta(str(project / "lake" / "bronze_events")).sort("event_id")


def run(project: Path, *args: str):
    return medallion("run", "bronze", "-C", project, *args)


def one_error(r) -> str:
    assert "Traceback" not in r.stderr, r
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r
    return errors[0]


def bronze_warnings(r) -> list[str]:
    return next(l for l in json.loads(r.stdout)["layers"] if l["layer"] == "bronze")["warnings"]


def event(i: int, **over) -> dict:
    row = {"event_id": f"e-{i}", "user_id": i, "event_type": "click", "amount": 1.5, "event_date": "2024-01-02",
           "updated_at": "2024-01-02T10:00:00Z", "region": "north"}
    row.update(over)
    return row


# -- 8. paths with a space, a non-ASCII letter or % ------------------------------------------------
def test_project_under_a_path_with_space_accent_and_percent(tmp_path):
    parent = tmp_path / "a b" / "café 100%x"
    parent.mkdir(parents=True)
    r = medallion("init", "shop", "--directory", parent, "-q")
    assert r.exit_code == 0, r
    root = parent / "shop"
    for args in (("run", "all"), ("show", "silver", "-n", "2", "--json"), ("history", "gold", "--json"),
                 ("quality", "silver", "--json")):
        r = medallion(*args, "-C", root)
        assert r.exit_code == 0, r
    assert len(json.loads(medallion("show", "silver", "-n", "2", "--json", "-C", root).stdout)["rows"]) == 2
    (landing(root) / "more.csv").write_text(HEADER + "\nz-1,1,click,1.0,2024-01-02,2024-01-02T00:00:00Z,north\n")
    r = medallion("run", "all", "-C", root, "--json")
    assert r.exit_code == 0, r
    assert [l["kind"] for l in json.loads(r.stdout)["layers"]] == ["incremental", "incremental", "incremental"]
    assert DeltaTable(str(root / "lake" / "silver_events")).version() == 1


def test_percent_escape_in_path_is_refused_before_anything_is_written(tmp_path):
    parent = tmp_path / "café%20x"
    parent.mkdir()
    r = medallion("init", "shop", "--directory", parent)
    assert r.exit_code == ExitCode.USAGE, r
    assert "%20" in one_error(r) or "'%'" in one_error(r)
    assert not (parent / "shop").exists()


def test_percent_escape_in_lake_path_fails_cleanly_without_orphans(project):
    cfg = project / "conf" / "project.yml"
    cfg.write_text(cfg.read_text().replace("lake_root: lake", "lake_root: lake%41x"))
    r = medallion("run", "all", "-C", project)
    assert r.exit_code == ExitCode.USAGE, r
    assert "%41" in one_error(r)
    assert not (project / "lake%41x").exists()


@pytest.mark.parametrize("name", ["café", "_shop", "shop_", "naïve"])
def test_non_ascii_and_non_pep508_names_are_refused(tmp_path, name):
    r = medallion("init", name, "--directory", tmp_path)
    assert r.exit_code == ExitCode.USAGE, r
    assert "ASCII letters" in r.stderr
    assert not (tmp_path / name).exists()
