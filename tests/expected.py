"""An independent, plain-Python statement of what each layer must produce.

The tests compare the Delta tables medallion writes with these, so the pipeline code is
never checked against itself. polars is used only to read files.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

import polars as pl

ACCEPTED = {"click", "view", "purchase", "refund"}
SCHEMA = {
    "event_id": pl.String, "user_id": pl.Int64, "event_type": pl.String, "amount": pl.Float64,
    "event_date": pl.Date, "updated_at": pl.Datetime("us", "UTC"), "region": pl.String,
}


def landing_rows(folder: Path) -> list[dict]:
    """Every row of every landing file, in file-name order."""
    rows: list[dict] = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".csv":
            df = pl.read_csv(path, schema=SCHEMA)
        elif path.suffix == ".parquet":
            df = pl.read_parquet(path)
        elif path.suffix in (".jsonl", ".json", ".ndjson"):
            df = pl.read_ndjson(path, schema=SCHEMA)
        else:
            continue
        rows.extend(df.to_dicts())
    return rows


def silver(rows: list[dict]) -> dict[str, dict]:
    """event_id -> the cleaned row that must be in silver."""
    best: dict[str, dict] = {}
    for raw in rows:
        r = dict(raw)
        eid = r["event_id"].strip() if r["event_id"] is not None else None
        etype = r["event_type"].strip().lower() if r["event_type"] is not None else None
        region = r["region"].strip().lower() if r["region"] is not None else None
        if not eid or r["user_id"] is None or r["user_id"] <= 0 or r["event_date"] is None:
            continue
        if r["updated_at"] is None or region is None or r["amount"] is None:
            continue
        amount = round(r["amount"], 2)
        if amount < 0 or etype not in ACCEPTED:
            continue
        clean = {**r, "event_id": eid, "event_type": etype, "region": region, "amount": amount}
        if eid not in best or clean["updated_at"] > best[eid]["updated_at"]:
            best[eid] = clean
    return best


def gold(silver_rows: dict[str, dict], window_days: int = 7) -> dict[tuple[date, str], dict]:
    """(event_date, region) -> daily sales with the trailing calendar-day mean."""
    groups: dict[tuple[date, str], list[dict]] = defaultdict(list)
    for r in silver_rows.values():
        if r["event_type"] == "purchase":
            groups[(r["event_date"], r["region"])].append(r)
    daily = {
        key: {
            "total_sales": round(sum(r["amount"] for r in rs), 2),
            "transaction_count": len(rs),
            "unique_customers": len({r["user_id"] for r in rs}),
        }
        for key, rs in groups.items()
    }
    for (day, region), row in daily.items():
        window = [
            v["total_sales"]
            for (d, reg), v in daily.items()
            if reg == region and day - timedelta(days=window_days) < d <= day
        ]
        row["rolling_mean_sales"] = sum(window) / len(window)
    return daily
