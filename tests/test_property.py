"""Property: however landing files are batched, incremental runs end where a full recompute ends.

Hypothesis generates landing files full of what real feeds bring (duplicates, corrections,
late rows, invalid newer versions, rows without an id, versions that tie on updated_at)
and an order of arrival split into runs. After the runs, silver, gold and the quarantine
must equal (a) a full refresh of the same project and (b) an oracle written in plain
Python: per event, the newest valid version by (updated_at, arrival).
"""

from __future__ import annotations

import os
import shutil
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from conftest import medallion

IDS = [f"p{i}" for i in range(6)]
TYPES = ["purchase", "click", "Refund", "view", "hover"]  # hover is invalid
DAY0 = date(2024, 3, 1)

row = st.fixed_dictionaries({
    "event_id": st.sampled_from(IDS + [None]),
    "user_id": st.sampled_from([1, 2, 3, 0]),  # 0 is invalid
    "event_type": st.sampled_from(TYPES),
    "amount": st.sampled_from([0.0, 1.25, 10.5, 99.99, -1.0, None]),  # -1 and null are invalid
    "day": st.integers(0, 6),
    "hour": st.integers(0, 3),  # few distinct updated_at values: versions tie
    "region": st.sampled_from(["north", "south"]),
})
landing_files = st.lists(st.lists(row, min_size=1, max_size=6), min_size=1, max_size=5)


def arrival_order(draw, count: int) -> tuple[list[list[int]], list[str]]:
    """An order of arrival of ``count`` files split into runs, and the files' names.

    The names sort differently from the arrival, so file names cannot stand in for it.
    """
    order = draw(st.permutations(list(range(count))))
    cuts = draw(st.lists(st.booleans(), min_size=count - 1, max_size=count - 1))
    runs, current = [], [order[0]]
    for index, cut in zip(order[1:], cuts):
        if cut:
            runs.append(current)
            current = []
        current.append(index)
    runs.append(current)
    names = [f"f{draw(st.integers(0, 999)):03d}_{i}.csv" for i in range(count)]
    return runs, names


@st.composite
def arrivals(draw):
    files = draw(landing_files)
    runs, names = arrival_order(draw, len(files))
    return files, runs, names


def write_file(path: Path, rows: list[dict]) -> None:
    frame = pl.DataFrame(
        [{
            "event_id": r["event_id"], "user_id": r["user_id"], "event_type": r["event_type"], "amount": r["amount"],
            "event_date": DAY0 + timedelta(days=r["day"]),
            "updated_at": datetime(2024, 3, 1, r["hour"], tzinfo=timezone.utc), "region": r["region"],
        } for r in rows],
        schema={"event_id": pl.String, "user_id": pl.Int64, "event_type": pl.String, "amount": pl.Float64,
                "event_date": pl.Date, "updated_at": pl.Datetime("us", "UTC"), "region": pl.String},
    )
    frame.write_csv(path)


def valid(r: dict) -> bool:
    return (r["event_id"] is not None and r["user_id"] > 0 and r["event_type"].lower() in ("purchase", "click", "refund", "view")
            and r["amount"] is not None and r["amount"] >= 0)


def oracle(files, runs, names) -> dict[str, tuple]:
    """event_id -> (amount, event type, day) of its newest valid version."""
    best: dict[str, tuple] = {}
    for run_no, run in enumerate(runs):
        # in one run, files share an ingestion time: the scan order (by name) breaks ties
        for index in sorted(run, key=lambda i: names[i]):
            for pos, r in enumerate(files[index]):
                if not valid(r):
                    continue
                rank = (r["hour"], run_no, names[index], pos)
                if r["event_id"] not in best or rank >= best[r["event_id"]][0]:
                    best[r["event_id"]] = (rank, (r["amount"], r["event_type"].lower(), r["day"]))
    return {k: v[1] for k, v in best.items()}


def tables(project: Path) -> dict[str, pl.DataFrame]:
    lake = project / "lake"
    out = {
        "silver": pl.read_delta(str(lake / "silver_events")).sort("event_id"),
        "gold": pl.read_delta(str(lake / "gold_daily_sales")).sort("event_date", "region"),
    }
    q = lake / "silver_events__quarantine"
    out["quarantine"] = (pl.read_delta(str(q)).drop("_run_id", "_quarantined_at").sort("_row_key") if q.exists()
                         else None)
    return out


@pytest.fixture(scope="module")
def blank(template_project, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("prop") / "shop"
    shutil.copytree(template_project, dest)
    for f in (dest / "data" / "landing" / "events").iterdir():
        if not f.name.startswith("."):
            f.unlink()
    return dest


@settings(max_examples=int(os.environ.get("MEDALLION_PROPERTY_EXAMPLES", "10")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(arrivals())
def test_any_batching_equals_a_full_recompute(blank, tmp_path_factory, case):
    files, runs, names = case
    project = tmp_path_factory.mktemp("case") / "shop"
    shutil.copytree(blank, project)
    landing = project / "data" / "landing" / "events"
    for run in runs:
        for index in run:
            write_file(landing / names[index], files[index])
        r = medallion("run", "all", "-C", project, "-q")
        assert r.exit_code == 0, r
    incremental = tables(project)

    want = oracle(files, runs, names)
    silver = incremental["silver"]
    got = {r["event_id"]: (r["amount"], r["event_type"], (r["event_date"] - DAY0).days) for r in silver.iter_rows(named=True)}
    assert got == want
    invalid = sum(not valid(r) for f in files for r in f)
    distinct_invalid = len({(i, tuple(sorted(r.items()))) for i, f in enumerate(files) for r in f if not valid(r)})
    quarantined = 0 if incremental["quarantine"] is None else incremental["quarantine"].height
    assert quarantined == distinct_invalid <= invalid

    r = medallion("run", "all", "--full-refresh", "--yes", "-C", project, "-q")
    assert r.exit_code == 0, r
    full = tables(project)
    assert_frame_equal(full["silver"], incremental["silver"])
    assert_frame_equal(full["gold"], incremental["gold"], check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
    if incremental["quarantine"] is None:
        assert full["quarantine"] is None or full["quarantine"].height == 0
    else:
        assert_frame_equal(full["quarantine"], incremental["quarantine"])
    r = medallion("verify", "-C", project, "-q")
    assert r.exit_code == 0, r
    shutil.rmtree(project.parent)
