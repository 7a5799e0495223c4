"""Quarantine row keys: the vectorized path gives exactly the Python definition.

A quarantined row is recognised across runs by its key; if the key of a row ever changed
(a new medallion, a new polars), re-reading it would quarantine it twice. So the keys are
checked against the definition for every column type and the values where JSON text is
tricky, and a few are pinned to literal digests computed once with the definition.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from medallion_cli import rowkeys
from medallion_cli.quality import ROW_KEY, row_keys

UTC = timezone.utc
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e17, max_value=1e17),
    st.sampled_from([0.0, -0.0, 1e-4, 9.99e-5, 1e16, 9999999999999998.0, 0.1, 2.675, 1e-5, 12.5]),
)
TEXT = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F)),
    st.sampled_from(["", "a\\b", 'say "hi"', "tab\there", "\x7f", "é", "日本", "\U0001F600", "\\\"", "  "]),
)
DATETIMES = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))


def reference(df: pl.DataFrame) -> list[str]:
    return [rowkeys.python_key(values) for values in df.iter_rows()]


@st.composite
def frames(draw):
    n = draw(st.integers(0, 12))

    def column(values):
        return draw(st.lists(st.one_of(st.none(), values), min_size=n, max_size=n))

    return pl.DataFrame({
        "s": pl.Series(column(TEXT), dtype=pl.String),
        "i": pl.Series(column(st.integers(-(2**63), 2**63 - 1)), dtype=pl.Int64),
        "u8": pl.Series(column(st.integers(0, 255)), dtype=pl.UInt8),
        "u64": pl.Series(column(st.integers(0, 2**64 - 1)), dtype=pl.UInt64),
        "b": pl.Series(column(st.booleans()), dtype=pl.Boolean),
        "f": pl.Series(column(FLOATS), dtype=pl.Float64),
        "f32": pl.Series(column(st.floats(width=32, allow_nan=False)), dtype=pl.Float32),
        "d": pl.Series(column(st.dates(min_value=date(1, 1, 1))), dtype=pl.Date),
        "ts_utc": pl.Series(column(DATETIMES), dtype=pl.Datetime("us")).dt.replace_time_zone("UTC"),
        "ts": pl.Series(column(DATETIMES), dtype=pl.Datetime("us")),
        "ts_ms": pl.Series(column(DATETIMES), dtype=pl.Datetime("us")).dt.cast_time_unit("ms"),
    })


@settings(max_examples=400, deadline=None)
@given(frames())
def test_vectorized_keys_equal_the_definition(df):
    assert rowkeys.row_keys(df) == reference(df)


@settings(max_examples=50, deadline=None)
@given(frames())
def test_unhandled_types_take_the_python_path(df):
    df = df.with_columns(
        pl.Series("lst", [[1, 2]] * df.height, dtype=pl.List(pl.Int64)),
        pl.Series("dur", [timedelta(seconds=3)] * df.height, dtype=pl.Duration("us")),
    )
    assert rowkeys.row_keys(df) == reference(df)


def test_keys_are_pinned():
    """Digests computed with the definition when it was introduced; they must never change."""
    df = pl.DataFrame({
        "event_id": [" e1 ", "é", None],
        "user_id": [7, None, -3],
        "amount": [12.5, 1e-05, None],
        "event_date": [date(2024, 1, 2), None, date(2024, 2, 29)],
        "updated_at": [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(2024, 1, 2, 3, 4, 5, 120, tzinfo=UTC), None],
        "_source_file": ["a.parquet", 'q"uote\\.csv', "c.json"],
    })
    assert json.dumps(list(df.row(0)), default=str) == (
        '[" e1 ", 7, 12.5, "2024-01-02", "2024-01-02 03:04:05+00:00", "a.parquet"]')
    assert rowkeys.row_keys(df) == reference(df) == [
        "9ff89c96b6b3e9cb89f63980ae4cf1b5afa894b921d7dc58bc43593b9585e468",
        "9e816ae0b099884d95b79ee0644cb2ed8c762fec292e8a81657bacaf1a019d46",
        "af8b242f60196dd20247f0bad49e72f0ac6261a6407b5a9f7555d785c4593385",
    ]


def test_quarantine_keys_leave_out_per_ingestion_columns():
    df = pl.DataFrame({"a": [1, 1], "_ingested_at": [1, 2], "_run_id": ["x", "y"], "_errors": [[1], [2]]})
    keys = row_keys(df)
    assert keys.name == ROW_KEY and keys[0] == keys[1] == rowkeys.python_key((1,))


def test_typical_rows_are_hashed_without_the_python_path(monkeypatch):
    df = pl.DataFrame({
        "event_id": ["e1", 'x"y', "a\\b", None], "user_id": [1, -2, None, 4], "amount": [0.0, -0.0, 12.34, 1e15],
        "ok": [True, False, None, True], "event_date": [date(2024, 1, 1), None, date(1999, 12, 31), date(2024, 2, 29)],
        "updated_at": [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC), None,
                       datetime(1960, 6, 1, 12, 30, 15, 999999, tzinfo=UTC)],
    })
    want = reference(df)

    def refuse(values):
        raise AssertionError(f"row {values} took the Python path")

    monkeypatch.setattr(rowkeys, "python_key", refuse)
    assert rowkeys.row_keys(df) == want
