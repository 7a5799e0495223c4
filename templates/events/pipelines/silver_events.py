"""Silver: clean and normalized events, one row per event in the table.

Input ``bronze_events`` is the bronze Delta table. The ``silver_events`` frame may hold
several versions of an event (updates, re-sent files). medallion then, in this order:

1. checks every row against the ``SilverEvents`` schema (schemas.py) and quarantines the
   invalid ones (see conf/pipelines/silver_events.yml);
2. keeps, per ``event_id``, the newest *valid* version by ``order_by`` (``updated_at``,
   then ``_ingested_at``), and merges it into the ``silver_events`` table, where an older
   version never replaces a newer one.

So an invalid correction is quarantined and never erases good data, and the result is the
same however the landing files were batched.
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
    """The event columns plus lineage: the landing file and when it was ingested (which
    breaks ties between versions)."""
    return normalized_events.select(*EVENT_COLUMNS, "_ingested_at", "_source_file")
