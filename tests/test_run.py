"""`medallion run`: layers through FlowerPower into Delta, checked against plain Python."""

from __future__ import annotations

import json

import polars as pl
import pytest
from deltalake import DeltaTable

import expected
from conftest import LANDING, medallion


def table(project, name) -> pl.DataFrame:
    return pl.read_delta(str(project / "lake" / name))


def silver_as_dict(project) -> dict[str, dict]:
    return {r["event_id"]: r for r in table(project, "silver_events").to_dicts()}


def gold_as_dict(project) -> dict:
    return {(r["event_date"], r["region"]): r for r in table(project, "gold_daily_sales").to_dicts()}


def assert_silver_matches(project, want: dict[str, dict]) -> None:
    got = silver_as_dict(project)
    assert set(got) == set(want)
    for eid, row in want.items():
        g = got[eid]
        for col in ("user_id", "event_type", "event_date", "updated_at", "region"):
            assert g[col] == row[col], (eid, col)
        # Halves at the 3rd decimal are binary-float ties: either neighbour is right.
        assert g["amount"] == pytest.approx(row["amount"], abs=0.0101), eid


def assert_gold_matches(project, want: dict) -> None:
    got = gold_as_dict(project)
    assert set(got) == set(want)
    for key, row in want.items():
        g = got[key]
        assert g["transaction_count"] == row["transaction_count"], key
        assert g["unique_customers"] == row["unique_customers"], key
        tolerance = 0.0101 * row["transaction_count"] * 7  # per-row rounding ties, summed
        assert g["total_sales"] == pytest.approx(row["total_sales"], abs=tolerance), key
        assert g["rolling_mean_sales"] == pytest.approx(row["rolling_mean_sales"], abs=tolerance), key


CUSTOMER_SCHEMA = {"customer_id": pl.Int64, "name": pl.String, "segment": pl.String, "country": pl.String,
                   "updated_at": pl.Datetime("us", "UTC")}


def expected_customers(folder) -> dict[int, dict]:
    """customer_id -> its newest valid version, cleaned as silver_customers cleans it."""
    best: dict[int, dict] = {}
    for path in sorted(folder.glob("*.csv")):
        for r in pl.read_csv(path, schema=CUSTOMER_SCHEMA).to_dicts():
            name, segment, country = ((r[c] or "").strip() for c in ("name", "segment", "country"))
            if (r["customer_id"] or 0) <= 0 or not name or segment.lower() not in ("consumer", "business", "enterprise") \
                    or len(country) != 2 or r["updated_at"] is None:
                continue
            clean = {**r, "name": name, "segment": segment.lower(), "country": country.upper()}
            if r["customer_id"] not in best or clean["updated_at"] > best[r["customer_id"]]["updated_at"]:
                best[r["customer_id"]] = clean
    return best


def expected_sales_by_segment(silver_rows: dict[str, dict], customers: dict[int, dict]) -> dict[tuple, tuple]:
    out: dict[tuple, list] = {}
    for r in silver_rows.values():
        if r["event_type"] == "purchase":
            segment = customers[r["user_id"]]["segment"] if r["user_id"] in customers else "unknown"
            cell = out.setdefault((r["event_date"], segment), [0.0, 0])
            cell[0] += r["amount"]
            cell[1] += 1
    return {k: (round(v[0], 2), v[1]) for k, v in out.items()}


def test_run_all_builds_every_table_with_expected_contents(project):
    r = medallion("run", "all", "-C", project)
    assert r.exit_code == 0, r
    rows = expected.landing_rows(LANDING)
    bronze = table(project, "bronze_events")
    assert bronze.height == len(rows) == 94
    assert set(bronze["_source_file"]) == {p.name for p in LANDING.iterdir() if p.suffix in (".csv", ".parquet", ".jsonl")}
    assert bronze["_run_id"].n_unique() == 1
    assert bronze.schema["_ingested_at"] == pl.Datetime("us", "UTC")

    want_silver = expected.silver(rows)
    assert len(want_silver) == 86  # 94 rows - 4 invalid - 3 duplicates - 1 stale copy
    assert_silver_matches(project, want_silver)
    assert_gold_matches(project, expected.gold(want_silver))
    # The update (evt-00003 re-sent later with a new amount) won; the stale copy did not.
    silver = silver_as_dict(project)
    assert silver["evt-00003"]["amount"] == pytest.approx(100.0)
    assert silver["evt-00033"]["amount"] != 1.0

    customers = expected_customers(project / "data" / "landing" / "customers")
    got = {r["customer_id"]: r for r in table(project, "silver_customers").to_dicts()}
    assert {k: (r["name"], r["segment"], r["country"], r["updated_at"]) for k, r in got.items()} == {
        k: (r["name"], r["segment"], r["country"], r["updated_at"]) for k, r in customers.items()}
    assert got[7]["segment"] == "enterprise"  # the later version won; the stale one arriving after it did not
    assert got[12]["updated_at"].day == 1  # its newer version has no segment: quarantined, the older one stays
    by_segment = {(r["event_date"], r["segment"]): (r["total_sales"], r["transaction_count"])
                  for r in table(project, "gold_sales_by_segment").to_dicts()}
    want = expected_sales_by_segment(want_silver, customers)
    assert by_segment.keys() == want.keys() and {k for k in want if k[1] == "unknown"}  # some users have no customer row
    for key, (total, count) in want.items():
        assert by_segment[key][1] == count, key
        assert by_segment[key][0] == pytest.approx(total, abs=0.0101 * count), key
    # Narration on stderr, nothing on stdout without --json.
    assert r.stdout == ""
    assert "bronze" in r.stderr and "gold_daily_sales" in r.stderr


def test_second_run_on_same_landing_data_leaves_silver_and_gold_unchanged(ran_project):
    silver_before = table(ran_project, "silver_events").sort("event_id")
    gold_before = table(ran_project, "gold_daily_sales").sort("event_date", "region")
    r = medallion("run", "all", "-C", ran_project, "--json")
    assert r.exit_code == 0, r
    doc = json.loads(r.stdout)
    silver = {l["layer"]: l for l in doc["layers"]}["silver_events"]
    assert silver["status"] == "unchanged" and silver["version"] is None
    assert table(ran_project, "silver_events").sort("event_id").equals(silver_before)
    assert table(ran_project, "gold_daily_sales").sort("event_date", "region").equals(gold_before)


def test_commits_carry_run_metadata_and_json_reports_versions(project):
    r = medallion("run", "all", "-C", project, "--json")
    assert r.exit_code == 0, r
    doc = json.loads(r.stdout)
    assert doc["status"] == "succeeded"
    assert [l["layer"] for l in doc["layers"]] == ["bronze_customers", "bronze_events", "silver_customers", "silver_events",
                                                   "gold_daily_sales", "gold_sales_by_segment"]
    for layer in doc["layers"]:
        assert layer["status"] == "written" and layer["version"] == 0
        commit = DeltaTable(layer["table_uri"]).history(1)[0]
        assert commit["medallion.run_id"] == doc["run_id"]
        assert commit["medallion.layer"] == layer["layer"]
        assert commit["medallion.version"] == doc["medallion_version"]
    by_name = {layer["layer"]: layer for layer in doc["layers"]}
    bronze, silver, gold = by_name["bronze_events"], by_name["silver_events"], by_name["gold_daily_sales"]
    assert (bronze["rows_in"], bronze["rows_out"], bronze["source_files"]) == (94, 94, 3)
    assert (silver["rows_in"], silver["rows_out"]) == (94, 86)
    assert gold["rows_in"] == 86


def test_set_overrides_a_pipeline_input_with_yaml_typing(ran_project):
    r = medallion("run", "gold", "-C", ran_project, "--set", "rolling_window_days=1", "--full-refresh", "-y", "-q")
    assert r.exit_code == 0, r
    gold = table(ran_project, "gold_daily_sales")
    assert gold["rolling_mean_sales"].to_list() == pytest.approx(gold["total_sales"].to_list())
    r = medallion("run", "gold", "-C", ran_project, "--set", "sales_event_types=[purchase, refund]", "--full-refresh", "-y", "-q")
    assert r.exit_code == 0, r
    want = expected.gold(silver_as_dict(ran_project))
    assert table(ran_project, "gold_daily_sales")["transaction_count"].sum() > sum(v["transaction_count"] for v in want.values())


def test_set_target_file_size_is_accepted_as_a_write_setting(ran_project):
    r = medallion("run", "silver", "-C", ran_project, "--set", "target_file_size_mb=64", "--full-refresh", "-y", "--json")
    assert r.exit_code == 0, r
    assert json.loads(r.stdout)["layers"][0]["status"] == "written"


@pytest.mark.parametrize("executor", ["synchronous", "threadpool", "processpool"])
def test_each_executor_produces_the_same_gold(ran_project, executor):
    want = table(ran_project, "gold_daily_sales").sort("event_date", "region")
    r = medallion("run", "silver_events", "gold_daily_sales", "-C", ran_project, "--executor", executor, "--full-refresh", "-y", "--json")
    assert r.exit_code == 0, r
    assert [l["status"] for l in json.loads(r.stdout)["layers"]] == ["written", "written"]
    assert table(ran_project, "gold_daily_sales").sort("event_date", "region").equals(want)


def test_layers_run_in_dependency_order_whatever_the_order_given(ran_project):
    r = medallion("run", "gold_daily_sales", "bronze_events", "-C", ran_project, "--json")
    assert r.exit_code == 0, r
    assert [l["layer"] for l in json.loads(r.stdout)["layers"]] == ["bronze_events", "gold_daily_sales"]


def test_user_files_dropped_into_landing_flow_through(ran_project):
    new = pl.DataFrame(
        {
            "event_id": ["usr-1", "evt-00001"], "user_id": [7, 24], "event_type": ["purchase", "purchase"],
            "amount": [42.0, 5.0], "event_date": ["2024-02-01", "2024-01-01"],
            "updated_at": ["2024-02-01T10:00:00+00:00", "2024-03-01T00:00:00+00:00"], "region": ["north", "south"],
        }
    )
    new.write_csv(ran_project / "data" / "landing" / "events" / "mine.csv")
    (ran_project / "data" / "landing" / "events" / "notes.txt").write_text("not data")
    r = medallion("run", "all", "-C", ran_project)
    assert r.exit_code == 0, r
    assert "ignored notes.txt" in r.stderr
    rows = expected.landing_rows(ran_project / "data" / "landing" / "events")
    assert_silver_matches(ran_project, expected.silver(rows))
    assert_gold_matches(ran_project, expected.gold(expected.silver(rows)))
    assert silver_as_dict(ran_project)["evt-00001"]["event_type"] == "purchase"  # the update won


def test_a_feed_without_files_yet_creates_its_tables_empty_and_the_others_run(project):
    for f in (project / "data" / "landing" / "events").iterdir():
        if not f.name.startswith("."):
            f.unlink()
    r = medallion("run", "all", "-C", project, "--json")
    assert r.exit_code == 0, r
    layers = {l["table"]: l for l in json.loads(r.stdout)["layers"]}
    assert (layers["bronze_events"]["status"], layers["bronze_events"]["rows_out"], layers["bronze_events"]["version"]) \
        == ("written", 0, 0)
    assert table(project, "bronze_events").height == 0 and "_ingested_at" in table(project, "bronze_events").columns
    assert table(project, "silver_customers").height > 0
    segments = table(project, "gold_sales_by_segment")
    assert segments.height == 0 and set(segments.columns) == {"event_date", "segment", "total_sales", "transaction_count"}
    # Nothing new: no table gets another version.
    r = medallion("run", "all", "-C", project, "--json")
    assert r.exit_code == 0, r
    assert {l["status"] for l in json.loads(r.stdout)["layers"]} == {"unchanged"}


def test_python_dash_m_works(project):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "medallion_cli", "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("medallion "), p


def test_landing_csv_with_other_column_order_and_extra_columns(project):
    (project / "data" / "landing" / "events" / "other.csv").write_text(
        "region,extra,event_id,user_id,event_type,amount,event_date,updated_at\n"
        "north,zz,new-1,3,purchase,12.5,2024-01-02,2024-01-02T10:00:00Z\n"
    )
    r = medallion("run", "all", "-C", project, "-q")
    assert r.exit_code == 0, r
    row = silver_as_dict(project)["new-1"]
    assert (row["region"], row["amount"], row["user_id"]) == ("north", 12.5, 3)
    assert "extra" not in table(project, "bronze_events").columns
