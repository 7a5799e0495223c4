"""``latest_per_key`` keeps, per merge key, the row a full sort by ``order_by`` keeps last.

The function takes a shortcut (only rows whose key hash repeats are sorted); these tests
hold it to the plain definition, including ties, nulls and composite keys, and check
that the rows come out ordered by the first ``order_by`` column, then arrival (the row
groups' min/max statistics then let range readers skip them).
"""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medallion_cli.errors import MaterializeError
from medallion_cli.materialize import latest_per_key
from medallion_cli.project import TargetConfig

ROWS = st.lists(
    st.tuples(
        st.integers(0, 6),                                # k1: a small key space, many repeats
        st.sampled_from(["a", "b", None]),                # k2
        st.one_of(st.none(), st.integers(0, 3)),          # v1: ties and nulls
        st.one_of(st.none(), st.sampled_from(["x", "y"])),  # v2
    ),
    max_size=60,
)


def frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"k1": pl.Int64, "k2": pl.String, "v1": pl.Int64, "v2": pl.String},
                        orient="row").with_row_index("pos")


def reference(df: pl.DataFrame, keys: list[str], order_by: list[str]) -> pl.DataFrame:
    return df.sort(order_by, maintain_order=True, nulls_last=False).unique(subset=keys, keep="last",
                                                                           maintain_order=True)


@settings(max_examples=300, deadline=None)
@given(ROWS, st.sampled_from([["k1"], ["k1", "k2"]]), st.sampled_from([["v1"], ["v1", "v2"], ["v2", "v1"]]))
def test_same_rows_as_a_full_sort(rows, keys, order_by):
    df = frame(rows)
    got = latest_per_key(df, TargetConfig("t", "merge", keys=tuple(keys), order_by=tuple(order_by)))
    want = reference(df, keys, order_by)
    assert got.sort("pos").equals(want.sort("pos")), "the same rows"
    assert got.equals(want.sort("pos").sort(order_by[0], maintain_order=True, nulls_last=False)), \
        "in order of the first order_by column, then arrival"


def test_unique_keys_come_back_unchanged():
    df = frame([(i, "a", i % 2, "x") for i in range(50)])
    assert latest_per_key(df, TargetConfig("t", "merge", keys=("k1",), order_by=("v1",))).equals(
        df.sort("v1", maintain_order=True))  # unique keys: only ordered
    assert latest_per_key(df, TargetConfig("t", "merge", keys=("k1",))).equals(df)


def test_duplicates_without_order_by_are_refused():
    df = frame([(1, "a", 1, "x"), (2, "a", 1, "x"), (1, "a", 2, "y")])
    with pytest.raises(MaterializeError, match="2 rows of the output share a key"):
        latest_per_key(df, TargetConfig("t", "merge", keys=("k1",)))
    # the same k1 under different k2 is no duplicate of a composite key
    assert latest_per_key(df, TargetConfig("t", "merge", keys=("k1", "v1"))).height == 3
