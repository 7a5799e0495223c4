"""Gold: daily purchases per customer segment (silver_events joined with silver_customers)."""

import polars as pl


def gold_sales_by_segment(
    silver_events: pl.LazyFrame, silver_customers: pl.LazyFrame, sales_event_types: list[str]
) -> pl.LazyFrame:
    """Total amount and number of sales per event_date and segment; a sale whose user has no
    customer row counts under segment ``unknown``."""
    segments = silver_customers.select(pl.col("customer_id").alias("user_id"), "segment")
    return (
        silver_events.filter(pl.col("event_type").is_in(sales_event_types))
        .join(segments, on="user_id", how="left")
        .with_columns(pl.col("segment").fill_null("unknown"))
        .group_by("event_date", "segment")
        .agg(
            pl.col("amount").sum().round(2).alias("total_sales"),
            pl.len().cast(pl.Int64).alias("transaction_count"),
        )
    )
