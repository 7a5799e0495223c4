"""Bronze: raw events as they landed, plus ingestion metadata.

medallion reads the landing files (with the schema in conf/pipelines/bronze.yml) and hands
them to this DAG as the ``landing`` frame, with a ``_source_file`` column. The frame this
module's ``bronze_events`` node returns is appended to the ``bronze_events`` Delta table.
"""

from datetime import datetime

import polars as pl


def bronze_events(landing: pl.LazyFrame, run_id: str, run_started_at: datetime) -> pl.LazyFrame:
    """Landing rows, untouched, with when and by which run they were ingested."""
    return landing.with_columns(
        pl.lit(run_started_at, dtype=pl.Datetime("us", "UTC")).alias("_ingested_at"),
        pl.lit(run_id, dtype=pl.String).alias("_run_id"),
    )
