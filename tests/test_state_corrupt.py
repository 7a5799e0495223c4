"""A corrupt state file: every command names it and the fix; `watermark repair` rebuilds it."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from conftest import medallion
from medallion_cli.errors import ExitCode


def corrupt(state: Path, kind: str) -> bytes:
    data = state.read_bytes()
    bad = {"empty": b"", "truncated": data[: len(data) // 3], "garbage": b"\x00not a database\xff" * 4000}[kind]
    state.write_bytes(bad)
    return bad


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage"])
def test_corrupt_state_file_is_named_and_repaired_from_the_delta_logs(ran_project, kind):
    project = ran_project
    state = project / ".medallion" / "state.duckdb"
    before = {(w["table"], w["input"]): w["value"] for w in json.loads(medallion("watermark", "show", "-C", project, "--json").stdout)["watermarks"]}
    bad = corrupt(state, kind)

    for args in (("watermark", "show"), ("run", "all"), ("watermark", "repair", "--dry-run"), ("watermark", "reset", "silver_events", "--yes")):
        r = medallion(*args, "-C", project)
        assert r.exit_code == ExitCode.USAGE, (args, r)
        lines = r.stderr.strip().splitlines()
        assert len(lines) >= 2, (args, r)
        assert lines[-2].startswith(f"error: the state file {state} is corrupt"), (args, r)
        assert "medallion watermark repair" in lines[-1] and "Traceback" not in r.stderr, (args, r)

    r = medallion("watermark", "repair", "-C", project, "--json")
    assert r.exit_code == 0, r
    moved = Path(json.loads(r.stdout)["corrupt_state_moved_to"])
    assert moved.parent == state.parent and moved.name.startswith("state.duckdb.corrupt-")
    assert moved.read_bytes() == bad  # kept for inspection, untouched
    assert str(moved) in r.stderr
    after = {(w["table"], w["input"]): w["value"] for w in json.loads(medallion("watermark", "show", "-C", project, "--json").stdout)["watermarks"]}
    assert after == before

    # The rebuilt state knows what was ingested: nothing is loaded twice.
    r = medallion("run", "all", "-C", project, "--json")
    assert r.exit_code == 0, r
    kinds = {layer["table"]: layer["kind"] for layer in json.loads(r.stdout)["layers"]}
    assert kinds["bronze_events"] == kinds["bronze_customers"] == "nothing", kinds
    assert pl.read_delta(str(project / "lake" / "bronze_events")).height == 94
    # A healthy file is left alone.
    r = medallion("watermark", "repair", "-C", project, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["corrupt_state_moved_to"] is None
