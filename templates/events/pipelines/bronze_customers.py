"""Bronze: customer rows as they landed, with the run that ingested them.

medallion adds ``_source_file`` and ``_ingested_at`` to the ``landing`` frame itself.
"""

import polars as pl


def bronze_customers(landing: pl.LazyFrame, run_id: str) -> pl.LazyFrame:
    """Landing rows, untouched, with the run that ingested them."""
    return landing.with_columns(pl.lit(run_id, dtype=pl.String).alias("_run_id"))
