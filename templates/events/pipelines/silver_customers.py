"""Silver: clean customers. medallion checks every version against SilverCustomers and keeps
the newest valid one per customer_id (see conf/pipelines/silver_customers.yml)."""

import polars as pl

CUSTOMER_COLUMNS = ["customer_id", "name", "segment", "country", "updated_at"]


def silver_customers(bronze_customers: pl.LazyFrame) -> pl.LazyFrame:
    """Trimmed names, lower-case segments, upper-case country codes, plus lineage."""
    return bronze_customers.with_columns(
        pl.col("name").str.strip_chars(),
        pl.col("segment").str.strip_chars().str.to_lowercase(),
        pl.col("country").str.strip_chars().str.to_uppercase(),
    ).select(*CUSTOMER_COLUMNS, "_ingested_at", "_source_file")
