"""The floor: the same three layers as the `events` template, hand-written in plain
polars + deltalake, with no FlowerPower, no Hamilton and no medallion.

    python bench/baseline.py LANDING_DIR LAKE_DIR [bronze|silver|gold|all]
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
from deltalake import DeltaTable, write_deltalake

SCHEMA = {
    "event_id": pl.String, "user_id": pl.Int64, "event_type": pl.String, "amount": pl.Float64,
    "event_date": pl.Date, "updated_at": pl.Datetime("us", "UTC"), "region": pl.String,
}
ACCEPTED = ["click", "view", "purchase", "refund"]


def bronze(landing: Path, lake: Path) -> None:
    files = sorted(str(p) for p in landing.glob("*.parquet"))
    df = (
        pl.scan_parquet(files, include_file_paths="_source_file")
        .with_columns(
            pl.col("_source_file").str.strip_prefix(str(landing) + "/"),
            pl.lit(datetime.now(timezone.utc), dtype=pl.Datetime("us", "UTC")).alias("_ingested_at"),
            pl.lit("baseline").alias("_run_id"),
        )
        .collect()
    )
    write_deltalake(str(lake / "bronze_events"), df, mode="append")


def silver(lake: Path) -> None:
    df = (
        pl.scan_delta(str(lake / "bronze_events"))
        .with_columns(
            pl.col("event_id").str.strip_chars(),
            pl.col("event_type").str.strip_chars().str.to_lowercase(),
            pl.col("region").str.strip_chars().str.to_lowercase(),
            pl.col("amount").round(2, mode="half_away_from_zero"),
        )
        .filter(
            pl.col("event_id").is_not_null() & (pl.col("event_id") != "")
            & pl.col("user_id").is_not_null() & (pl.col("user_id") > 0)
            & pl.col("event_date").is_not_null() & pl.col("updated_at").is_not_null()
            & pl.col("region").is_not_null() & pl.col("amount").is_not_null() & (pl.col("amount") >= 0)
            & pl.col("event_type").is_in(ACCEPTED)
        )
        .sort(["event_id", "updated_at", "_ingested_at"])
        .unique(subset=["event_id"], keep="last", maintain_order=True)
        .select(list(SCHEMA))
        .collect()
    )
    uri = str(lake / "silver_events")
    if DeltaTable.is_deltatable(uri):
        (
            DeltaTable(uri)
            .merge(df, "t.event_id = s.event_id", source_alias="s", target_alias="t")
            .when_matched_update_all(predicate="s.updated_at > t.updated_at")
            .when_not_matched_insert_all()
            .execute()
        )
    else:
        write_deltalake(uri, df, mode="error")


def gold(lake: Path) -> None:
    df = (
        pl.scan_delta(str(lake / "silver_events"))
        .filter(pl.col("event_type") == "purchase")
        .group_by("event_date", "region")
        .agg(
            pl.col("amount").sum().round(2).alias("total_sales"),
            pl.len().cast(pl.Int64).alias("transaction_count"),
            pl.col("user_id").n_unique().cast(pl.Int64).alias("unique_customers"),
        )
        .sort("region", "event_date")
        .with_columns(
            pl.col("total_sales").rolling_mean_by("event_date", window_size="7d").over("region").round(4)
            .alias("rolling_mean_sales")
        )
        .collect()
    )
    write_deltalake(str(lake / "gold_daily_sales"), df, mode="overwrite")


def main() -> None:
    landing, lake = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    which = sys.argv[3] if len(sys.argv) > 3 else "all"
    if which in ("bronze", "all"):
        bronze(landing, lake)
    if which in ("silver", "all"):
        silver(lake)
    if which in ("gold", "all"):
        gold(lake)


if __name__ == "__main__":
    main()
