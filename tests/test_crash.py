"""SIGKILL `medallion run all` at many moments; the re-run must end exactly where a run that
was never interrupted ends: every table of the graph the same, no duplicates, no lost rows.

The template's graph runs its two feeds concurrently (default --threads), so a kill at a
named point of one table also lands wherever the other branch happens to be."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import time

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from batches import CustomerStream, EventStream
from conftest import medallion

pytestmark = pytest.mark.slow

POINTS = ("locked", "planned", "computed", "committed", "recorded")
EVENTS_CHAIN = ("bronze_events", "silver_events", "gold_daily_sales")
NAMED = ([f"{table}:{point}" for table in EVENTS_CHAIN for point in POINTS] + ["silver_events:quarantined"]
         + ["bronze_customers:committed", "silver_customers:quarantined", "silver_customers:committed",
            "gold_sales_by_segment:planned", "gold_sales_by_segment:committed", "gold_sales_by_segment:recorded"])
TIMED = 10  # kills after a random delay: these land inside Delta writes and state updates too


def read(project, table, keys) -> pl.DataFrame:
    # _ingested_at says when a file arrived, which differs between the two projects.
    return pl.read_delta(str(project / "lake" / table)).drop("_ingested_at", strict=False).sort(keys)


def assert_same(project, twin) -> None:
    for table, keys in (("silver_events", ["event_id"]), ("silver_customers", ["customer_id"])):
        silver = read(project, table, keys)
        assert silver.select(keys).is_duplicated().sum() == 0, table
        assert_frame_equal(silver, read(twin, table, keys))
    for table, keys in (("gold_daily_sales", ["event_date", "region"]), ("gold_sales_by_segment", ["event_date", "segment"])):
        assert_frame_equal(read(project, table, keys), read(twin, table, keys),
                           check_exact=False, rel_tol=1e-9, abs_tol=1e-6)
    # Each invalid row is quarantined exactly once.
    for table in ("silver_events__quarantine", "silver_customers__quarantine"):
        quarantine = read(project, table, ["_row_key"])
        assert quarantine["_row_key"].is_duplicated().sum() == 0, table
        assert quarantine.height == read(twin, table, ["_row_key"]).height, table
    # Bronze ingested each landing file exactly once.
    for feed in ("events", "customers"):
        bronze = pl.read_delta(str(project / "lake" / f"bronze_{feed}"))
        per_file = dict(bronze.group_by("_source_file").len().iter_rows())
        landing = project / "data" / "landing" / feed
        assert set(per_file) == {f.name for f in landing.iterdir() if not f.name.startswith(".")}, feed
        for name, count in per_file.items():
            path = landing / name
            rows = {".csv": pl.read_csv, ".parquet": pl.read_parquet, ".jsonl": pl.read_ndjson}[path.suffix](path).height
            assert count == rows, name


def land_batch(stream: EventStream, people: CustomerStream, project, twin, event_files: int = 1) -> None:
    """A batch of events (in ``event_files`` files) and one of customers, landed in both projects."""
    landed = [("events", stream.write(stream.batch(3000 // event_files), project / "data" / "landing" / "events"))
              for _ in range(event_files)]
    landed.append(("customers", people.write(people.batch(), project / "data" / "landing" / "customers")))
    for feed, path in landed:
        shutil.copy2(path, twin / "data" / "landing" / feed / path.name)


# Independent runs of the scenario (pytest-xdist spreads them over the cores): the named points
# in two halves, the timed kills, and work units: bronze_events split into one unit per landing
# file (two files a batch) and killed between, after and around its unit writes, while the twin
# runs it as one unit.
UNIT_POINTS = ("bronze_events:unit_written", "bronze_events:units_written", "bronze_events:committed",
               "bronze_events:recorded")
PARTS = {"named-1": [("point", p) for p in NAMED[: len(NAMED) // 2]],
         "named-2": [("point", p) for p in NAMED[len(NAMED) // 2:]],
         "timed": [("timed", None)] * (3 * TIMED),  # up to: stops once TIMED kills landed
         "units": [("point", p) for p in UNIT_POINTS] + [("timed", None)] * 3}


def split_into_units(project) -> None:
    path = project / "conf" / "pipelines" / "bronze_events.yml"
    text = path.read_text()
    assert "  partition: {by: files}\n" in text  # the template's, made one unit per file
    path.write_text(text.replace("  partition: {by: files}\n", "  partition: {by: files, max_files: 1}\n"))


@pytest.mark.parametrize("part", list(PARTS))
def test_killed_runs_recover_exactly(project, tmp_path, part):
    landing = project / "data" / "landing" / "events"
    customers = project / "data" / "landing" / "customers"
    for folder in (landing, customers):
        for f in folder.iterdir():
            if not f.name.startswith("."):
                f.unlink()
    stream, people = EventStream(seed=5), CustomerStream(seed=5)
    stream.write(stream.batch(3000), landing)
    people.write(people.batch(), customers)
    twin = tmp_path / "twin"
    shutil.copytree(project, twin)
    event_files = 1
    if part == "units":
        split_into_units(project)
        event_files = 2
    assert medallion("run", "all", "-C", project, "-q").exit_code == 0
    assert medallion("run", "all", "-C", twin, "-q").exit_code == 0

    # How long one uninterrupted run takes here, as a subprocess: timed kills fall inside it.
    land_batch(stream, people, project, twin, event_files)
    assert medallion("run", "all", "-C", twin, "-q").exit_code == 0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medallion_cli", "run", "all", "-C", str(project), "-q"], check=True, timeout=300)
    duration = time.perf_counter() - t0
    assert_same(project, twin)

    rng = random.Random(42)
    scenarios = PARTS[part]
    killed_timed = 0
    for kind, point in scenarios:
        land_batch(stream, people, project, twin, event_files)
        assert medallion("run", "all", "-C", twin, "-q").exit_code == 0
        env = dict(os.environ)
        cmd = [sys.executable, "-m", "medallion_cli", "run", "all", "-C", str(project), "-q"]
        if kind == "point":
            env["MEDALLION_TEST_CRASH_AT"] = point
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
            assert proc.returncode == -9, (point, proc.stderr)
        else:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.4, 0.95) * duration)  # start-up is the first ~1.5 s
            proc.kill()
            if proc.wait() == -9:
                killed_timed += 1
            else:  # the run had finished: runs are faster now than the first (the machine's load moves)
                duration *= 0.8
        r = medallion("run", "all", "-C", project, "-q")
        assert r.exit_code == 0, (kind, point, r)
        assert_same(project, twin)
        if kind == "timed" and killed_timed >= TIMED:
            break
    if part == "timed":
        assert killed_timed >= TIMED // 2  # the timed kills hit running processes, not finished ones
    if part == "units":  # the units really ran: the last batch's commit adds one file per unit
        import json

        log = sorted((project / "lake" / "bronze_events" / "_delta_log").glob("*.json"))[-1]
        adds = [json.loads(line)["add"]["path"] for line in log.read_text().splitlines() if '"add"' in line]
        assert len(adds) == 2 and all(re.fullmatch(r"part-.+-0000[01]-[0-9a-f]{32}\.parquet", a) for a in adds), adds
