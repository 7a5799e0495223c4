"""Silver: clean, normalized, one row per event.

Input ``bronze_events`` is the bronze Delta table. The ``silver_events`` frame is checked
against the ``SilverEvents`` schema (schemas.py): invalid rows are quarantined, the rest
merged into the ``silver_events`` table on ``event_id`` (see conf/pipelines/silver.yml).
"""

import polars as pl

EVENT_COLUMNS = ["event_id", "user_id", "event_type", "amount", "event_date", "updated_at", "region"]


def normalized_events(bronze_events: pl.LazyFrame, amount_decimals: int) -> pl.LazyFrame:
    """Trimmed, lower-case event types and regions; amounts rounded half away from zero."""
    return bronze_events.with_columns(
        pl.col("event_id").str.strip_chars(),
        pl.col("event_type").str.strip_chars().str.to_lowercase(),
        pl.col("region").str.strip_chars().str.to_lowercase(),
        pl.col("amount").round(amount_decimals, mode="half_away_from_zero"),
    )


def silver_events(normalized_events: pl.LazyFrame) -> pl.LazyFrame:
    """One row per event_id: the version with the latest updated_at (ties: latest ingested).

    Rows without an id cannot be de-duplicated; they are kept so that the quality gate
    quarantines them instead of letting them vanish.
    """
    keyed = normalized_events.filter(pl.col("event_id").is_not_null())
    latest = keyed.sort(["event_id", "updated_at", "_ingested_at", "_source_file"]).unique(
        subset=["event_id"], keep="last", maintain_order=True
    )
    return pl.concat([latest, normalized_events.filter(pl.col("event_id").is_null())]).select(EVENT_COLUMNS)
