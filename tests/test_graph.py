"""The project's tables form a graph derived from what each pipeline reads."""

from __future__ import annotations

import json

import pytest

from conftest import medallion
from medallion_cli.errors import ConfigError
from medallion_cli.graph import build_graph, project_graph
from medallion_cli.project import load_project


def edit(path, old, new):
    text = path.read_text()
    assert old in text, text
    path.write_text(text.replace(old, new))


def test_template_graph(project):
    graph = project_graph(load_project(project))
    # Shallowest first: both feeds' bronze, then silver, then gold.
    assert graph.tables == ("bronze_customers", "bronze_events", "silver_customers", "silver_events",
                            "gold_daily_sales", "gold_sales_by_segment")
    assert graph.layers == {"bronze": ("bronze_customers", "bronze_events"),
                            "silver": ("silver_customers", "silver_events"),
                            "gold": ("gold_daily_sales", "gold_sales_by_segment")}
    assert graph.downstream("bronze_events") == {"silver_events", "gold_daily_sales", "gold_sales_by_segment"}
    assert graph.downstream("bronze_customers") == {"silver_customers", "gold_sales_by_segment"}
    assert graph.upstream("gold_sales_by_segment") == {"bronze_events", "silver_events", "bronze_customers",
                                                       "silver_customers"}
    assert graph.parents("gold_sales_by_segment") == ("silver_events", "silver_customers")
    assert [(n.table, [e.contract for e in n.inputs]) for n in graph.nodes] == [
        ("bronze_customers", ["files"]), ("bronze_events", ["files"]), ("silver_customers", ["watermark"]),
        ("silver_events", ["watermark"]), ("gold_daily_sales", ["partitions"]),
        ("gold_sales_by_segment", ["partitions", "snapshot"])]


def test_pipelines_are_found_without_a_listing(project):
    text = (project / "conf" / "project.yml").read_text()
    assert "layers:" not in text
    names = [layer.name for layer in load_project(project).layers]
    assert sorted(names) == sorted(p.stem for p in (project / "conf" / "pipelines").glob("*.yml"))
    # A FlowerPower pipeline without a medallion section is not a table.
    (project / "conf" / "pipelines" / "scratch.yml").write_text("run:\n  final_vars: [x]\n")
    assert [layer.name for layer in load_project(project).layers] == names


def test_run_order_comes_from_the_inputs_not_the_listing(project):
    # A listing kept from older projects only orders the display; a listed pipeline must exist.
    edit(project / "conf" / "project.yml", "  lake_root: lake", "  layers: [gold_daily_sales, silver_events]\n  lake_root: lake")
    assert [layer.name for layer in load_project(project).layers] == [
        "bronze_customers", "bronze_events", "silver_events", "silver_customers", "gold_daily_sales", "gold_sales_by_segment"]
    edit(project / "conf" / "project.yml", "layers: [gold_daily_sales,", "layers: [nope, gold_daily_sales,")
    with pytest.raises(ConfigError, match="layer 'nope' has no configuration"):
        load_project(project)
    edit(project / "conf" / "project.yml", "layers: [nope, gold_daily_sales,", "layers: [gold_daily_sales,")
    r = medallion("run", "all", "-C", project, "-q")
    assert r.exit_code == 0, r


def test_a_cycle_is_refused_naming_the_pipelines(project):
    edit(project / "conf" / "pipelines" / "bronze_events.yml", "  source:\n    # Files", "  source:\n    table: gold_daily_sales\n    # Files")
    edit(project / "conf" / "pipelines" / "bronze_events.yml", "    landing: data/landing/events\n", "")
    text = (project / "conf" / "pipelines" / "bronze_events.yml").read_text()
    text = text[:text.index("    schema:")] + text[text.index("  # Each landing file"):]
    text = text.replace("  incremental:\n    strategy: files\n", "").replace("  partition: {by: files}\n", "")
    (project / "conf" / "pipelines" / "bronze_events.yml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_project(project)
    assert "cycle: bronze_events → gold_daily_sales → silver_events → bronze_events" in info.value.message
    r = medallion("run", "all", "-C", project)
    assert r.exit_code == 2 and "cycle" in r.stderr, r


def test_a_table_named_like_a_layer_is_refused(project):
    edit(project / "conf" / "pipelines" / "gold_daily_sales.yml", "table: gold_daily_sales", "table: silver")
    r = medallion("check", "-C", project)
    assert r.exit_code == 2 and "table 'silver' has the name of a layer" in r.stderr, r


def test_graph_json_shape(project):
    doc = project_graph(load_project(project)).to_dict()
    assert doc["tables"][1] == {
        "table": "bronze_events", "pipeline": "bronze_events", "layer": "bronze", "write_mode": "append",
        "inputs": [{"name": "landing", "source": "data/landing/events", "kind": "landing", "contract": "files"}],
    }
    assert doc["tables"][3] == {
        "table": "silver_events", "pipeline": "silver_events", "layer": "silver", "write_mode": "merge",
        "inputs": [{"name": "bronze_events", "source": "bronze_events", "kind": "table", "contract": "watermark"}],
    }
    assert build_graph([]).tables == ()


def test_an_input_naming_no_table_is_refused_before_anything_runs(project):
    edit(project / "conf" / "pipelines" / "gold_sales_by_segment.yml", "      table: silver_customers\n",
         "      table: silver_customer\n")
    r = medallion("run", "all", "-C", project)
    assert r.exit_code == 2, r
    assert ("input 'silver_customers' of gold_sales_by_segment reads table 'silver_customer', which no pipeline "
            "writes and which does not exist") in r.stderr, r
    assert "silver_customers" in r.stderr.split("hint:")[1]  # the known tables are listed
    assert not (project / "lake").exists()  # refused before any table ran
    r = medallion("check", "-C", project, "--json")
    assert r.exit_code == 2, r
    [bad] = [c for c in json.loads(r.stdout)["checks"] if not c["ok"]]
    assert bad["layer"] == "gold_sales_by_segment" and bad["check"] == "inputs"


def test_an_existing_external_table_may_be_an_input(ran_project, tmp_path):
    import shutil

    external = tmp_path / "crm_customers"
    shutil.copytree(ran_project / "lake" / "silver_customers", external)
    edit(ran_project / "conf" / "pipelines" / "gold_sales_by_segment.yml", "      table: silver_customers\n",
         f"      table: {external}\n")
    r = medallion("run", "gold_sales_by_segment", "--full-refresh", "--yes", "-C", ran_project, "-q")
    assert r.exit_code == 0, r
