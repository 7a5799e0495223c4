"""`medallion dag`: the table graph in text, Mermaid, dot and JSON, from a real project."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime

import pytest

from conftest import add_landing_file, medallion
from medallion_cli.dagviews import dot_quote, mermaid_label
from medallion_cli.errors import ExitCode
from test_errors import assert_clean_error

EDGES = [  # in the order they are listed: by layer, each table's inputs under it
    "landing data/landing/customers → bronze_customers [files]",
    "landing data/landing/events → bronze_events [files]",
    "bronze_customers → silver_customers [watermark on _ingested_at]",
    "bronze_events → silver_events [watermark on _ingested_at]",
    "silver_events → gold_daily_sales [partitions on event_date, window rolling_window_days]",
    "silver_events → gold_sales_by_segment [partitions on event_date, window 1]",
    "silver_customers → gold_sales_by_segment [snapshot]",
]
TABLES = ["bronze_customers", "bronze_events", "silver_customers", "silver_events", "gold_daily_sales",
          "gold_sales_by_segment"]


def dag(project, *args):
    r = medallion("dag", "-C", project, *args)
    assert r.exit_code == 0, r
    return r.stdout


def status_lines(text: str) -> dict[str, str]:
    """table -> what its line says after `last run:`."""
    found = {}
    for line in text.splitlines():
        m = re.match(r"  (\w+)\s+.*last run: (.*)$", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def test_text_groups_tables_by_layer_with_contracts_and_last_run(project):
    before = dag(project)
    lines = [line.strip() for line in before.splitlines()]
    assert [line for line in lines if line in ("bronze", "silver", "gold")] == ["bronze", "silver", "gold"]
    for edge in EDGES:
        assert edge in lines, before
    at = [lines.index(edge) for edge in EDGES]
    assert at == sorted(at)
    assert lines.index("bronze") < at[0] < at[1] < lines.index("silver") < at[2] < at[3] < lines.index("gold") < at[4]
    # The pipeline is named only where it is not the table's name.
    assert "pipeline" not in before
    assert status_lines(before) == {t: "never run" for t in TABLES}

    first = medallion("run", "all", "-C", project, "--json", "-q")
    assert first.exit_code == 0, first
    run_id = json.loads(first.stdout)["run_id"]
    after = status_lines(dag(project))
    assert set(after) == set(TABLES)
    for table in TABLES:
        assert re.fullmatch(rf"v0 WRITE at \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ, run {re.escape(run_id)}", after[table]), after

    add_landing_file(project, "late.csv")  # the next run commits to every table: the newest commit is shown
    second = medallion("run", "all", "-C", project, "--json", "-q")
    assert second.exit_code == 0, second
    run_id2 = json.loads(second.stdout)["run_id"]
    after2 = status_lines(dag(project))
    assert after2["bronze_events"].startswith("v1 WRITE") and after2["bronze_events"].endswith(f"run {run_id2}"), after2
    assert after2["silver_events"].startswith("v1 MERGE") and after2["silver_events"].endswith(f"run {run_id2}"), after2


def test_a_commit_not_made_by_a_run_is_named_as_such(ran_project):
    from deltalake import DeltaTable

    DeltaTable(str(ran_project / "lake" / "gold_daily_sales")).alter.set_table_properties({"delta.appendOnly": "false"})
    assert re.fullmatch(r"v1 SET TBLPROPERTIES at \S+Z \(not written by medallion\)",
                        status_lines(dag(ran_project))["gold_daily_sales"])


def _snake_keys(doc) -> list[str]:
    bad = []
    if isinstance(doc, dict):
        bad += [k for k in doc if not re.fullmatch(r"[a-z][a-z0-9_]*", k)]
        for v in doc.values():
            bad += _snake_keys(v)
    elif isinstance(doc, list):
        for v in doc:
            bad += _snake_keys(v)
    return bad


def test_json_is_one_document_before_and_after_a_run(project):
    doc = json.loads(dag(project, "--format", "json"))
    assert _snake_keys(doc) == []
    assert doc["project"] == "shop"
    assert doc["layers"] == [{"layer": "bronze", "tables": ["bronze_customers", "bronze_events"]},
                             {"layer": "silver", "tables": ["silver_customers", "silver_events"]},
                             {"layer": "gold", "tables": ["gold_daily_sales", "gold_sales_by_segment"]}]
    assert [t["table"] for t in doc["tables"]] == TABLES
    assert [(t["exists"], t["last_commit"]) for t in doc["tables"]] == [(False, None)] * 6
    assert doc["tables"][4]["inputs"] == [{
        "name": "silver_events", "source": "silver_events", "kind": "table", "contract": "partitions",
        "target": "gold_daily_sales", "column": "event_date", "window_days": "rolling_window_days", "lookback": None,
    }]
    assert [(e["name"], e["contract"]) for e in doc["tables"][5]["inputs"]] == [
        ("silver_events", "partitions"), ("silver_customers", "snapshot")]
    assert doc["edges"][0] == {"from": "data/landing/customers", "to": "bronze_customers", "kind": "landing",
                               "contract": "files", "label": "files"}
    assert doc["edges"][3] == {"from": "bronze_events", "to": "silver_events", "kind": "table", "contract": "watermark",
                               "label": "watermark on _ingested_at"}
    assert doc["edges"][-1] == {"from": "silver_customers", "to": "gold_sales_by_segment", "kind": "table",
                                "contract": "snapshot", "label": "snapshot"}
    assert [f"{e['from']} → {e['to']}" for e in doc["edges"]] == [
        edge.removeprefix("landing ").split(" [")[0] for edge in EDGES]

    r = medallion("run", "all", "-C", project, "--json", "-q")
    assert r.exit_code == 0, r
    run_id = json.loads(r.stdout)["run_id"]
    doc = json.loads(dag(project, "--json"))  # --json is --format json
    for t in doc["tables"]:
        last = t["last_commit"]
        assert t["exists"] is True
        assert (last["version"], last["operation"], last["run_id"], last["layer"]) == (0, "WRITE", run_id, t["pipeline"])
        assert last["time"].endswith("Z") and datetime.fromisoformat(last["time"]).utcoffset().total_seconds() == 0


MERMAID_LINE = re.compile(
    r'flowchart LR'
    r'|  subgraph L\d+\["[^"]*"\]'
    r'|    T\d+\[\("[^"]*"\)\]'
    r'|  end'
    r'|  S\d+(\[/"[^"]*"/\]|\[\("[^"]*"\)\])'
    r'|  [TS]\d+ -->\|"[^"|]*"\| T\d+'
    r'|  classDef outside stroke-dasharray: 5 5'
    r'|  class [S\d,]+ outside'
)


def check_mermaid(text: str) -> None:
    """Every line is one of the few statement forms the renderer emits (ids generated,
    names only inside quoted labels), and every subgraph is closed."""
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    for line in lines:
        assert MERMAID_LINE.fullmatch(line), line
    assert sum(line.startswith("  subgraph ") for line in lines) == lines.count("  end")


def test_mermaid_flowchart_with_a_subgraph_per_layer(ran_project):
    text = dag(ran_project, "--format", "mermaid")
    check_mermaid(text)
    assert text == (
        "flowchart LR\n"
        '  subgraph L0["bronze"]\n    T0[("bronze_customers")]\n    T1[("bronze_events")]\n  end\n'
        '  subgraph L1["silver"]\n    T2[("silver_customers")]\n    T3[("silver_events")]\n  end\n'
        '  subgraph L2["gold"]\n    T4[("gold_daily_sales")]\n    T5[("gold_sales_by_segment")]\n  end\n'
        '  S0[/"data/landing/customers"/]\n'
        '  S1[/"data/landing/events"/]\n'
        '  S0 -->|"files"| T0\n'
        '  S1 -->|"files"| T1\n'
        '  T0 -->|"watermark on _ingested_at"| T2\n'
        '  T1 -->|"watermark on _ingested_at"| T3\n'
        '  T3 -->|"partitions on event_date, window rolling_window_days"| T4\n'
        '  T3 -->|"partitions on event_date, window 1"| T5\n'
        '  T2 -->|"snapshot"| T5\n'
        "  classDef outside stroke-dasharray: 5 5\n"
        "  class S0,S1 outside\n"
    )


def check_dot(text: str, tmp_path) -> str:
    """Graphviz's own parser when `dot` is installed (returns the SVG), else the structure."""
    lines = text.splitlines()
    assert lines[0].startswith("digraph ") and lines[0].endswith("{") and lines[-1] == "}"
    assert text.count("{") == text.count("}")
    if shutil.which("dot") is None:
        return ""
    src = tmp_path / "dag.dot"
    src.write_text(text, encoding="utf-8")
    done = subprocess.run(["dot", "-Tsvg", str(src)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    return done.stdout


def test_dot_renders_in_graphviz(ran_project, tmp_path):
    text = dag(ran_project, "--format", "dot")
    assert ("  subgraph cluster_0 {\n    label=\"bronze\";\n    t0 [label=\"bronze_customers\"];\n"
            "    t1 [label=\"bronze_events\"];\n  }") in text
    assert '  s1 [label="data/landing/events", shape=folder, style=dashed];' in text
    assert '  t3 -> t4 [label="partitions on event_date, window rolling_window_days"];' in text
    assert '  t2 -> t5 [label="snapshot"];' in text
    svg = check_dot(text, tmp_path)
    if svg:
        for name in [*TABLES, "bronze", "silver", "gold", "watermark on _ingested_at"]:
            assert f">{name}<" in svg, name


def test_names_with_quotes_and_spaces_are_escaped(project, tmp_path):
    odd = 'data/my "odd" landing <#1> & \\N |x|'
    bronze = project / "conf" / "pipelines" / "bronze_events.yml"
    text = bronze.read_text()
    assert "landing: data/landing/events\n" in text
    bronze.write_text(text.replace("landing: data/landing/events\n", f"landing: {json.dumps(odd)}\n"))

    mermaid = dag(project, "-f", "mermaid")
    check_mermaid(mermaid)
    assert '  S1[/"data/my #quot;odd#quot; landing #lt;#35;1#gt; #amp; \\N #124;x#124;"/]' in mermaid, mermaid

    dot = dag(project, "-f", "dot")
    assert '  s1 [label="data/my \\"odd\\" landing <#1> & \\\\N |x|", shape=folder, style=dashed];' in dot, dot
    svg = check_dot(dot, tmp_path)
    if svg:  # the label arrives whole: no `\N` expanded to the node's name, no quote cut short
        assert ">data/my &quot;odd&quot; landing &lt;#1&gt; &amp; \\N |x|<" in svg, svg

    assert f"landing {odd} → bronze_events [files]" in dag(project)
    assert json.loads(dag(project, "--json"))["edges"][1]["from"] == odd


def test_escapers():
    assert mermaid_label('a "b"\n<c>') == '"a #quot;b#quot; #lt;c#gt;"'
    assert mermaid_label("x#quot;") == '"x#35;quot;"'  # a literal entity stays literal
    assert dot_quote('a "b" \\N\nc') == '"a \\"b\\" \\\\N\\nc"'


def test_selection_by_table_and_layer(ran_project, tmp_path):
    text = dag(ran_project, "silver")
    assert "bronze_events → silver_events [watermark on _ingested_at]" in text
    assert "bronze_customers → silver_customers [watermark on _ingested_at]" in text
    assert set(status_lines(text)) == {"silver_customers", "silver_events"}
    assert "gold" not in text.splitlines() and "bronze" not in text.splitlines()

    # an unselected upstream table is drawn outside the layers, dashed
    mermaid = dag(ran_project, "silver", "-f", "mermaid")
    check_mermaid(mermaid)
    assert '  S1[("bronze_events")]' in mermaid and "  S1 -->|" in mermaid and "  class S0,S1 outside" in mermaid
    dot = dag(ran_project, "silver", "-f", "dot")
    assert '  s1 [label="bronze_events", shape=cylinder, style=dashed];' in dot
    check_dot(dot, tmp_path)

    doc = json.loads(dag(ran_project, "gold", "bronze_events", "--json"))
    assert [t["table"] for t in doc["tables"]] == ["bronze_events", "gold_daily_sales", "gold_sales_by_segment"]  # run order
    doc = json.loads(dag(ran_project, "+gold_sales_by_segment", "--exclude", "bronze", "--json"))
    assert [t["table"] for t in doc["tables"]] == ["silver_customers", "silver_events", "gold_sales_by_segment"]
    assert [t["table"] for t in json.loads(dag(ran_project, "all", "--json"))["tables"]] == TABLES


def test_quiet_keeps_the_data_and_stderr_empty(ran_project):
    r = medallion("dag", "-C", ran_project, "-q")
    assert r.exit_code == 0 and r.stderr == "" and "bronze_events" in r.stdout, r


def test_unknown_name_is_refused_listing_tables_and_layers(project):
    r = medallion("dag", "-C", project, "silver", "platinum")
    assert_clean_error(r, ExitCode.USAGE, "unknown table or layer 'platinum'", "bronze_events, silver_customers, silver_events",
                       "known layers and tables: bronze, silver, gold, bronze_customers, bronze_events")
    assert r.stdout == ""


def test_no_project_and_conflicting_formats_are_usage_errors(project, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = medallion("dag", "-C", empty)
    assert_clean_error(r, ExitCode.USAGE, "no medallion project")
    assert r.stdout == ""
    r = medallion("dag", "-C", project, "--json", "--format", "mermaid")
    assert_clean_error(r, ExitCode.USAGE, "--json and --format mermaid")
    r = medallion("dag", "-C", project, "--format", "svg")
    assert r.exit_code == ExitCode.USAGE and "Traceback" not in r.stderr, r


def test_a_corrupt_log_fails_text_cleanly_and_diagrams_do_not_read_the_lake(ran_project):
    """Mermaid and dot show structure only; text and json read each table's last commit."""
    log = ran_project / "lake" / "silver_events" / "_delta_log"
    (log / "00000000000000000001.json").write_text("not json\n")
    for fmt in ("text", "json"):
        r = medallion("dag", "-C", ran_project, "-f", fmt)
        assert_clean_error(r, ExitCode.RUN_FAILED, "silver_events")
        assert r.stdout == ""
    for fmt in ("mermaid", "dot"):
        assert "silver_events" in dag(ran_project, "-f", fmt)


def test_last_run_of_tables_on_s3(s3, tmp_path):
    r = medallion("init", "shop", "--directory", tmp_path, "--storage", "s3", "--bucket", "lake-bucket", "-q")
    assert r.exit_code == 0, r
    project = tmp_path / "shop"
    assert status_lines(dag(project)) == {t: "never run" for t in TABLES}
    r = medallion("run", "bronze", "-C", project, "--json", "-q")
    assert r.exit_code == 0, r
    run_id = json.loads(r.stdout)["run_id"]
    doc = json.loads(dag(project, "--json"))
    assert [(t["table"], t["exists"], (t["last_commit"] or {}).get("run_id")) for t in doc["tables"]] == [
        (table, table.startswith("bronze"), run_id if table.startswith("bronze") else None) for table in TABLES]


def test_a_failed_or_skipped_last_run_is_shown_before_the_last_commit(ran_project, monkeypatch):
    add_landing_file(ran_project, "late.csv")
    monkeypatch.setenv("MEDALLION_TEST_FAIL_AT", "silver_events:computed")
    r = medallion("run", "all", "-C", ran_project, "--json", "-q")
    assert r.exit_code == ExitCode.RUN_FAILED, r
    run_id = json.loads(r.stdout)["run_id"]
    lines = status_lines(dag(ran_project))
    assert re.fullmatch(rf"FAILED at \S+Z, run {re.escape(run_id)}: .*injected failure at silver_events:computed.*; "
                        rf"last commit v0 WRITE at \S+Z, run \S+", lines["silver_events"]), lines
    assert lines["gold_daily_sales"].startswith(f"SKIPPED at ") and "upstream silver_events failed" in lines["gold_daily_sales"]
    assert lines["bronze_events"].startswith("v1 WRITE")  # it succeeded: its newest commit says it all
    doc = {t["table"]: t for t in json.loads(dag(ran_project, "--json"))["tables"]}
    assert doc["silver_events"]["last_run"]["status"] == "failed" and doc["silver_events"]["last_run"]["run_id"] == run_id
    assert doc["bronze_events"]["last_run"]["status"] == "written"
