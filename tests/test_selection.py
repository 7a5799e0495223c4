"""Selection: dbt's selector grammar, parsed into a spec, then applied to the table graph."""

from __future__ import annotations

import json

import pytest
from deltalake import DeltaTable

from conftest import medallion
from medallion_cli.errors import ExitCode, UsageError
from medallion_cli.graph import Edge, Node, TableGraph
from medallion_cli.project import load_project
from medallion_cli.runner import check_overrides, layer_overrides, parse_overrides, select_layers
from medallion_cli.verify import select as verify_select
from medallion_cli.selection import SelectionSpec, Selector, parse_selection, parse_selector, select, select_tables


# -- parsing (no graph) ---------------------------------------------------------------------
@pytest.mark.parametrize("text, want", [
    ("silver", Selector("silver", None, False, False, "silver")),
    ("silver_events+", Selector("silver_events", None, False, True, "silver_events+")),
    ("+gold_daily_sales", Selector("gold_daily_sales", None, True, False, "+gold_daily_sales")),
    ("+silver_events+", Selector("silver_events", None, True, True, "+silver_events+")),
    ("all", Selector("all", None, False, False, "all")),
    ("table:silver_events", Selector("silver_events", "table", False, False, "table:silver_events")),
    ("+layer:silver+", Selector("silver", "layer", True, True, "+layer:silver+")),
    ("pipeline:gold", Selector("gold", "pipeline", False, False, "pipeline:gold")),
    ("s3://bucket/t", Selector("s3://bucket/t", None, False, False, "s3://bucket/t")),  # not a method: a name
])
def test_parse_each_form(text, want):
    assert parse_selector(text) == want


@pytest.mark.parametrize("text, fragment", [
    ("+", "invalid selector '+'"),
    ("++", "invalid selector '++'"),
    ("silver++", "invalid selector"),
    ("2+silver", "invalid selector"),
    ("@silver", "invalid selector"),
    ("table:", "names nothing"),
    ("silver,gold", "intersections"),
])
def test_parse_refuses_malformed_selectors(text, fragment):
    with pytest.raises(UsageError) as info:
        parse_selector(text)
    assert fragment in info.value.message
    assert info.value.exit_code == ExitCode.USAGE


def test_parse_selection_union_and_exclusions():
    spec = parse_selection(["silver_events+", "bronze gold"], exclude=["gold_daily_sales"])
    assert [s.value for s in spec.include] == ["silver_events", "bronze", "gold"]  # one argument may hold several
    assert spec.exclude == (Selector("gold_daily_sales", raw="gold_daily_sales"),)
    assert str(spec) == "silver_events+ bronze gold --exclude gold_daily_sales"
    with pytest.raises(UsageError, match="no tables selected"):
        parse_selection([], exclude=["gold"])


# -- selection over a graph with several tables per layer -----------------------------------
def node(table, pipeline, layer, *sources):
    edges = tuple(Edge(s, s, "table", "watermark") for s in sources) or (Edge("landing", "data/landing", "landing", "files"),)
    return Node(table, pipeline, layer, edges, "append")


# Producers first, as build_graph orders them. Pipeline `customers` is tagged silver and named
# unlike its table; pipeline `silver` writes silver_events (a pipeline named like a layer).
GRAPH = TableGraph((
    node("bronze_events", "bronze", "bronze"),
    node("bronze_customers", "bronze_customers", "bronze"),
    node("silver_events", "silver", "silver", "bronze_events"),
    node("silver_customers", "customers", "silver", "bronze_customers"),
    node("gold_daily_sales", "gold", "gold", "silver_events"),
    node("gold_sales_by_segment", "segments", "gold", "silver_events", "silver_customers"),
))


@pytest.mark.parametrize("selectors, exclude, want", [
    (["all"], [], list(GRAPH.tables)),
    (["silver"], [], ["silver_events", "silver_customers"]),  # the tag, and pipeline `silver` (in it)
    (["layer:silver"], [], ["silver_events", "silver_customers"]),
    (["pipeline:silver"], [], ["silver_events"]),
    (["silver_customers"], [], ["silver_customers"]),
    (["customers"], [], ["silver_customers"]),  # a pipeline name
    (["silver_customers+"], [], ["silver_customers", "gold_sales_by_segment"]),
    (["+gold_sales_by_segment"], [], ["bronze_events", "bronze_customers", "silver_events", "silver_customers",
                                      "gold_sales_by_segment"]),
    (["+silver_events+"], [], ["bronze_events", "silver_events", "gold_daily_sales", "gold_sales_by_segment"]),
    (["bronze+"], [], list(GRAPH.tables)),  # + applies to every table of the tag
    (["+gold"], [], list(GRAPH.tables)),
    (["gold", "bronze_customers"], [], ["bronze_customers", "gold_daily_sales", "gold_sales_by_segment"]),  # run order
    (["all"], ["gold"], ["bronze_events", "bronze_customers", "silver_events", "silver_customers"]),
    (["bronze_events+"], ["gold_sales_by_segment"], ["bronze_events", "silver_events", "gold_daily_sales"]),
    (["+gold_sales_by_segment"], ["+silver_events"], ["bronze_customers", "silver_customers", "gold_sales_by_segment"]),
    (["all"], ["silver_customers+", "bronze"], ["silver_events", "gold_daily_sales"]),
])
def test_select_each_form(selectors, exclude, want):
    assert select(GRAPH, selectors, exclude) == want


def test_select_takes_a_spec_built_without_parsing():
    spec = SelectionSpec((Selector("gold_sales_by_segment", "table", parents=True),), (Selector("bronze", "layer"),))
    assert select_tables(GRAPH, spec) == ["silver_events", "silver_customers", "gold_sales_by_segment"]


@pytest.mark.parametrize("selectors, exclude", [(["platinum"], []), (["silver"], ["platinum+"]), (["table:silver"], [])])
def test_unknown_names_are_refused_listing_tables_and_layers(selectors, exclude):
    with pytest.raises(UsageError) as info:
        select(GRAPH, selectors, exclude)
    err = info.value
    assert err.message.startswith("unknown ") and err.exit_code == ExitCode.USAGE
    assert "bronze, silver, gold, bronze_events, bronze_customers, silver_events" in err.hint
    assert "pipelines: customers, segments" in err.hint


def test_a_near_miss_is_suggested():
    with pytest.raises(UsageError) as info:
        select(GRAPH, ["silver_event+"])
    assert info.value.message == "unknown table or layer 'silver_event'"
    assert info.value.hint.startswith("did you mean 'silver_events'?")


def test_empty_after_exclusion_is_an_error():
    with pytest.raises(UsageError) as info:
        select(GRAPH, ["silver"], ["silver_events", "customers+"])
    assert info.value.message == ("the selection is empty: --exclude silver_events customers+ removes every table "
                                  "that silver selects")


# -- the real project ------------------------------------------------------------------------
def plan_tables(r) -> list[str]:
    assert r.exit_code == 0, r
    return [p["table"] for p in json.loads(r.stdout)["plan"]]


def test_run_plan_with_selectors_and_exclusions(project):
    assert plan_tables(medallion("run", "silver_events+", "--plan", "--json", "-C", project)) == [
        "silver_events", "gold_daily_sales", "gold_sales_by_segment"]
    assert plan_tables(medallion("run", "silver_customers+", "--plan", "--json", "-C", project)) == [
        "silver_customers", "gold_sales_by_segment"]
    assert plan_tables(medallion("run", "+gold_sales_by_segment", "--exclude", "bronze", "--plan", "--json",
                                 "-C", project)) == ["silver_customers", "silver_events", "gold_sales_by_segment"]
    assert plan_tables(medallion("run", "gold", "bronze_events", "--plan", "--json", "-C", project)) == [
        "bronze_events", "gold_daily_sales", "gold_sales_by_segment"]
    assert plan_tables(medallion("run", "all", "--exclude", "bronze_customers+", "--plan", "--json", "-C", project)) == [
        "bronze_events", "silver_events", "gold_daily_sales"]


def test_layer_tags_and_pipeline_names_in_a_real_project(project):
    # Retag gold_daily_sales as silver, and write it from a pipeline named unlike its table.
    conf, code = project / "conf" / "pipelines", project / "pipelines"
    (conf / "gold_daily_sales.yml").rename(conf / "daily.yml")
    (code / "gold_daily_sales.py").rename(code / "daily.py")
    daily = conf / "daily.yml"
    daily.write_text(daily.read_text().replace("  layer: gold\n", "  layer: silver\n", 1))
    loaded = load_project(project)
    assert [l.name for l in select_layers(loaded, ["silver"])] == ["silver_customers", "silver_events", "daily"]
    assert [l.name for l in select_layers(loaded, ["pipeline:daily"])] == ["daily"]
    assert [l.name for l in select_layers(loaded, ["daily"])] == ["daily"]  # a pipeline name
    assert [l.name for l in select_layers(loaded, ["gold_daily_sales"])] == ["daily"]  # its table
    assert [l.name for l in select_layers(loaded, ["gold"])] == ["gold_sales_by_segment"]
    assert [l.name for l in select_layers(loaded, ["all"], exclude=["silver"])] == [
        "bronze_customers", "bronze_events", "gold_sales_by_segment"]
    r = medallion("run", "daily", "--plan", "--json", "-C", project)
    assert [p["table"] for p in json.loads(r.stdout)["plan"]] == ["gold_daily_sales"], r


@pytest.mark.parametrize("args, fragment", [
    (["platinum"], "unknown table or layer 'platinum'"),
    (["all", "--exclude", "platinum"], "unknown table or layer 'platinum'"),
    (["silver", "--exclude", "+gold"], "the selection is empty: --exclude +gold removes every table that silver selects"),
    (["silver+", "--plan", "--exclude", "silver", "--exclude", "gold"], "the selection is empty"),
    (["++silver"], "invalid selector '++silver'"),
])
def test_bad_selections_exit_2_with_one_line(project, args, fragment):
    r = medallion("run", *args, "-C", project)
    assert r.exit_code == ExitCode.USAGE, r
    assert fragment in r.stderr and "Traceback" not in r.stderr, r
    assert len([line for line in r.stderr.splitlines() if line.startswith("error:")]) == 1, r
    assert not (project / "lake").exists()


def test_run_with_an_exclusion_leaves_the_excluded_table_alone(project):
    r = medallion("run", "all", "--exclude", "gold_daily_sales", "-C", project, "--json")
    assert r.exit_code == 0, r
    assert [l["table"] for l in json.loads(r.stdout)["layers"]] == [
        "bronze_customers", "bronze_events", "silver_customers", "silver_events", "gold_sales_by_segment"]
    assert not (project / "lake" / "gold_daily_sales").exists()


def test_full_refresh_of_a_selection_rebuilds_only_it(ran_project):
    before = DeltaTable(str(ran_project / "lake" / "bronze_events")).version()
    r = medallion("run", "silver_events+", "--full-refresh", "--yes", "--json", "-C", ran_project)
    assert r.exit_code == 0, r
    layers = json.loads(r.stdout)["layers"]
    assert [(l["table"], l["kind"]) for l in layers] == [
        ("silver_events", "full_refresh"), ("gold_daily_sales", "full_refresh"), ("gold_sales_by_segment", "full_refresh")]
    assert DeltaTable(str(ran_project / "lake" / "bronze_events")).version() == before
    assert DeltaTable(str(ran_project / "lake" / "silver_customers")).version() == 0


# -- --set scoping -----------------------------------------------------------------------------
def test_scoped_override_targets_one_pipeline(project):
    layers = select_layers(load_project(project), ["+gold_daily_sales"])
    bronze, silver, gold = layers
    overrides = parse_overrides(["amount_decimals=3", "silver_events.amount_decimals=4", "gold_daily_sales.rolling_window_days=14",
                                 "target_file_size_mb=32"])
    check_overrides(layers, overrides)
    assert layer_overrides(silver, overrides) == {"amount_decimals": 4, "target_file_size_mb": 32}  # scoped wins
    assert layer_overrides(gold, overrides) == {"amount_decimals": 3, "rolling_window_days": 14, "target_file_size_mb": 32}
    assert layer_overrides(bronze, overrides) == {"amount_decimals": 3, "target_file_size_mb": 32}


@pytest.mark.parametrize("selection, pair, fragment", [
    ("silver", "gold_daily_sales.rolling_window_days=3", "'gold_daily_sales' is not a selected table or pipeline"),
    ("all", "silver_events.rolling_window_days=3", "unknown --set key 'rolling_window_days' for 'silver_events'"),
    ("all", "platinum.rolling_window_days=3", "'platinum' is not a selected table or pipeline"),
    ("silver", "rolling_window_days=3", "unknown --set key 'rolling_window_days'"),  # declared by gold only
    ("gold", "gold_daily_sales.rolling_window_days=abc",
     "--set gold_daily_sales.rolling_window_days='abc': layer 'gold_daily_sales' expects int, got str"),
    ("gold", "gold_daily_sales.target_file_size_mb=0", "--set gold_daily_sales.target_file_size_mb must be a positive integer"),
    ("gold", "gold.target_file_size_mb=64", "'gold' is not a selected table or pipeline"),  # a tag is not a scope
    ("gold", ".rolling_window_days=3", "is not KEY=VALUE or TABLE.KEY=VALUE"),
])
def test_bad_scoped_overrides_are_refused_before_anything_runs(project, selection, pair, fragment):
    r = medallion("run", selection, "--set", pair, "-C", project)
    assert r.exit_code == ExitCode.USAGE, r
    assert fragment in r.stderr and "Traceback" not in r.stderr, r
    assert not (project / "lake").exists()


def test_two_scoped_values_for_one_pipeline_are_refused(project):
    conf, code = project / "conf" / "pipelines", project / "pipelines"
    (conf / "gold_daily_sales.yml").rename(conf / "daily.yml")
    (code / "gold_daily_sales.py").rename(code / "daily.py")
    layers = select_layers(load_project(project), ["gold"])
    with pytest.raises(UsageError, match="give 'daily' two values"):
        check_overrides(layers, {"daily.rolling_window_days": 3, "gold_daily_sales.rolling_window_days": 4})
    check_overrides(layers, {"daily.rolling_window_days": 3, "gold_daily_sales.rolling_window_days": 3})


def test_scoped_override_reaches_the_pipeline(ran_project):
    r = medallion("run", "silver_events+", "--set", "gold_daily_sales.rolling_window_days=1", "--full-refresh", "-y",
                  "-q", "-C", ran_project)
    assert r.exit_code == 0, r
    gold = DeltaTable(str(ran_project / "lake" / "gold_daily_sales")).to_pyarrow_table().to_pylist()
    assert gold and all(row["rolling_mean_sales"] == pytest.approx(row["total_sales"]) for row in gold)


# -- verify uses the same selection ------------------------------------------------------------
def test_verify_selects_like_run(ran_project):
    r = medallion("verify", "+silver_events__quarantine+", "--exclude", "gold", "--json", "-C", ran_project)
    assert r.exit_code == 0, r
    doc = json.loads(r.stdout)
    assert doc["rebuilt"] == ["bronze_events", "silver_events"]  # gold excluded: neither rebuilt nor compared
    assert [t["table"] for t in doc["tables"]][:2] == ["bronze_events", "silver_events"]
    assert not {t["table"] for t in doc["tables"]} & {"gold_daily_sales"}


def test_verify_selection_keeps_quarantine_names(project):
    loaded = load_project(project)
    assert [l.name for l in verify_select(loaded, ["silver_events__quarantine+"], ["gold"])] == ["silver_events"]
    assert [l.name for l in verify_select(loaded, ["silver_customers__quarantine"])] == ["silver_customers"]
    assert [l.name for l in verify_select(loaded, [])] == [
        "bronze_customers", "bronze_events", "silver_customers", "silver_events", "gold_daily_sales",
        "gold_sales_by_segment"]


def test_verify_refuses_unknown_and_empty_selections(project):
    r = medallion("verify", "platinum__quarantine", "-C", project)
    assert r.exit_code == ExitCode.USAGE and "unknown table or layer 'platinum__quarantine'" in r.stderr, r
    r = medallion("verify", "gold", "--exclude", "+gold", "-C", project)
    assert r.exit_code == ExitCode.USAGE and "the selection is empty" in r.stderr, r
