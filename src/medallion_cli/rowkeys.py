"""Stable identities of quarantined rows: SHA-256 of the row's values as JSON text.

The definition is the Python one, :func:`python_key`: ``json.dumps(list(values),
default=str)`` of the row as polars gives it to Python, hashed. It must never change, or
a row quarantined before an upgrade would be quarantined again after it. Hashing each row
in Python costs about 7 us (the conversion to Python objects and ``json.dumps`` are most of
it), 20 s at 3M invalid rows; :func:`row_keys` builds the same JSON text with polars
expressions for the values whose text it can reproduce exactly, and leaves only the
SHA-256 to Python (about 1 us a row). A value it cannot reproduce (non-ASCII or control
characters, floats in exponent notation, unusual types) sends its row down the Python
path, so the result is byte-identical either way; ``tests/test_rowkeys.py`` holds the two
to each other.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl


def python_key(values: tuple[Any, ...]) -> str:
    """The definition: SHA-256 (hex) of the JSON text of one row's Python values."""
    return hashlib.sha256(json.dumps(list(values), default=str).encode()).hexdigest()


def _quoted(text: pl.Expr) -> pl.Expr:
    return '"' + text + '"'


def _fragment(name: str, dtype: pl.DataType) -> pl.Expr | None:
    """``json.dumps`` of the column's values as polars expressions, null where the text
    might differ; None for a column type that is always left to Python."""
    import polars as pl

    col = pl.col(name)
    if dtype == pl.String:
        printable = col.str.contains(r"^[ -~]*$")  # json.dumps escapes everything else (ensure_ascii)
        text = _quoted(col.str.replace_all("\\", "\\\\", literal=True).str.replace_all('"', '\\"', literal=True))
        value = pl.when(printable).then(text)
    elif dtype.is_integer():
        value = col.cast(pl.String)
    elif dtype == pl.Boolean:
        value = pl.when(col).then(pl.lit("true")).otherwise(pl.lit("false"))
    elif dtype.is_float():
        x = col.cast(pl.Float64)  # a Float32 reaches Python as the double it is
        plain = (x == 0) | ((x.abs() >= 1e-4) & (x.abs() < 1e16))  # repr switches to exponents outside
        value = pl.when(plain).then(x.cast(pl.String))
    elif dtype == pl.Date:
        year = col.dt.year()
        value = pl.when((year >= 1000) & (year <= 9999)).then(_quoted(col.dt.strftime("%Y-%m-%d")))
    elif isinstance(dtype, pl.Datetime) and dtype.time_unit in ("us", "ms") and dtype.time_zone in (None, "UTC"):
        year = col.dt.year()
        micros = col.dt.microsecond()
        text = col.dt.strftime("%Y-%m-%d %H:%M:%S") + pl.when(micros != 0).then(
            "." + micros.cast(pl.String).str.zfill(6)).otherwise(pl.lit(""))
        if dtype.time_zone == "UTC":
            text = text + "+00:00"
        value = pl.when((year >= 1000) & (year <= 9999)).then(_quoted(text))
    else:
        return None
    return pl.when(col.is_null()).then(pl.lit("null")).otherwise(value)


def row_keys(rows: pl.DataFrame) -> list[str]:
    """:func:`python_key` of every row of ``rows``, in order."""
    import polars as pl

    if rows.height == 0:
        return []
    fragments = [_fragment(name, dtype) for name, dtype in rows.schema.items()]
    if rows.width == 0 or any(f is None for f in fragments):
        return [python_key(values) for values in rows.iter_rows()]
    texts = rows.select(("[" + pl.concat_str(fragments, separator=", ") + "]").alias("text"))["text"].to_list()
    keys = []
    leftovers = []
    for i, text in enumerate(texts):
        if text is None:
            leftovers.append(i)
            keys.append("")
        else:
            keys.append(hashlib.sha256(text.encode()).hexdigest())
    if leftovers:
        for i, values in zip(leftovers, rows[leftovers].iter_rows(), strict=True):
            keys[i] = python_key(values)
    return keys
