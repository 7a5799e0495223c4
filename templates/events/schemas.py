"""Pandera schemas for this project's tables (polars backend).

Layers name them under ``medallion.quality`` in their YAML; medallion validates the layer's
output against them before writing. Import pandera lazily in your own code:
``import pandera.polars`` costs about a second.
"""

import pandera.polars as pa
import polars as pl

EVENT_TYPES = ["click", "view", "purchase", "refund"]


class SilverEvents(pa.DataFrameModel):
    """One clean version of an event. (Uniqueness of event_id is not checked here: medallion
    keeps the newest valid version per key after this check, see conf/pipelines/silver_events.yml.)"""

    event_id: str = pa.Field(nullable=False, str_length={"min_value": 1})
    user_id: int = pa.Field(nullable=False, gt=0)
    event_type: str = pa.Field(nullable=False, isin=EVENT_TYPES)
    amount: float = pa.Field(nullable=False, ge=0)
    event_date: pl.Date = pa.Field(nullable=False)
    updated_at: pl.Datetime(time_zone="UTC") = pa.Field(nullable=False)
    region: str = pa.Field(nullable=False)
    ingested_at: pl.Datetime(time_zone="UTC") = pa.Field(nullable=False, alias="_ingested_at")
    source_file: str = pa.Field(nullable=False, alias="_source_file")

    class Config:
        strict = True


SEGMENTS = ["consumer", "business", "enterprise"]


class SilverCustomers(pa.DataFrameModel):
    """One clean version of a customer."""

    customer_id: int = pa.Field(nullable=False, gt=0)
    name: str = pa.Field(nullable=False, str_length={"min_value": 1})
    segment: str = pa.Field(nullable=False, isin=SEGMENTS)
    country: str = pa.Field(nullable=False, str_length={"min_value": 2, "max_value": 2})
    updated_at: pl.Datetime(time_zone="UTC") = pa.Field(nullable=False)
    ingested_at: pl.Datetime(time_zone="UTC") = pa.Field(nullable=False, alias="_ingested_at")
    source_file: str = pa.Field(nullable=False, alias="_source_file")

    class Config:
        strict = True
