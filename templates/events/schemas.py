"""Pandera schemas for this project's tables (polars backend).

medallion's data-quality gates validate layer outputs against these before writing.
Import pandera lazily in your own code: ``import pandera.polars`` costs about a second.
"""

import pandera.polars as pa
import polars as pl

EVENT_TYPES = ["click", "view", "purchase", "refund"]


class SilverEvents(pa.DataFrameModel):
    """One clean row per event."""

    event_id: str = pa.Field(nullable=False, unique=True)
    user_id: int = pa.Field(nullable=False, gt=0)
    event_type: str = pa.Field(isin=EVENT_TYPES)
    amount: float = pa.Field(ge=0)
    event_date: pl.Date = pa.Field(nullable=False)
    updated_at: pl.Datetime(time_zone="UTC") = pa.Field(nullable=False)
    region: str = pa.Field(nullable=False)

    class Config:
        strict = True
