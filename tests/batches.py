"""Seeded batches of landing files with duplicates, updates, late and stale rows."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl

SCHEMA = {
    "event_id": pl.String, "user_id": pl.Int64, "event_type": pl.String, "amount": pl.Float64,
    "event_date": pl.Date, "updated_at": pl.Datetime("us", "UTC"), "region": pl.String,
}
FORMATS = ("csv", "parquet", "jsonl")


class EventStream:
    """Produces successive batches; remembers what it sent so it can update and resend it."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.sent: list[dict] = []
        self.next_id = 0
        self.day0 = date(2024, 3, 1)
        self.batch_no = 0

    def _event(self, day: date) -> dict:
        self.next_id += 1
        etype = self.rng.choice(["click", "view", "purchase", "purchase", "refund", "Purchase"])
        return {
            "event_id": f"e{self.next_id:06d}",
            "user_id": self.rng.randrange(1, 40),
            "event_type": etype,
            "amount": round(self.rng.uniform(0, 300), 2) if etype.lower() != "view" else 0.0,
            "event_date": day,
            "updated_at": datetime(day.year, day.month, day.day, self.rng.randrange(24), tzinfo=timezone.utc),
            "region": self.rng.choice(["north", "south", "east"]),
        }

    def batch(self, n: int = 120) -> list[dict]:
        self.batch_no += 1
        start = self.day0 + timedelta(days=3 * self.batch_no)
        rows = [self._event(start + timedelta(days=self.rng.randrange(3))) for _ in range(n)]
        # late arrivals: events dated weeks before this batch's days
        rows += [self._event(start - timedelta(days=self.rng.randrange(10, 30))) for _ in range(n // 10)]
        if self.sent:
            for old in self.rng.sample(self.sent, min(len(self.sent), n // 5)):
                upd = dict(old)
                upd["updated_at"] = old["updated_at"] + timedelta(days=self.rng.randrange(1, 5), seconds=self.rng.randrange(1, 999))
                upd["amount"] = round(self.rng.uniform(0, 300), 2)
                upd["event_type"] = "purchase"
                if self.rng.random() < 0.3:  # the update moves the event to another day
                    upd["event_date"] = old["event_date"] + timedelta(days=self.rng.choice([-2, 1, 4]))
                rows.append(upd)
            for old in self.rng.sample(self.sent, min(len(self.sent), n // 10)):
                stale = dict(old)  # an older version arriving late: must never win
                stale["updated_at"] = old["updated_at"] - timedelta(hours=self.rng.randrange(1, 48))
                stale["amount"] = 0.01
                rows.append(stale)
        rows += [dict(r) for r in self.rng.sample(rows, n // 10)]  # exact duplicates
        bad = self._event(start)
        bad["amount"] = -5.0
        rows.append(bad)
        self.sent.extend(r for r in rows if r["amount"] is not None and r["amount"] != 0.01)
        self.rng.shuffle(rows)
        return rows

    def write(self, rows: list[dict], landing: Path) -> Path:
        fmt = FORMATS[self.batch_no % len(FORMATS)]
        df = pl.DataFrame(rows, schema=SCHEMA, orient="row")
        path = landing / f"batch_{self.batch_no:03d}.{fmt}"
        if fmt == "csv":
            df.write_csv(path)
        elif fmt == "parquet":
            df.write_parquet(path)
        else:
            df.write_ndjson(path)
        return path


CUSTOMER_SCHEMA = {
    "customer_id": pl.Int64, "name": pl.String, "segment": pl.String, "country": pl.String,
    "updated_at": pl.Datetime("us", "UTC"),
}


class CustomerStream:
    """Batches of customer versions for the user ids EventStream draws (1..39): new
    customers, segment changes, stale versions arriving late, duplicates and one invalid row."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.latest: dict[int, dict] = {}
        self.batch_no = 0
        self.t0 = datetime(2024, 3, 1, tzinfo=timezone.utc)

    def batch(self, n: int = 15) -> list[dict]:
        self.batch_no += 1
        at = self.t0 + timedelta(days=3 * self.batch_no)
        rows = []
        for cid in self.rng.sample(range(1, 40), n):
            row = {"customer_id": cid, "name": f"Customer {cid}", "country": self.rng.choice(["DE", "fr", "US"]),
                   "segment": self.rng.choice(["consumer", "business", "enterprise", " Business"]),
                   "updated_at": at + timedelta(minutes=self.rng.randrange(600))}
            rows.append(row)
            if cid in self.latest and self.rng.random() < 0.3:  # an older version arriving late: must never win
                rows.append({**self.latest[cid], "segment": "enterprise",
                             "updated_at": self.latest[cid]["updated_at"] - timedelta(hours=1)})
            self.latest[cid] = row
        rows += [dict(r) for r in self.rng.sample(rows, 2)]  # exact duplicates
        rows.append({"customer_id": self.rng.randrange(1, 40), "name": "x", "segment": "bogus", "country": "DE",
                     "updated_at": at + timedelta(days=1)})  # invalid, and newer: must not win either
        self.rng.shuffle(rows)
        return rows

    def write(self, rows: list[dict], landing: Path) -> Path:
        path = landing / f"customers_{self.batch_no:03d}.csv"
        pl.DataFrame(rows, schema=CUSTOMER_SCHEMA, orient="row").write_csv(path)
        return path
