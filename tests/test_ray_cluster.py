"""``--engine ray`` on a two-node Ray cluster (``ray.cluster_utils.Cluster``: two raylets on
this machine) with the lake on S3 (moto's server): the units are spread over both nodes, the
workers get the storage options from the driver (their environment has no ``AWS_*``), and the
tables are those of the local engine, bit for bit, for the template's data and for generated
batches with duplicates, late and invalid rows, a worker killed mid-run included; silver's key
buckets and gold's date ranges too."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from batches import EventStream
from conftest import medallion
from s3fixtures import SECRET
from test_ray import ray_env
from test_units import T0, TABLES, clock, land, layer, partition, run  # noqa: F401 (clock: fixture)

try:
    import ray
except ImportError:
    ray = None
pytestmark = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install 'medallion-cli[ray]')")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node and one more node, one CPU each; this process is the driver. Both nodes
    start before any test sets AWS_* (the workers' environment has no credentials)."""
    from ray.cluster_utils import Cluster

    import os

    with ray_env(tmp_path_factory.mktemp("ray-home")):
        for name in [k for k in os.environ if k.startswith("AWS_")]:
            del os.environ[name]
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        nodes.add_node(num_cpus=1)
        ray.init(address=nodes.address, logging_level="ERROR", log_to_driver=False)
        ready(nodes)
        yield nodes
        ray.shutdown()
        nodes.shutdown()


def ready(nodes) -> None:
    """Both nodes registered, with their CPU in the scheduler's view and a worker answering
    on each: otherwise a loaded machine can hand every unit to the head before the other node
    counts, and the test would prove nothing about two nodes."""
    import time

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    deadline = time.monotonic() + 60
    while ray.cluster_resources().get("CPU", 0) < 2 or len([n for n in ray.nodes() if n["Alive"]]) < 2:
        assert time.monotonic() < deadline, ray.nodes()
        time.sleep(0.2)

    @ray.remote(num_cpus=1)
    def where() -> str:
        return ray.get_runtime_context().get_node_id()

    ids = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    pinned = [where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(i, soft=False)).remote() for i in ids]
    assert sorted(ray.get(pinned)) == sorted(ids)


def s3_twins(tmp_path: Path) -> dict[str, Path]:
    """Two S3 projects in one bucket, split into units of one file: one runs locally, the
    other on the cluster (``medallion.engine`` in its conf/project.yml)."""
    r = medallion("init", "shop", "--directory", tmp_path, "--storage", "s3", "--bucket", "lake-bucket", "-q")
    assert r.exit_code == 0, r
    local = tmp_path / "shop"
    partition(local, max_files=1)
    remote = tmp_path / "ray"
    shutil.copytree(local, remote)
    conf = remote / "conf" / "project.yml"
    text = conf.read_text().replace("s3://lake-bucket/shop/lake", "s3://lake-bucket/ray/lake")
    assert "s3://lake-bucket/ray/lake" in text
    conf.write_text(text.replace("medallion:\n", "medallion:\n  engine: {type: ray, address: auto}\n", 1))
    return {"local": local, "ray": remote}


def s3_table(s3, project: Path, name: str) -> pl.DataFrame:
    lake = "ray" if project.name == "ray" else "shop"
    df = pl.read_delta(f"s3://lake-bucket/{lake}/lake/{name}", storage_options=s3.env())
    return df.sort([*TABLES[name], *(c for c in df.columns if c not in TABLES[name])], nulls_last=True)


def commit(s3, project: Path) -> tuple[int, int | None, dict]:
    lake = "ray" if project.name == "ray" else "shop"
    dt = DeltaTable(f"s3://lake-bucket/{lake}/lake/bronze_events", storage_options=s3.env())
    last = dt.history(1)[0]
    return dt.version(), dt.transaction_version("medallion/bronze_events"), {
        k: v for k, v in last.items() if k.startswith("medallion.") and k != "medallion.write_id"}


def unreferenced(s3) -> set[str]:
    """Objects under the cluster's bronze table that no Delta version references."""
    import s3fs

    opts = s3.env()
    fs = s3fs.S3FileSystem(key=opts["AWS_ACCESS_KEY_ID"], secret=SECRET, endpoint_url=opts["AWS_ENDPOINT_URL"])
    stored = {p.rsplit("/", 1)[1] for p in fs.find("lake-bucket/ray/lake/bronze_events") if "_delta_log" not in p}
    referenced = set()
    for entry in fs.find("lake-bucket/ray/lake/bronze_events/_delta_log"):
        if entry.endswith(".json"):
            referenced |= {line.split('"path":"', 1)[1].split('"', 1)[0] for line in fs.cat(entry).decode().splitlines()
                           if line.startswith('{"add"')}
    return stored - referenced


def assert_same(s3, twins: dict[str, Path]) -> None:
    for name in TABLES:
        assert_frame_equal(s3_table(s3, twins["local"], name), s3_table(s3, twins["ray"], name))
    assert commit(s3, twins["local"]) == commit(s3, twins["ray"])


def test_units_on_a_two_node_cluster_with_an_s3_lake_give_the_local_tables(cluster, s3, tmp_path, clock, monkeypatch):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    twins = s3_twins(tmp_path)
    # The template's landing files: three units, spread over the two nodes.
    docs = {name: run(clock, p, "all", at=T0) for name, p in twins.items()}
    bronze = layer(docs["ray"], "bronze_events")
    assert bronze["metrics"]["units"] == 3 and bronze["metrics"]["ray_nodes"] == 2, bronze
    assert "ray_nodes" not in layer(docs["local"], "bronze_events")["metrics"]
    assert_same(s3, twins)
    assert commit(s3, twins["ray"])[0] == 0

    # Generated batches (duplicates, updates, late, stale and invalid rows); a worker is
    # SIGKILLed after writing its file to S3: Ray runs the task again, the dead attempt's
    # object is removed, and the batch is committed once.
    stream = EventStream(seed=21)
    land(twins["local"], stream, 3, n=80)
    for f in (twins["local"] / "data" / "landing" / "events").iterdir():
        shutil.copy2(f, twins["ray"] / "data" / "landing" / "events" / f.name)
    once = tmp_path / "killed-once"
    monkeypatch.setenv("MEDALLION_TEST_CRASH_AT", "bronze_events:unit_file_written")
    monkeypatch.setenv("MEDALLION_TEST_ONCE_FILE", str(once))
    docs = {name: run(clock, p, "all", at=T0 + timedelta(hours=1)) for name, p in twins.items()}
    assert once.exists()  # the kill happened (on the cluster only: the local engine has no such hook)
    bronze = layer(docs["ray"], "bronze_events")
    # (SPREAD is a preference: while the killed worker's node restarts its worker, Ray may run
    # every task on the other node; the first run above shows the units spread)
    assert bronze["metrics"]["units"] == 3 and bronze["metrics"]["ray_nodes"] in (1, 2), bronze
    assert layer(docs["ray"], "silver_events")["quality"]["rows_invalid"] > 0  # the gate saw invalid rows
    assert_same(s3, twins)
    assert commit(s3, twins["ray"])[0] == 1 and unreferenced(s3) == set()
    assert not (twins["ray"] / "lake").exists()
    # The credentials reached the workers through the object store, never a log.
    logs = {p for node in cluster.list_all_nodes() for p in Path(node.get_session_dir_path(), "logs").rglob("worker-*")}
    assert len(logs) >= 2  # the workers' own logs, of both nodes
    for path in logs:
        assert SECRET.encode() not in path.read_bytes(), path


def test_storage_faults_retried_in_the_workers_count_in_the_run_document(cluster, s3, tmp_path, clock, monkeypatch):
    """The unit files' PUTs, made by the workers, first fail with S3's "try again": the
    workers retry them, and the run document's ``storage_retries`` counts those retries
    with the driver's own."""
    from s3fixtures import FaultProxy

    twins = s3_twins(tmp_path)
    local = run(clock, twins["local"], "all", at=T0)
    assert local["storage_retries"] == 0
    proxy = FaultProxy(s3.endpoint, fail_puts_matching=r"/ray/lake/bronze_events/part-[^/]+\.parquet$", fail_puts=4)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        doc = run(clock, twins["ray"], "all", at=T0)
        assert proxy.stats()["puts_failed"] == 4
    finally:
        proxy.stop()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    assert layer(doc, "bronze_events")["metrics"]["units"] == 3
    assert doc["storage_retries"] == 4, doc["storage_retries"]  # one per refused PUT, none by the driver
    assert_same(s3, twins)


def test_units_read_their_landing_files_from_s3_on_the_cluster(cluster, s3, tmp_path, clock):
    """Landing files on S3 too: a worker needs nothing from the driver's disk but the code."""
    import s3fs

    from conftest import LANDING

    twins = s3_twins(tmp_path)
    stream = EventStream(seed=22)
    land(twins["local"], stream, 2, n=60)
    fs = s3fs.S3FileSystem(key="testing-key-id", secret=SECRET, endpoint_url=s3.endpoint)
    landed = [f for f in (*LANDING.iterdir(), *(twins["local"] / "data" / "landing" / "events").iterdir())
              if f.suffix in (".csv", ".parquet", ".jsonl")]
    for f in landed:
        fs.put(str(f), f"lake-bucket/incoming/{f.name}")
    for p in twins.values():
        cfg = p / "conf" / "pipelines" / "bronze_events.yml"
        text = cfg.read_text()
        assert "landing: data/landing/events" in text
        cfg.write_text(text.replace("landing: data/landing/events", "landing: s3://lake-bucket/incoming"))
        shutil.rmtree(p / "data" / "landing" / "events")
    docs = {name: run(clock, p, "bronze_events", at=T0) for name, p in twins.items()}
    bronze = layer(docs["ray"], "bronze_events")
    assert bronze["metrics"]["units"] == len({f.name for f in landed}) == 5, bronze
    assert bronze["metrics"]["ray_nodes"] == 2, bronze
    assert_frame_equal(s3_table(s3, twins["local"], "bronze_events"), s3_table(s3, twins["ray"], "bronze_events"))
    assert commit(s3, twins["local"]) == commit(s3, twins["ray"]) and commit(s3, twins["ray"])[0] == 0
    assert unreferenced(s3) == set()


def test_silver_key_units_and_gold_ranges_on_the_cluster_give_the_local_lake(cluster, s3, tmp_path, clock):
    """Silver's key buckets and gold's date ranges as tasks on both nodes: each reads its slice
    of the source table from S3 (the storage options travel with the task), and the driver
    commits once per table: the local engine's six tables and quarantine tables."""
    from batches import CustomerStream
    from test_ray_layers import configure
    from test_silver_units import QUARANTINES, copy_landing
    from test_silver_units import land as land_both

    twins = s3_twins(tmp_path)
    for p in twins.values():
        for name in ("silver_events", "silver_customers"):
            configure(p, name, partition={"by": "key", "buckets": 3})
        for name in ("gold_daily_sales", "gold_sales_by_segment"):
            configure(p, name, partition={"by": "column", "column": "event_date", "ranges": 3})
    events, people = EventStream(seed=23), CustomerStream(seed=23)
    land_both(twins["local"], events, people, 2)
    copy_landing(twins["local"], twins["ray"])
    for i in range(2):  # creates every table, then merges silver (staged units) and replaces gold's dates
        if i:
            land_both(twins["local"], events, people, 2)
            copy_landing(twins["local"], twins["ray"])
        docs = {name: run(clock, p, "all", at=T0 + timedelta(hours=i)) for name, p in twins.items()}
        for name in ("silver_events", "silver_customers", "gold_daily_sales", "gold_sales_by_segment"):
            lay = layer(docs["ray"], name)
            assert lay["metrics"]["units"] == 3 and lay["metrics"]["ray_nodes"] == 2, (name, lay["metrics"])
            assert lay["rows_out"] == layer(docs["local"], name)["rows_out"], name
        assert layer(docs["ray"], "silver_events")["operation"] == ("create" if i == 0 else "merge")
        for name in TABLES:
            assert_frame_equal(s3_table(s3, twins["local"], name), s3_table(s3, twins["ray"], name))
            versions = [DeltaTable(f"s3://lake-bucket/{lake}/lake/{name}", storage_options=s3.env()).version()
                        for lake in ("shop", "ray")]
            assert versions[0] == versions[1] == i, (name, versions)  # one version per run
        for name in QUARANTINES:
            a, b = (pl.read_delta(f"s3://lake-bucket/{lake}/lake/{name}", storage_options=s3.env()).sort("_row_key")
                    for lake in ("shop", "ray"))
            assert_frame_equal(a, b)
        assert layer(docs["ray"], "silver_events")["quality"]["rows_quarantined"] > 0  # the generated invalid rows
        assert not (twins["ray"] / "lake").exists()
        assert not list((twins["ray"] / ".medallion").rglob("unit-*.parquet"))  # staged in the lake, not here
        assert not [o for o in s3fs_of(s3).find("lake-bucket/ray/lake") if "_medallion_staging" in o]  # removed


def s3fs_of(s3):
    import s3fs

    opts = s3.env()
    return s3fs.S3FileSystem(key=opts["AWS_ACCESS_KEY_ID"], secret=SECRET, endpoint_url=opts["AWS_ENDPOINT_URL"])
