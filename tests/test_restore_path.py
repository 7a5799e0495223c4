"""A project table named by path or URI is restored as that table: its watermark goes back too."""

from __future__ import annotations

import json

import polars as pl

from conftest import add_landing_file, medallion


def test_restore_by_any_spelling_of_a_project_tables_path(ran_project, tmp_path, monkeypatch):
    project = ran_project
    table = project / "lake" / "bronze_events"
    add_landing_file(project, "more.csv")
    assert medallion("run", "bronze_events", "-C", project, "-q").exit_code == 0
    link = tmp_path / "link-to-bronze"
    link.symlink_to(table)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spellings = [
        (elsewhere, f"{table}/"),  # no project around the working directory: found from the path
        (project, "lake/bronze_events/"),  # relative
        (elsewhere, str(link)),  # a symlink
        (project / "data", f"file://{table}"),  # a file:// URI
    ]
    for cwd, spelling in spellings:
        monkeypatch.chdir(cwd)
        version = json.loads(medallion("history", spelling, "--json", "-n", "1").stdout)["history"][0]["version"]
        r = medallion("restore", spelling, "--version", str(version - 1), "--yes")
        assert r.exit_code == 0, (spelling, r)
        said = r.stderr
        r = medallion("run", "bronze_events", "-C", project, "--json")
        layer = json.loads(r.stdout)["layers"][0]
        assert (layer["source_files"], layer["rows_out"]) == (1, 1), (spelling, layer)  # not every file again
        assert pl.read_delta(str(table)).height == 95, spelling
        assert "ingested files go back to the 3 of that version" in said, (spelling, said)
