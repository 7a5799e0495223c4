"""Bronze: raw events as they landed, plus ingestion metadata.

medallion reads the landing files (with the schema in conf/pipelines/bronze_events.yml) and hands
them to this DAG as the ``landing`` frame, with two columns of its own: ``_source_file``
(the file's path under the landing folder) and ``_ingested_at`` (when the file was first
ingested; a full refresh keeps it, so arrival order survives a rebuild). The frame this
module's ``bronze_events`` node returns is appended to the ``bronze_events`` Delta table.
"""

import polars as pl


def bronze_events(landing: pl.LazyFrame, run_id: str) -> pl.LazyFrame:
    """Landing rows, untouched, with the run that ingested them."""
    return landing.with_columns(pl.lit(run_id, dtype=pl.String).alias("_run_id"))
