"""Silver: clean, normalized, one row per event.

Input ``bronze_events`` is the bronze Delta table. The ``silver_events`` frame is merged
into the ``silver_events`` table on ``event_id`` (see conf/pipelines/silver.yml).
"""

import polars as pl

EVENT_COLUMNS = ["event_id", "user_id", "event_type", "amount", "event_date", "updated_at", "region"]


def normalized_events(bronze_events: pl.LazyFrame, amount_decimals: int) -> pl.LazyFrame:
    """Trimmed, lower-case event types and regions; amounts rounded."""
    return bronze_events.with_columns(
        pl.col("event_id").str.strip_chars(),
        pl.col("event_type").str.strip_chars().str.to_lowercase(),
        pl.col("region").str.strip_chars().str.to_lowercase(),
        pl.col("amount").round(amount_decimals, mode="half_away_from_zero"),
    )


def valid_events(normalized_events: pl.LazyFrame, accepted_event_types: list[str]) -> pl.LazyFrame:
    """Rows that can be trusted: ids, dates and amounts present, known event types."""
    return normalized_events.filter(
        pl.col("event_id").is_not_null()
        & (pl.col("event_id") != "")
        & pl.col("user_id").is_not_null()
        & (pl.col("user_id") > 0)
        & pl.col("event_date").is_not_null()
        & pl.col("updated_at").is_not_null()
        & pl.col("region").is_not_null()
        & pl.col("amount").is_not_null()
        & (pl.col("amount") >= 0)
        & pl.col("event_type").is_in(accepted_event_types)
    )


def silver_events(valid_events: pl.LazyFrame) -> pl.LazyFrame:
    """One row per event_id: the version with the latest updated_at (ties: latest ingested)."""
    return (
        valid_events.sort(["event_id", "updated_at", "_ingested_at"])
        .unique(subset=["event_id"], keep="last", maintain_order=True)
        .select(EVENT_COLUMNS)
    )
