"""Property: the whole template graph, both feeds and the join, ends incrementally where a
full recompute ends, however event and customer files are batched.

Hypothesis lands event files and customer files (customers changing segment, invalid
versions, versions tying on updated_at) in random orders and runs. After the runs every
table (silver_events, silver_customers, gold_daily_sales, gold_sales_by_segment and both
quarantines) must equal a full refresh of the same project, ``medallion verify`` must agree,
and gold_sales_by_segment must equal an oracle in plain Python: each event's newest valid
version joined with each customer's newest valid version.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from conftest import medallion
from test_property import arrival_order

DAY0 = date(2024, 3, 1)
SEGMENTS = ("consumer", "business", "enterprise")

event = st.fixed_dictionaries({
    "event_id": st.sampled_from([f"p{i}" for i in range(5)] + [None]),
    "user_id": st.sampled_from([1, 2, 3, 4]),  # 4 never has a customer row: segment unknown
    "event_type": st.sampled_from(["purchase", "Purchase", "click", "hover"]),  # hover is invalid
    "amount": st.sampled_from([1.25, 10.5, 99.99, -1.0]),  # -1 is invalid
    "day": st.integers(0, 3),
    "hour": st.integers(0, 2),
})
customer = st.fixed_dictionaries({
    "customer_id": st.sampled_from([1, 2, 3, 0]),  # 0 is invalid
    "segment": st.sampled_from([*SEGMENTS, " Business", "bogus"]),  # bogus is invalid
    "hour": st.integers(0, 2),  # few distinct updated_at values: versions tie
})
feed_file = st.one_of(
    st.tuples(st.just("events"), st.lists(event, min_size=1, max_size=5)),
    st.tuples(st.just("customers"), st.lists(customer, min_size=1, max_size=4)),
)


@st.composite
def arrivals(draw):
    files = draw(st.lists(feed_file, min_size=1, max_size=6))
    runs, names = arrival_order(draw, len(files))
    return files, runs, names


def write_file(path: Path, feed: str, rows: list[dict]) -> None:
    if feed == "events":
        frame = pl.DataFrame(
            [{"event_id": r["event_id"], "user_id": r["user_id"], "event_type": r["event_type"], "amount": r["amount"],
              "event_date": DAY0 + timedelta(days=r["day"]),
              "updated_at": datetime(2024, 3, 1, r["hour"], tzinfo=timezone.utc), "region": "north"} for r in rows],
            schema={"event_id": pl.String, "user_id": pl.Int64, "event_type": pl.String, "amount": pl.Float64,
                    "event_date": pl.Date, "updated_at": pl.Datetime("us", "UTC"), "region": pl.String},
        )
    else:
        frame = pl.DataFrame(
            [{"customer_id": r["customer_id"], "name": f"Customer {r['customer_id']}", "segment": r["segment"],
              "country": "de", "updated_at": datetime(2024, 3, 1, r["hour"], tzinfo=timezone.utc)} for r in rows],
            schema={"customer_id": pl.Int64, "name": pl.String, "segment": pl.String, "country": pl.String,
                    "updated_at": pl.Datetime("us", "UTC")},
        )
    frame.write_csv(path)


def event_valid(r: dict) -> bool:
    return r["event_id"] is not None and r["event_type"] != "hover" and r["amount"] >= 0


def customer_valid(r: dict) -> bool:
    return r["customer_id"] > 0 and r["segment"].strip().lower() in SEGMENTS


def newest(files, runs, names, feed, valid, key) -> dict:
    """key -> newest valid row by (updated_at, run, file name, position)."""
    best: dict = {}
    for run_no, run in enumerate(runs):
        for index in sorted(run, key=lambda i: names[i]):
            kind, rows = files[index]
            if kind != feed:
                continue
            for pos, r in enumerate(rows):
                rank = (r["hour"], run_no, names[index], pos)
                if valid(r) and (r[key] not in best or rank >= best[r[key]][0]):
                    best[r[key]] = (rank, r)
    return {k: v[1] for k, v in best.items()}


def oracle_by_segment(files, runs, names) -> dict[tuple, tuple]:
    events = newest(files, runs, names, "events", event_valid, "event_id")
    segment = {k: r["segment"].strip().lower() for k, r in newest(files, runs, names, "customers", customer_valid,
                                                                     "customer_id").items()}
    out: dict[tuple, list] = defaultdict(lambda: [0.0, 0])
    for r in events.values():
        if r["event_type"].lower() == "purchase":
            cell = out[(DAY0 + timedelta(days=r["day"]), segment.get(r["user_id"], "unknown"))]
            cell[0] += r["amount"]
            cell[1] += 1
    return {k: (round(v[0], 2), v[1]) for k, v in out.items()}


TABLES = {
    "silver_events": ["event_id"], "silver_customers": ["customer_id"],
    "gold_daily_sales": ["event_date", "region"], "gold_sales_by_segment": ["event_date", "segment"],
    "silver_events__quarantine": ["_row_key"], "silver_customers__quarantine": ["_row_key"],
}


def tables(project: Path) -> dict[str, pl.DataFrame | None]:
    out = {}
    for name, keys in TABLES.items():
        path = project / "lake" / name
        frame = pl.read_delta(str(path)).sort(keys) if path.exists() else None
        if frame is not None and name.endswith("__quarantine"):
            frame = frame.drop("_run_id", "_quarantined_at")
        out[name] = frame if frame is None or frame.height else None
    return out


@pytest.fixture(scope="module")
def blank(template_project, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("propgraph") / "shop"
    shutil.copytree(template_project, dest)
    for feed in ("events", "customers"):
        for f in (dest / "data" / "landing" / feed).iterdir():
            if not f.name.startswith("."):
                f.unlink()
    return dest


@settings(max_examples=int(os.environ.get("MEDALLION_PROPERTY_EXAMPLES", "8")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(arrivals())
def test_every_template_table_equals_a_full_recompute(blank, tmp_path_factory, case):
    files, runs, names = case
    project = tmp_path_factory.mktemp("case") / "shop"
    shutil.copytree(blank, project)
    for run in runs:
        for index in run:
            feed, rows = files[index]
            write_file(project / "data" / "landing" / feed / names[index], feed, rows)
        r = medallion("run", "all", "-C", project, "-q")
        assert r.exit_code == 0, r
    incremental = tables(project)

    got = incremental["gold_sales_by_segment"]
    got = {} if got is None else {(r["event_date"], r["segment"]): (r["total_sales"], r["transaction_count"])
                                  for r in got.iter_rows(named=True)}
    assert got == oracle_by_segment(files, runs, names)
    customers = incremental["silver_customers"]
    want = {k: r["segment"].strip().lower()
            for k, r in newest(files, runs, names, "customers", customer_valid, "customer_id").items()}
    assert ({} if customers is None else dict(customers.select("customer_id", "segment").iter_rows())) == want

    r = medallion("run", "all", "--full-refresh", "--yes", "-C", project, "-q")
    assert r.exit_code == 0, r
    full = tables(project)
    for name in TABLES:
        if incremental[name] is None or full[name] is None:
            assert incremental[name] is None and full[name] is None, name
        else:
            assert_frame_equal(full[name], incremental[name], check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
    r = medallion("verify", "-C", project, "-q")
    assert r.exit_code == 0, r
    shutil.rmtree(project.parent)
