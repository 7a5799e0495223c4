"""A Delta commit that reaches S3 while its reply is lost must count once, not be appended again.

The fault proxy forwards the PUT of ``_delta_log/<version>.json`` to moto (the commit is
stored) and then closes the connection without answering, or answers 503.
"""

from __future__ import annotations

import json

import polars as pl
import pytest
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError

from conftest import add_landing_file, medallion
from s3fixtures import FaultProxy

LAKE = "s3://lake-bucket/shop/lake"
WRITE_ID = "medallion.write_id"


@pytest.fixture
def s3_project(s3, tmp_path):
    r = medallion("init", "shop", "--directory", tmp_path, "--storage", "s3", "--bucket", "lake-bucket", "-q")
    assert r.exit_code == 0, r
    return tmp_path / "shop"


def read(s3, table: str) -> pl.DataFrame:
    return pl.read_delta(f"{LAKE}/{table}", storage_options=s3.env())


def rows(n: int, prefix: str) -> list[tuple]:
    return [(f"{prefix}-{i}", i + 1, "purchase", 5.0 + i, "2024-01-07", f"2024-01-07T10:{i:02d}:00Z", "south") for i in range(n)]


@pytest.mark.parametrize("lose", ["close", "503"])
def test_a_lost_commit_ack_does_not_append_the_batch_twice(s3_project, s3, monkeypatch, lose):
    assert medallion("run", "all", "-C", s3_project, "-q").exit_code == 0
    add_landing_file(s3_project, "more.csv", rows(20, "m"))
    proxy = FaultProxy(s3.endpoint, lose_commit_acks=1, lose=lose)  # bronze's commit lands, its reply is lost
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        r = medallion("run", "all", "-C", s3_project, "--json")
        stats = proxy.stats()
    finally:
        proxy.stop()
    assert r.exit_code == 0, r
    assert stats["acks_lost"] == 1
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    bronze = read(s3, "bronze_events")
    assert bronze.height == 94 + 20
    assert bronze.filter(pl.col("_source_file") == "more.csv").height == 20
    silver = read(s3, "silver_events")
    assert silver.height == 86 + 20 and silver["event_id"].is_duplicated().sum() == 0
    # The state saw the batch as ingested: the next run has nothing to do.
    r = medallion("run", "all", "-C", s3_project, "--json")
    assert {layer["kind"] for layer in json.loads(r.stdout)["layers"]} == {"nothing"}, r


def test_a_lost_ack_of_a_write_without_watermark_commits_once(s3, monkeypatch):
    from medallion_cli.materialize import write
    from medallion_cli.project import TargetConfig
    from medallion_cli.storage import Storage

    uri = "s3://lake-bucket/plain"
    target = TargetConfig(table="plain", mode="append")
    write(pl.DataFrame({"a": [1, 2]}), uri, target, metadata={}, storage=Storage.resolve())
    proxy = FaultProxy(s3.endpoint, lose_commit_acks=1)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        storage = Storage.resolve()
        outcome = write(pl.DataFrame({"a": [3, 4]}), uri, target, metadata={"medallion.run_id": "r1"}, storage=storage)
        assert proxy.stats()["acks_lost"] == 1
    finally:
        proxy.stop()
    dt = DeltaTable(uri, storage_options=s3.env())
    assert outcome.version == dt.version() == 1  # one commit, not a second log entry of the same data
    assert pl.read_delta(uri, storage_options=s3.env())["a"].sort().to_list() == [1, 2, 3, 4]
    (commit,) = [e for e in dt.history() if e["version"] == 1]
    assert commit.get(WRITE_ID) and commit["medallion.run_id"] == "r1"


@pytest.mark.parametrize("with_app_id", [False, True])
def test_delta_rs_refuses_a_retried_commit_whose_app_id_already_won(s3, with_app_id):
    """Why every write carries an app transaction: delta-rs's object-store client retries the
    PUT, finds the version taken (by its own commit) and, unless the app id conflicts,
    commits the same actions again as the next version."""
    uri = "s3://lake-bucket/raw"
    write_deltalake(uri, pl.DataFrame({"a": [1]}), storage_options=s3.env())
    txns = [Transaction("medallion/raw/writes", 7)] if with_app_id else None
    props = CommitProperties(custom_metadata={WRITE_ID: "w-1"}, app_transactions=txns)
    proxy = FaultProxy(s3.endpoint, lose_commit_acks=1)
    try:
        if with_app_id:
            with pytest.raises(CommitFailedError, match="Concurrent transaction"):
                write_deltalake(uri, pl.DataFrame({"a": [2]}), mode="append", commit_properties=props,
                                storage_options=s3.env(proxy.endpoint))
        else:
            write_deltalake(uri, pl.DataFrame({"a": [2]}), mode="append", commit_properties=props,
                            storage_options=s3.env(proxy.endpoint))
    finally:
        proxy.stop()
    dt = DeltaTable(uri, storage_options=s3.env())
    landed = sorted(e["version"] for e in dt.history() if e.get(WRITE_ID) == "w-1")
    assert landed == ([1] if with_app_id else [1, 2])


def test_a_lost_ack_of_a_quarantine_commit_quarantines_once(s3_project, s3, monkeypatch):
    assert medallion("run", "all", "-C", s3_project, "-q").exit_code == 0
    batch = rows(5, "q") + [("q-bad-1", 9, "purchase", -3.0, "2024-01-07", "2024-01-07T11:00:00Z", "south"),
                            ("q-bad-2", 9, "teleport", 3.0, "2024-01-07", "2024-01-07T11:01:00Z", "south")]
    add_landing_file(s3_project, "more.csv", batch)
    assert medallion("run", "bronze", "-C", s3_project, "-q").exit_code == 0
    before = read(s3, "silver_events__quarantine").height
    proxy = FaultProxy(s3.endpoint, lose_commit_acks=1)  # silver's first commit is the quarantine's
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        r = medallion("run", "silver", "-C", s3_project, "-q")
        assert proxy.stats()["acks_lost"] == 1
    finally:
        proxy.stop()
    assert r.exit_code == 0, r
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    assert read(s3, "silver_events__quarantine").height == before + 2
    assert read(s3, "silver_events").height == 86 + 5
