"""Generate landing files of synthetic events (and customers): N rows in K files, seeded.

Like the sample data, in proportion: ~1% exact duplicates, ~1% later updates of an earlier
event, ~0.5% invalid rows (null id, negative amount, unknown type), mixed-case types.
Events draw ``user_id`` uniformly from 1 .. rows // 20 - 1 (50k users at 1M rows, 250k at 5M).

Customers (``--customers N``): ids 1 .. N, so they cover every user_id while
N >= rows // 20 and the lower N user ids otherwise (events of the other users join as
segment ``unknown``); ~1% later versions that move a customer to another segment and a few
invalid rows (null name, unknown segment, bad country code), mixed case and padding.

    python bench/generate.py OUT_DIR --rows 1000000 --files 10 [--seed 7] [--format parquet|csv|jsonl]
        [--customers 100000 --customers-out CUSTOMERS_DIR] [--chunks K]

``--chunks K`` generates K independent seeded chunks of rows/K (for 100M rows in bounded memory).
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

REGIONS = np.array(["north", "south", "east", "west", "central"])
TYPES = np.array(["click", "view", "purchase", "purchase", "refund", "Purchase", "VIEW"])
SEGMENTS = np.array(["consumer", "consumer", "business", "enterprise", "Business", " consumer"])
COUNTRIES = np.array(["FR", "DE", "JP", "US", "GB", "es", "IT"])


def events(rows: int, seed: int, first_id: int = 0, days: int = 365, users: int | None = None) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    users = users if users is not None else rows // 20
    n_unique = int(rows * 0.97)
    # Ids grow with event time (like ULIDs, snowflake or sequence ids): sorted days, then ids.
    day = np.sort(rng.integers(0, days, n_unique))
    ids = np.arange(first_id, first_id + n_unique)
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    df = pl.DataFrame(
        {
            "event_id": pl.Series(ids).cast(pl.String).str.zfill(10).str.replace(r"^", "evt-"),
            "user_id": rng.integers(1, max(2, users), n_unique),
            "event_type": TYPES[rng.integers(0, len(TYPES), n_unique)],
            "amount": np.round(rng.gamma(2.0, 30.0, n_unique), 3),
            "day": day,
            "seconds": rng.integers(0, 86_400, n_unique),
            "region": REGIONS[rng.integers(0, len(REGIONS), n_unique)],
        }
    ).with_columns(
        (pl.lit(base.date()) + pl.duration(days=pl.col("day"))).alias("event_date"),
        (pl.lit(base) + pl.duration(days=pl.col("day"), seconds=pl.col("seconds"))).alias("updated_at"),
    )
    df = df.select("event_id", "user_id", "event_type", "amount", "event_date", "updated_at", "region")
    n_dup = rows // 100
    n_upd = rows // 100
    n_bad = rows - n_unique - n_dup - n_upd
    dups = df.sample(n_dup, seed=seed + 1)
    upd = df.sample(n_upd, seed=seed + 2).with_columns(
        pl.col("updated_at") + pl.duration(hours=6), (pl.col("amount") * 1.1).round(3)
    )
    bad = df.sample(max(n_bad, 0), seed=seed + 3).with_columns(
        pl.when(pl.int_range(pl.len()) % 3 == 0).then(None).otherwise(pl.col("event_id")).alias("event_id"),
        pl.when(pl.int_range(pl.len()) % 3 == 1).then(-pl.col("amount")).otherwise(pl.col("amount")).alias("amount"),
        pl.when(pl.int_range(pl.len()) % 3 == 2).then(pl.lit("hover")).otherwise(pl.col("event_type")).alias("event_type"),
    )
    return pl.concat([df, dups, upd, bad]).sample(fraction=1.0, shuffle=True, seed=seed + 4)


def customers(n: int, seed: int) -> pl.DataFrame:
    """``n`` customers with ids 1..n, plus ~1% later versions with another segment and
    ~0.2% invalid rows (null name, unknown segment, three-letter country), shuffled."""
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1)
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    df = pl.DataFrame(
        {
            "customer_id": ids,
            "name": pl.Series(ids).cast(pl.String).str.replace(r"^", "Customer "),
            "segment": SEGMENTS[rng.integers(0, len(SEGMENTS), n)],
            "country": COUNTRIES[rng.integers(0, len(COUNTRIES), n)],
            "seconds": rng.integers(0, 30 * 86_400, n),
        }
    ).with_columns((pl.lit(base) + pl.duration(seconds=pl.col("seconds"))).alias("updated_at")).drop("seconds")
    n_upd = max(1, n // 100)
    moved = df.sample(n_upd, seed=seed + 1).with_columns(
        pl.col("updated_at") + pl.duration(days=90),
        # Another segment than the one it had (case and padding normalized).
        pl.col("segment").str.strip_chars().str.to_lowercase()
        .replace_strict({"consumer": "business", "business": "enterprise", "enterprise": "consumer"}),
    )
    n_bad = max(3, n // 500)
    bad = df.sample(n_bad, seed=seed + 2).with_columns(
        pl.col("updated_at") + pl.duration(days=120),
        pl.when(pl.int_range(pl.len()) % 3 == 0).then(None).otherwise(pl.col("name")).alias("name"),
        pl.when(pl.int_range(pl.len()) % 3 == 1).then(pl.lit("vip")).otherwise(pl.col("segment")).alias("segment"),
        pl.when(pl.int_range(pl.len()) % 3 == 2).then(pl.lit("FRA")).otherwise(pl.col("country")).alias("country"),
    )
    return pl.concat([df, moved, bad]).sample(fraction=1.0, shuffle=True, seed=seed + 3)


def incremental_batch(existing: pl.DataFrame, rows: int, seed: int) -> pl.DataFrame:
    """A realistic next batch: half new events on the last 7 days (a few late ones, dated a
    month back), half updates of existing events from the last 30 days."""
    n_new = rows // 2
    fresh = events(n_new, seed, first_id=9 * 10**9, days=7).with_columns(
        pl.col("event_date") + pl.duration(days=358), pl.col("updated_at") + pl.duration(days=358)
    )
    late = fresh.head(max(1, n_new // 20)).with_columns(
        pl.col("event_date") - pl.duration(days=30), pl.col("updated_at") + pl.duration(hours=1)
    )
    fresh = pl.concat([fresh.slice(late.height), late])
    recent = existing.filter(pl.col("event_date") >= pl.col("event_date").max() - pl.duration(days=30))
    updates = recent.sample(min(rows - fresh.height, recent.height), seed=seed + 9).with_columns(
        pl.col("updated_at") + pl.duration(days=1), (pl.col("amount") * 1.1).round(3)
    )
    return pl.concat([fresh, updates]).sample(fraction=1.0, shuffle=True, seed=seed + 10)


def write_files(df: pl.DataFrame, out: Path, files: int, fmt: str, prefix: str = "events", first: int = 0) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    size = -(-df.height // files)
    for i in range(files):
        part = df.slice(i * size, size)
        path = out / f"{prefix}_{first + i:04d}.{fmt}"
        if fmt == "parquet":
            part.write_parquet(path)
        elif fmt == "csv":
            part.write_csv(path)
        else:
            part.write_ndjson(path)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--format", choices=["parquet", "csv", "jsonl"], default="parquet")
    parser.add_argument("--customers", type=int, default=100_000, help="customers (default 100000)")
    parser.add_argument("--customers-out", type=Path, help="also write customers here (2 files)")
    parser.add_argument("--chunks", type=int, default=1,
                        help="generate in K chunks of rows/K (seed+chunk, users from all rows) to bound memory")
    args = parser.parse_args()
    if args.chunks <= 1:
        write_files(events(args.rows, args.seed), args.out, args.files, args.format)
    else:
        # Each chunk is a seeded sample of its own (its duplicates and updates stay inside it);
        # user ids are drawn from the whole set's range, ids never collide between chunks.
        per, files = args.rows // args.chunks, args.files // args.chunks
        for c in range(args.chunks):
            df = events(per, args.seed + 1000 * c, first_id=c * per, users=args.rows // 20)
            write_files(df, args.out, files, args.format, first=c * files)
            del df
    if args.customers_out:
        write_files(customers(args.customers, args.seed), args.customers_out, 2, args.format, prefix="customers")


if __name__ == "__main__":
    main()
