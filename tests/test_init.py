"""`medallion init`: the rendered project, its refusals and its all-or-nothing promise."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import pytest
import yaml

from conftest import medallion
from medallion_cli import __version__
from medallion_cli.errors import ExitCode

EXPECTED_FILES = {
    ".gitignore",
    "README.md",
    "pyproject.toml",
    "schemas.py",
    "conf/project.yml",
    "conf/pipelines/bronze_events.yml",
    "conf/pipelines/silver_events.yml",
    "conf/pipelines/gold_daily_sales.yml",
    "conf/pipelines/bronze_customers.yml",
    "conf/pipelines/silver_customers.yml",
    "conf/pipelines/gold_sales_by_segment.yml",
    "pipelines/bronze_events.py",
    "pipelines/silver_events.py",
    "pipelines/gold_daily_sales.py",
    "pipelines/bronze_customers.py",
    "pipelines/silver_customers.py",
    "pipelines/gold_sales_by_segment.py",
    "hooks/README.md",
    "data/landing/events/.gitkeep",
    "data/landing/events/events_2024-01-01.csv",
    "data/landing/events/events_2024-01-06.parquet",
    "data/landing/events/events_2024-01-11.jsonl",
    "data/landing/customers/.gitkeep",
    "data/landing/customers/customers_2024-01-01.csv",
    "data/landing/customers/customers_2024-01-10.csv",
    "tests/conftest.py",
    "tests/test_pipelines.py",
}


def files_under(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_init_renders_the_project(tmp_path):
    r = medallion("init", "shop", "--directory", tmp_path)
    assert r.exit_code == 0, r
    root = tmp_path / "shop"
    assert files_under(root) == EXPECTED_FILES
    tool = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["medallion"]
    assert tool == {"template": "events", "medallion_version": __version__}
    project = yaml.safe_load((root / "conf" / "project.yml").read_text())
    assert project["name"] == "shop"
    assert "layers" not in project["medallion"]  # pipelines are found in conf/pipelines/
    assert "# shop" in (root / "README.md").read_text()
    # Status verbs on stderr, one per file; stdout is for data only.
    assert r.stdout == ""
    assert r.stderr.count("create ") == len(EXPECTED_FILES)
    assert "medallion run all" in r.stderr


def test_init_json_and_quiet(tmp_path):
    r = medallion("init", "shop", "--directory", tmp_path, "--json", "--quiet")
    assert r.exit_code == 0, r
    assert r.stderr == ""
    doc = json.loads(r.stdout)
    assert {f["path"] for f in doc["files"]} == EXPECTED_FILES
    assert {f["action"] for f in doc["files"]} == {"create"}
    r = medallion("init", "other", "--directory", tmp_path, "--quiet")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "")


def test_no_sample_data_leaves_an_empty_landing_folder(tmp_path):
    r = medallion("init", "shop", "--directory", tmp_path, "--no-sample-data", "-q")
    assert r.exit_code == 0, r
    landing = tmp_path / "shop" / "data" / "landing"
    assert sorted(str(p.relative_to(landing)) for p in landing.rglob("*") if p.is_file()) == [
        "customers/.gitkeep", "events/.gitkeep"]


def test_refuses_non_empty_target_and_changes_nothing(tmp_path):
    target = tmp_path / "shop"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    r = medallion("init", "shop", "--directory", tmp_path)
    assert r.exit_code == ExitCode.USAGE, r
    assert "is not empty" in r.stderr and "--force" in r.stderr
    assert files_under(target) == {"mine.txt"}


def test_force_overwrites_template_files_and_keeps_others(tmp_path):
    assert medallion("init", "shop", "--directory", tmp_path, "-q").exit_code == 0
    root = tmp_path / "shop"
    (root / "pipelines" / "gold_daily_sales.py").write_text("# edited\n")
    (root / "mine.txt").write_text("keep me")
    r = medallion("init", "shop", "--directory", tmp_path, "--force")
    assert r.exit_code == 0, r
    assert "overwrite pipelines/gold_daily_sales.py" in r.stderr
    assert "identical pipelines/silver_events.py" in r.stderr
    assert "# edited" not in (root / "pipelines" / "gold_daily_sales.py").read_text()
    assert (root / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize("name", ["../escape", "a/b", "1shop", "my-shop", "class", "", "/abs"])
def test_rejects_bad_names(tmp_path, name):
    r = medallion("init", name, "--directory", tmp_path / "inner")
    assert r.exit_code == ExitCode.USAGE, r
    assert "error:" in r.stderr
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "inner").exists()


def test_unknown_template(tmp_path):
    r = medallion("init", "shop", "--directory", tmp_path, "--template", "nope")
    assert r.exit_code == ExitCode.USAGE, r
    assert "unknown template 'nope'" in r.stderr and "events" in r.stderr
    assert not (tmp_path / "shop").exists()


def test_failure_removes_what_it_created(tmp_path):
    target = tmp_path / "shop"
    (target / "pipelines" / "gold_daily_sales.py").mkdir(parents=True)  # a folder where a file must go
    r = medallion("init", "shop", "--directory", tmp_path, "--force")
    assert r.exit_code == ExitCode.USAGE, r
    assert "could not create" in r.stderr
    leftovers = {str(p.relative_to(target)) for p in target.rglob("*")}
    assert leftovers == {"pipelines", "pipelines/gold_daily_sales.py"}


def test_generated_project_tests_pass(project):
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project, capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "6 passed" in p.stdout


def test_generated_schemas_module_imports_and_validates(ran_project):
    import importlib.util

    import polars as pl

    spec = importlib.util.spec_from_file_location("shop_schemas", ran_project / "schemas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    silver = pl.read_delta(str(ran_project / "lake" / "silver_events"))
    module.SilverEvents.validate(silver)
