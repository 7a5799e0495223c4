"""Regenerate the sample landing files shipped in templates/events/data/landing/{events,customers}/.

Deterministic (seeded). Run: python scripts/make_sample_data.py
The files carry a few problems on purpose: exact duplicates, updated versions of an event,
null ids and amounts, a negative amount, an unknown event type, mixed-case event types and
amounts with more than two decimals.
"""

import random
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl

LANDING = Path(__file__).resolve().parents[1] / "templates" / "events" / "data" / "landing"
OUT = LANDING / "events"
REGIONS = ["north", "south", "east", "west"]
TYPES = ["click", "view", "purchase", "purchase", "refund"]


def _rows(rng: random.Random, start: int, n: int, day0: date) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        d = day0 + timedelta(days=rng.randrange(0, 5))
        etype = rng.choice(TYPES)
        amount = round(rng.uniform(1, 250), 3) if etype in ("purchase", "refund") else 0.0
        rows.append(
            {
                "event_id": f"evt-{i:05d}",
                "user_id": rng.randrange(1, 25),
                "event_type": etype,
                "amount": amount,
                "event_date": d,
                "updated_at": datetime(d.year, d.month, d.day, rng.randrange(0, 24), rng.randrange(60), tzinfo=timezone.utc),
                "region": rng.choice(REGIONS),
            }
        )
    return rows


def main() -> None:
    rng = random.Random(42)
    OUT.mkdir(parents=True, exist_ok=True)
    day = date(2024, 1, 1)
    a = _rows(rng, 1, 30, day)
    b = _rows(rng, 31, 30, day + timedelta(days=5))
    c = _rows(rng, 61, 30, day + timedelta(days=10))

    # Problems on purpose.
    a[3]["event_type"] = "PURCHASE"  # mixed case: normalized
    a[4]["event_type"] = "Click"
    a[5]["amount"] = None  # null amount: rejected
    a[6]["event_id"] = None  # null id: rejected
    a[7]["amount"] = -12.5  # negative: rejected
    a[8]["event_type"] = "hover"  # unknown type: rejected
    a.append(dict(a[0]))  # exact duplicate within a file
    b.append(dict(a[1]))  # exact duplicate across files
    # An update: same event, later updated_at, new amount (the later version wins).
    upd = dict(a[2], event_type="purchase", amount=99.999)
    upd["updated_at"] = a[2]["updated_at"] + timedelta(days=3)
    c.append(upd)
    # A stale copy of an updated event arriving last: must not win.
    stale = dict(b[2])
    stale["updated_at"] = b[2]["updated_at"] - timedelta(days=1)
    stale["amount"] = 1.0
    stale["event_type"] = "purchase"
    c.append(stale)

    schema = {
        "event_id": pl.String, "user_id": pl.Int64, "event_type": pl.String, "amount": pl.Float64,
        "event_date": pl.Date, "updated_at": pl.Datetime("us", "UTC"), "region": pl.String,
    }
    pl.DataFrame(a, schema=schema, orient="row").write_csv(OUT / "events_2024-01-01.csv")
    pl.DataFrame(b, schema=schema, orient="row").write_parquet(OUT / "events_2024-01-06.parquet")
    pl.DataFrame(c, schema=schema, orient="row").write_ndjson(OUT / "events_2024-01-11.jsonl")


def customers() -> None:
    """Customers 1-20 (users 21-24 have none: their sales count as "unknown"), then a later
    file that moves two of them to another segment, lacks a segment for one (quarantined) and
    carries a stale copy that must not win."""
    rng = random.Random(7)
    out = LANDING / "customers"
    out.mkdir(parents=True, exist_ok=True)
    rows = ["customer_id,name,segment,country,updated_at"]
    for cid in range(1, 21):
        segment, country = rng.choice(["consumer", "business", "enterprise"]), rng.choice(["DE", "FR", "US", "JP"])
        rows.append(f"{cid},Customer {cid},{segment},{country},2024-01-01T00:00:00Z")
    (out / "customers_2024-01-01.csv").write_text("\n".join(rows) + "\n")
    later = ["customer_id,name,segment,country,updated_at",
             "3,Customer 3,enterprise,DE,2024-01-09T10:00:00Z",
             "7,Customer 7 GmbH,enterprise,DE,2024-01-09T11:00:00Z",
             "12,Customer 12,,US,2024-01-09T12:00:00Z",
             "7,Customer 7,consumer,DE,2024-01-02T00:00:00Z"]
    (out / "customers_2024-01-10.csv").write_text("\n".join(later) + "\n")


if __name__ == "__main__":
    main()
    customers()
