"""The project's tables form a graph derived from what each pipeline reads."""

from __future__ import annotations

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
    assert graph.tables == ("bronze_events", "silver_events", "gold_daily_sales")
    assert graph.layers == {"bronze": ("bronze_events",), "silver": ("silver_events",), "gold": ("gold_daily_sales",)}
    assert graph.downstream("bronze_events") == {"silver_events", "gold_daily_sales"}
    assert graph.upstream("gold_daily_sales") == {"bronze_events", "silver_events"}
    assert [e.contract for n in graph.nodes for e in n.inputs] == ["files", "watermark", "partitions"]


def test_run_order_comes_from_the_inputs_not_the_listing(project):
    edit(project / "conf" / "project.yml", "layers: [bronze, silver, gold", "layers: [gold, bronze, silver")
    assert [layer.name for layer in load_project(project).layers] == ["bronze", "silver", "gold"]
    r = medallion("run", "all", "-C", project, "-q")
    assert r.exit_code == 0, r


def test_a_cycle_is_refused_naming_the_pipelines(project):
    edit(project / "conf" / "pipelines" / "bronze_events.yml", "  source:\n    # Files", "  source:\n    table: gold_daily_sales\n    # Files")
    edit(project / "conf" / "pipelines" / "bronze_events.yml", "    landing: data/landing/events\n", "")
    text = (project / "conf" / "pipelines" / "bronze_events.yml").read_text()
    text = text[:text.index("    schema:")] + text[text.index("  # Each landing file"):]
    text = text.replace("  incremental:\n    strategy: files\n", "")
    (project / "conf" / "pipelines" / "bronze_events.yml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_project(project)
    assert "cycle" in info.value.message and "(bronze)" in info.value.message and "(gold)" in info.value.message
    r = medallion("run", "all", "-C", project)
    assert r.exit_code == 2 and "cycle" in r.stderr, r


def test_a_table_named_like_a_layer_is_refused(project):
    edit(project / "conf" / "pipelines" / "gold_daily_sales.yml", "table: gold_daily_sales", "table: silver")
    r = medallion("check", "-C", project)
    assert r.exit_code == 2 and "table 'silver' has the name of a layer" in r.stderr, r


def test_graph_json_shape(project):
    doc = project_graph(load_project(project)).to_dict()
    assert doc["tables"][1] == {
        "table": "silver_events", "pipeline": "silver", "layer": "silver", "write_mode": "merge",
        "inputs": [{"name": "bronze_events", "source": "bronze_events", "kind": "table", "contract": "watermark"}],
    }
    assert build_graph([]).tables == ()
