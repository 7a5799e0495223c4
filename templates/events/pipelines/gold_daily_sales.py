"""Gold: daily sales per region and a rolling mean, computed from silver_events."""

import polars as pl


def daily_sales(silver_events: pl.LazyFrame, sales_event_types: list[str]) -> pl.LazyFrame:
    """Total amount, number of sales and distinct customers per day and region."""
    return (
        silver_events.filter(pl.col("event_type").is_in(sales_event_types))
        .group_by("event_date", "region")
        .agg(
            pl.col("amount").sum().round(2).alias("total_sales"),
            pl.len().cast(pl.Int64).alias("transaction_count"),
            pl.col("user_id").n_unique().cast(pl.Int64).alias("unique_customers"),
        )
    )


def gold_daily_sales(daily_sales: pl.LazyFrame, rolling_window_days: int) -> pl.LazyFrame:
    """Daily sales with the mean of total_sales over the trailing window of calendar days.

    The window ends on (and includes) each row's date; days without sales are simply
    absent from the window rather than counted as zero.
    """
    return daily_sales.sort("region", "event_date").with_columns(
        pl.col("total_sales")
        .rolling_mean_by("event_date", window_size=f"{rolling_window_days}d")
        .over("region")
        .round(4)
        .alias("rolling_mean_sales")
    )
