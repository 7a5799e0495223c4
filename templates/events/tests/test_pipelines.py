"""Tests of this project's transforms and schemas, on small frames built here."""

from datetime import date, datetime, timezone

import polars as pl
import pytest

import gold_daily_sales as gold
import silver_events as silver
from schemas import SilverEvents

UTC = timezone.utc


def events(rows):
    schema = {
        "event_id": pl.String, "user_id": pl.Int64, "event_type": pl.String, "amount": pl.Float64,
        "event_date": pl.Date, "updated_at": pl.Datetime("us", "UTC"), "region": pl.String,
        "_ingested_at": pl.Datetime("us", "UTC"), "_source_file": pl.String,
    }
    return pl.LazyFrame(rows, schema=schema, orient="row")


def row(event_id, *, user=1, etype="purchase", amount=10.0, day=1, hour=0, region="north", ingested=0):
    return (
        event_id, user, etype, amount, date(2024, 1, day), datetime(2024, 1, day, hour, tzinfo=UTC), region,
        datetime(2024, 2, 1, ingested, tzinfo=UTC), "f.csv",
    )


def run_silver(frame):
    return silver.silver_events(silver.normalized_events(frame, amount_decimals=2)).collect()


def test_silver_keeps_every_version_for_the_quality_gate():
    # medallion checks each version, then keeps the newest valid one per event_id.
    out = run_silver(events([row("a", amount=1.0, hour=1), row("a", amount=2.0, hour=5), row(None)]))
    assert out["amount"].to_list() == [1.0, 2.0, 10.0]
    assert out.columns == [*silver.EVENT_COLUMNS, "_ingested_at", "_source_file"]


def test_silver_normalizes():
    out = run_silver(events([row("ok", etype=" PURCHASE ", amount=1.006, region=" North")]))
    assert out.row(0, named=True) | {"updated_at": None, "_ingested_at": None} == {
        "event_id": "ok", "user_id": 1, "event_type": "purchase", "amount": 1.01, "event_date": date(2024, 1, 1),
        "updated_at": None, "region": "north", "_ingested_at": None, "_source_file": "f.csv",
    }


def test_schema_rejects_bad_rows():
    import pandera.polars as pa

    bad = run_silver(events([row(None), row("neg", amount=-1.0), row("t", etype="hover"), row("u", user=0), row("ok")]))
    with pytest.raises(pa.errors.SchemaErrors) as info:
        SilverEvents.validate(bad, lazy=True)
    failing = bad[sorted(info.value.failure_cases["index"].unique().to_list())]
    assert sorted(failing["event_id"].to_list(), key=str) == [None, "neg", "t", "u"]


def test_gold_rolling_mean_uses_calendar_days():
    frame = events([row("a", day=1, amount=10.0), row("b", day=2, amount=20.0), row("c", day=9, amount=30.0)])
    daily = gold.daily_sales(frame.drop("_ingested_at", "_source_file"), sales_event_types=["purchase"])
    out = gold.gold_daily_sales(daily, rolling_window_days=7).collect()
    assert out["rolling_mean_sales"].to_list() == [10.0, 15.0, 30.0]
    assert out["transaction_count"].to_list() == [1, 1, 1]


def test_silver_customers_normalizes_and_keeps_lineage():
    import silver_customers

    frame = pl.LazyFrame(
        {"customer_id": [1], "name": [" Ann "], "segment": [" Business"], "country": ["de"],
         "updated_at": [datetime(2024, 1, 1, tzinfo=UTC)], "_ingested_at": [datetime(2024, 1, 2, tzinfo=UTC)],
         "_source_file": ["c.csv"], "_run_id": ["r"]},
    )
    out = silver_customers.silver_customers(frame).collect()
    assert out.row(0)[:4] == (1, "Ann", "business", "DE")
    assert out.columns == [*silver_customers.CUSTOMER_COLUMNS, "_ingested_at", "_source_file"]


def test_sales_by_segment_joins_customers_and_counts_the_unknown():
    import gold_sales_by_segment as gold_segments

    sales = events([row("a", user=1, amount=10.0), row("b", user=2, amount=5.0), row("c", user=1, amount=1.0),
                    row("d", user=9, amount=2.0), row("e", user=1, etype="view", amount=0.0)])
    customers = pl.LazyFrame({"customer_id": [1, 2], "segment": ["business", "consumer"]})
    out = gold_segments.gold_sales_by_segment(sales, customers, sales_event_types=["purchase"]).collect()
    got = {r["segment"]: (r["total_sales"], r["transaction_count"]) for r in out.iter_rows(named=True)}
    assert got == {"business": (11.0, 2), "consumer": (5.0, 1), "unknown": (2.0, 1)}
