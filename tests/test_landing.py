"""What a real feed brings: symlinks, ragged schemas, physical types, null markers,
compressed files, extra columns, half-written files, mistyped prefixes, odd paths."""

from __future__ import annotations

import gzip
import json
import os
import time
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from conftest import medallion
from medallion_cli.errors import ExitCode

HEADER = "event_id,user_id,event_type,amount,event_date,updated_at,region"
COLUMNS = HEADER.split(",")


def landing(project: Path) -> Path:
    return project / "data" / "landing" / "events"


def empty_landing(project: Path) -> Path:
    """The project's landing folder without the sample files."""
    folder = landing(project)
    for f in folder.iterdir():
        if not f.name.startswith("."):
            f.unlink()
    return folder


def set_source(project: Path, text: str) -> None:
    """Set keys of bronze's `medallion.source` section (replacing the template's line for each)."""
    cfg = project / "conf" / "pipelines" / "bronze_events.yml"
    keys = tuple(f"    {line.split(':')[0]}:" for line in text.strip("\n").splitlines())
    lines = [line for line in cfg.read_text().splitlines(keepends=True) if not line.startswith(keys)]
    at = next(i for i, line in enumerate(lines) if line.strip() == "source:") + 1
    extra = "".join(f"    {line}\n" for line in text.strip("\n").splitlines())
    cfg.write_text("".join(lines[:at]) + extra + "".join(lines[at:]))


def bronze(project: Path) -> pl.DataFrame:
    return pl.read_delta(str(project / "lake" / "bronze_events")).sort("event_id")


def run(project: Path, *args: str):
    """Run the events feed's bronze table (the customers feed is not what these tests are about)."""
    return medallion("run", "bronze_events", "-C", project, *args)


def one_error(r) -> str:
    assert "Traceback" not in r.stderr, r
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r
    return errors[0]


def bronze_warnings(r) -> list[str]:
    return next(l for l in json.loads(r.stdout)["layers"] if l["layer"] == "bronze_events")["warnings"]


def event(i: int, **over) -> dict:
    row = {"event_id": f"e-{i}", "user_id": i, "event_type": "click", "amount": 1.5, "event_date": "2024-01-02",
           "updated_at": "2024-01-02T10:00:00Z", "region": "north"}
    row.update(over)
    return row


# -- 1. symlinks ------------------------------------------------------------------------------
def test_symlink_outside_landing_is_refused_without_reading_it(project, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (landing(project) / "passwd.csv").symlink_to(secret)
    r = run(project)
    assert r.exit_code == ExitCode.USAGE, r
    line = one_error(r)
    assert "passwd.csv" in line and "symlink" in line and "outside the landing folder" in line
    assert "root:x" not in r.stderr + r.stdout
    assert not (project / "lake").exists()


def test_symlinked_folder_outside_landing_is_refused(project, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.csv").write_text(HEADER + "\n")
    (landing(project) / "feed").symlink_to(outside, target_is_directory=True)
    r = run(project)
    assert r.exit_code == ExitCode.USAGE, r
    assert "feed" in one_error(r) and "outside the landing folder" in r.stderr


def test_symlink_inside_landing_is_read(project):
    folder = landing(project)
    sub = folder / "archive"
    sub.mkdir()
    (sub / "one.csv").write_text(HEADER + "\nlink-1,1,click,1.0,2024-01-02,2024-01-02T00:00:00Z,north\n")
    (folder / "alias.csv").symlink_to(sub / "one.csv")
    r = run(project, "--json")
    assert r.exit_code == 0, r
    assert bronze(project).filter(pl.col("event_id") == "link-1")["_source_file"].sort().to_list() == ["alias.csv", "archive/one.csv"]


def test_unreadable_value_is_never_echoed(project):
    (landing(project) / "bad.csv").write_text(HEADER + "\nx,1,click,SECRET-VALUE,2024-01-01,2024-01-01T00:00:00Z,north\n")
    r = run(project)
    assert r.exit_code == ExitCode.RUN_FAILED, r
    line = one_error(r)
    assert "bad.csv" in line and "csv" in line and "column amount" in line
    assert "SECRET-VALUE" not in r.stderr + r.stdout


# -- 2. one rule for missing columns ------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_file_missing_a_declared_column_is_refused_in_every_format(project, fmt):
    rows = [{k: v for k, v in event(1).items() if k not in ("region", "amount")}]
    path = landing(project) / f"short.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        pl.DataFrame(rows).write_csv(path)
    else:
        pl.DataFrame(rows).write_parquet(path)
    r = run(project)
    assert r.exit_code == ExitCode.RUN_FAILED, r
    line = one_error(r)
    assert f"short.{fmt}" in line and "amount" in line and "region" in line, line
    assert not (project / "lake").exists()


# -- 3. physical types --------------------------------------------------------------------------
def test_parquet_files_differing_in_physical_types_ingest_together(project):
    folder = empty_landing(project)
    base = pl.DataFrame([event(1)]).with_columns(pl.col("event_date").str.to_date())
    stamp = datetime(2024, 1, 2, 10, 0)
    a = base.with_columns(pl.col("user_id").cast(pl.Int32), pl.lit(stamp).cast(pl.Datetime("ns")).alias("updated_at"))
    b = base.with_columns(pl.lit("e-2").alias("event_id"),
                          pl.lit(stamp).cast(pl.Datetime("us", "UTC")).alias("updated_at"))
    c = base.with_columns(pl.lit("e-3").alias("event_id"),
                          pl.lit(stamp).cast(pl.Datetime("ms")).dt.replace_time_zone("Europe/Paris").alias("updated_at"))
    a.write_parquet(folder / "a.parquet")
    b.write_parquet(folder / "b.parquet")
    c.write_parquet(folder / "c.parquet")
    r = run(project)
    assert r.exit_code == 0, r
    df = bronze(project)
    assert df.schema["updated_at"] == pl.Datetime("us", "UTC") and df.schema["user_id"] == pl.Int64
    # naive is UTC; Europe/Paris 10:00 is 09:00 UTC
    assert [t.hour for t in df["updated_at"]] == [10, 10, 9]


# -- 4. null markers and compression ------------------------------------------------------------
def test_csv_null_values_option(project):
    folder = empty_landing(project)
    (folder / "na.csv").write_text(HEADER + "\nn-1,NA,click,NA,2024-01-02,2024-01-02T00:00:00Z,\n")
    set_source(project, 'null_values: ["NA", ""]')
    r = run(project)
    assert r.exit_code == 0, r
    row = bronze(project).row(0, named=True)
    assert row["user_id"] is None and row["amount"] is None and row["region"] is None


def test_csv_null_values_without_empty_string_keeps_empty_strings(project):
    folder = empty_landing(project)
    (folder / "na.csv").write_text(HEADER + "\nn-1,1,NA,2.0,2024-01-02,2024-01-02T00:00:00Z,\n")
    set_source(project, 'null_values: ["NA"]')
    r = run(project)
    assert r.exit_code == 0, r
    row = bronze(project).row(0, named=True)
    assert row["event_type"] is None and row["region"] == ""


def test_default_null_values_reads_na_as_text(project):
    folder = empty_landing(project)
    (folder / "na.csv").write_text(HEADER + "\nn-1,1,NA,2.0,2024-01-02,2024-01-02T00:00:00Z,\n")
    r = run(project)
    assert r.exit_code == 0, r
    row = bronze(project).row(0, named=True)
    assert row["event_type"] == "NA" and row["region"] is None


def test_gzip_landing_files_are_read(project):
    folder = empty_landing(project)
    csv = HEADER + "\n" + "g-1,1,click,1.0,2024-01-02,2024-01-02T00:00:00Z,north\n"
    (folder / "a.csv.gz").write_bytes(gzip.compress(csv.encode()))
    lines = json.dumps(event(2, event_id="g-2")) + "\n"
    (folder / "b.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    (folder / "c.ndjson.gz").write_bytes(gzip.compress(json.dumps(event(3, event_id="g-3")).encode() + b"\n"))
    r = run(project, "--json")
    assert r.exit_code == 0, r
    df = bronze(project)
    assert df["event_id"].to_list() == ["g-1", "g-2", "g-3"]
    assert df["_source_file"].to_list() == ["a.csv.gz", "b.jsonl.gz", "c.ndjson.gz"]
    assert bronze_warnings(r) == []


# -- 5. extra landing columns -------------------------------------------------------------------
def write_extra(project: Path) -> None:
    folder = empty_landing(project)
    (folder / "plain.csv").write_text(HEADER + "\np-1,1,click,1.0,2024-01-02,2024-01-02T00:00:00Z,north\n")
    (folder / "more.csv").write_text(HEADER + ",coupon,channel\nm-1,1,click,1.0,2024-01-02,2024-01-02T00:00:00Z,north,SAVE5,web\n"
                                     "m-2,1,click,1.0,2024-01-02,2024-01-02T00:00:00Z,north,,\n")
    (folder / "more.jsonl").write_text(json.dumps(event(3, event_id="j-1", score=7)) + "\n")


def test_extra_columns_are_ignored_with_a_warning(project):
    write_extra(project)
    r = run(project, "--json")
    assert r.exit_code == 0, r
    warnings = [w for w in bronze_warnings(r) if "not in medallion.source.schema" in w]
    assert len(warnings) == 1 and "ignored" in warnings[0]
    assert "more.csv (coupon, channel)" in warnings[0] and "more.jsonl (score)" in warnings[0]
    assert "plain.csv" not in warnings[0]
    assert "coupon" not in bronze(project).columns


def test_extra_columns_rescue(project):
    write_extra(project)
    set_source(project, "extra_columns: rescue")
    r = run(project, "--json")
    assert r.exit_code == 0, r
    assert any("_rescued_data" in w for w in bronze_warnings(r))
    rescued = dict(bronze(project).select("event_id", "_rescued_data").iter_rows())
    assert rescued["p-1"] is None and rescued["m-2"] is None
    assert json.loads(rescued["m-1"]) == {"coupon": "SAVE5", "channel": "web"}
    assert json.loads(rescued["j-1"]) == {"score": 7}


def test_extra_columns_fail(project):
    write_extra(project)
    set_source(project, "extra_columns: fail")
    r = run(project)
    assert r.exit_code == ExitCode.USAGE, r
    line = one_error(r)
    assert "more.csv" in line and "coupon, channel" in line
    assert not (project / "lake").exists()


def test_extra_columns_setting_is_validated(project):
    set_source(project, "extra_columns: keep")
    r = run(project)
    assert r.exit_code == ExitCode.USAGE, r
    assert "ignore, rescue, fail" in one_error(r)


# -- 6. settle rule -----------------------------------------------------------------------------
def test_young_files_wait_until_they_settle(project):
    folder = landing(project)
    set_source(project, 'settle: {min_age: "30s"}')
    old = time.time() - 3600
    for f in folder.iterdir():
        os.utime(f, (old, old))
    (folder / "fresh.csv").write_text(HEADER + "\nf-1,1,click,1.0,2024-01-02,2024-01-02T00:00:00Z,north\n")
    r = run(project, "--json")
    assert r.exit_code == 0, r
    assert "1 file(s) wait: fresh.csv (younger than 30s)" in bronze_warnings(r)
    assert "f-1" not in bronze(project)["event_id"].to_list()
    os.utime(folder / "fresh.csv", (old, old))
    r = run(project, "--json")
    assert r.exit_code == 0, r
    assert "f-1" in bronze(project)["event_id"].to_list()
    assert not [w for w in bronze_warnings(r) if "wait" in w]


def test_marker_file_releases_a_folder(project):
    folder = empty_landing(project)
    batch = folder / "2024-01-02"
    batch.mkdir()
    (batch / "part-1.csv").write_text(HEADER + "\nk-1,1,click,1.0,2024-01-02,2024-01-02T00:00:00Z,north\n")
    set_source(project, "settle: {marker: _SUCCESS}")
    r = run(project, "--json")
    assert r.exit_code == 0, r
    assert "1 file(s) wait: 2024-01-02/part-1.csv (no _SUCCESS in their folder)" in bronze_warnings(r)
    # A feed with nothing ready creates its table empty (so downstream tables run): nothing was read.
    assert bronze(project).height == 0
    (batch / "_SUCCESS").write_text("")
    r = run(project, "--json")
    assert r.exit_code == 0, r
    assert bronze(project)["event_id"].to_list() == ["k-1"]


def test_sample_files_of_a_new_project_are_settled(project):
    """`medallion init` gives the sample files an old modification time: a settle rule never holds them."""
    assert all(time.time() - f.stat().st_mtime > 86400 for f in landing(project).iterdir() if not f.name.startswith("."))


@pytest.mark.parametrize("setting, message", [
    ('settle: {min_age: "soon"}', "settle.min_age: cannot read 'soon' as a duration"),
    ("settle: {marker: a/_SUCCESS}", "settle.marker must be a file name"),
    ("settle: {wait: 3}", "unknown medallion.source.settle key 'wait'"),
    ("null_values: 3", "null_values must be a list of strings"),
])
def test_source_settings_are_validated(project, setting, message):
    set_source(project, setting)
    r = run(project)
    assert r.exit_code == ExitCode.USAGE, r
    assert message in one_error(r)


# -- 7. S3 landing prefix --------------------------------------------------------------------------
def test_s3_landing_prefix_with_no_objects_is_refused(s3, tmp_path):
    r = medallion("init", "shop", "--directory", tmp_path, "--storage", "s3", "--bucket", "lake-bucket", "-q")
    assert r.exit_code == 0, r
    root = tmp_path / "shop"
    s3.client().put_object(Bucket="lake-bucket", Key="incoming/a.csv", Body=(HEADER + "\n").encode())
    cfg = root / "conf" / "pipelines" / "bronze_events.yml"
    cfg.write_text(cfg.read_text().replace("landing: data/landing/events", "landing: s3://lake-bucket/incomming"))
    r = run(root)
    assert r.exit_code == ExitCode.USAGE, r
    line = one_error(r)
    assert "s3://lake-bucket/incomming" in line and "no objects" in line
    # The right prefix reads, gzip included.
    body = HEADER + "\ns-1,1,click,1.0,2024-01-02,2024-01-02T00:00:00Z,north\n"
    s3.client().put_object(Bucket="lake-bucket", Key="incoming/b.csv.gz", Body=gzip.compress(body.encode()))
    cfg.write_text(cfg.read_text().replace("s3://lake-bucket/incomming", "s3://lake-bucket/incoming"))
    r = run(root, "--json")
    assert r.exit_code == 0, r
    frame = pl.read_delta("s3://lake-bucket/shop/lake/bronze_events", storage_options=s3.env())
    assert frame["event_id"].to_list() == ["s-1"] and frame["_source_file"].to_list() == ["b.csv.gz"]


# -- 8. paths with a space, a non-ASCII letter or % ------------------------------------------------
def test_project_under_a_path_with_space_accent_and_percent(tmp_path):
    parent = tmp_path / "a b" / "café 100%x"
    parent.mkdir(parents=True)
    r = medallion("init", "shop", "--directory", parent, "-q")
    assert r.exit_code == 0, r
    root = parent / "shop"
    for args in (("run", "all"), ("show", "silver_events", "-n", "2", "--json"), ("history", "gold_daily_sales", "--json"),
                 ("quality", "silver_events", "--json")):
        r = medallion(*args, "-C", root)
        assert r.exit_code == 0, r
    assert len(json.loads(medallion("show", "silver_events", "-n", "2", "--json", "-C", root).stdout)["rows"]) == 2
    (landing(root) / "more.csv").write_text(HEADER + "\nz-1,1,click,1.0,2024-01-02,2024-01-02T00:00:00Z,north\n")
    r = medallion("run", "all", "-C", root, "--json")
    assert r.exit_code == 0, r
    kinds = {l["table"]: l["kind"] for l in json.loads(r.stdout)["layers"]}
    assert [kinds[t] for t in ("bronze_events", "silver_events", "gold_daily_sales")] == ["incremental"] * 3
    assert DeltaTable(str(root / "lake" / "silver_events")).version() == 1


def test_percent_escape_in_path_is_refused_before_anything_is_written(tmp_path):
    parent = tmp_path / "café%20x"
    parent.mkdir()
    r = medallion("init", "shop", "--directory", parent)
    assert r.exit_code == ExitCode.USAGE, r
    assert "%20" in one_error(r) or "'%'" in one_error(r)
    assert not (parent / "shop").exists()


def test_percent_escape_in_lake_path_fails_cleanly_without_orphans(project):
    cfg = project / "conf" / "project.yml"
    cfg.write_text(cfg.read_text().replace("lake_root: lake", "lake_root: lake%41x"))
    r = medallion("run", "all", "-C", project)
    assert r.exit_code == ExitCode.USAGE, r
    assert "%41" in one_error(r)
    assert not (project / "lake%41x").exists()


@pytest.mark.parametrize("name", ["café", "_shop", "shop_", "naïve"])
def test_non_ascii_and_non_pep508_names_are_refused(tmp_path, name):
    r = medallion("init", name, "--directory", tmp_path)
    assert r.exit_code == ExitCode.USAGE, r
    assert "ASCII letters" in r.stderr
    assert not (tmp_path / name).exists()
