"""The catalog behind the docs site: one JSON-ready dict, written as ``catalog.json``.

Built from what the other commands read: the table graph and each edge's contract
(:mod:`medallion_cli.dagviews`), Delta metadata and history (:mod:`medallion_cli.delta`),
watermarks (:mod:`medallion_cli.watermarks`), run records (:mod:`medallion_cli.runrecords`)
and quarantine tables (:mod:`medallion_cli.quality`). Pipeline DAG nodes and docstrings are
read from the pipeline modules with :mod:`ast`, without importing them. Storage options
appear masked; the written files are also passed through :func:`storage.scrub`.
"""

from __future__ import annotations

import ast
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medallion_cli import __version__
from medallion_cli.timeparse import iso_utc

if TYPE_CHECKING:
    from medallion_cli.project import LayerConfig, Project

CATALOG_SCHEMA_VERSION = 1
STALE_AFTER_HOURS = 24  # a table whose last commit is older than this is shown as stale
HISTORY_LIMIT = 20  # Delta commits per table
RUNS_LIMIT = 50  # recorded runs (newest first)


def build_catalog(project: Project, *, now: datetime | None = None, runs_limit: int = RUNS_LIMIT,
                  history_limit: int = HISTORY_LIMIT) -> dict[str, Any]:
    """Everything the docs pages show, as one JSON-ready dict (see README, "Docs site").

    Args:
        project: the loaded project.
        now: the time freshness is measured from (default: now, UTC).
        runs_limit: how many recorded runs to include, newest first.
        history_limit: how many Delta commits to include per table.
    """
    from medallion_cli.dagviews import dag_view
    from medallion_cli.graph import project_graph
    from medallion_cli.storage import mask

    now = now or datetime.now(timezone.utc)
    graph = project_graph(project)
    view = dag_view(project, graph, list(graph.tables), with_status=True)
    runs = _runs(project, runs_limit)
    last_status = _last_status(runs)
    watermarks = _watermarks(project)
    tables = []
    for node in view.nodes:
        layer = project.layer(node.pipeline)
        last = (view.last_commits or {}).get(node.table)
        doc: dict[str, Any] = {
            "table": node.table,
            "pipeline": node.pipeline,
            "layer": node.layer,
            "write_mode": node.write_mode,
            "uri": project.table_uri(node.table),
            "inputs": [e.to_dict() | {"label": e.label} for e in view.inputs(node.table)],
            "upstream": sorted(graph.parents(node.table)),
            "downstream": sorted(graph.children(node.table)),
            "target": _target(layer),
            "incremental": _incremental(layer),
            "quality_config": _quality_config(layer),
            "last_commit": last.to_dict() if last else None,
            "age_s": round((now - last.time).total_seconds(), 3) if last and last.time else None,
            "last_run": last_status.get(node.table),
            "watermarks": [w for w in watermarks if w["table"] == node.table],
            "pipeline_nodes": pipeline_nodes(project.root / "pipelines" / f"{node.pipeline}.py"),
        }
        doc["freshness"] = _freshness(doc["age_s"])
        doc.update(_delta(project, node.table, history_limit))
        doc["quality"] = _quality_history(node.table, runs)
        doc["quarantine"] = _quarantine(project, layer)
        tables.append(doc)
    return {
        "schema_version": CATALOG_SCHEMA_VERSION,
        "generated_at": iso_utc(now),
        "medallion_version": __version__,
        "project": {"name": project.name, "lake_root": project.lake_root,
                    "storage_options": mask(dict(project.storage.options)) if project.storage else {},
                    "stale_after_hours": STALE_AFTER_HOURS},
        "layers": [{"layer": k, "tables": list(v)} for k, v in view.layers.items()],
        "sources": [{"kind": e.kind, "name": e.source} for e in view.sources()],
        "edges": [{"from": e.source, "to": e.target, "kind": e.kind, "contract": e.contract, "label": e.label}
                  for e in view.edges],
        "tables": tables,
        "runs": runs,
    }


# -- per table ------------------------------------------------------------------------
def _target(layer: LayerConfig) -> dict[str, Any]:
    t = layer.target
    return {"mode": t.mode, "keys": list(t.keys), "order_by": list(t.order_by), "partition_by": list(t.partition_by),
            "schema_evolution": t.schema_evolution}


def _incremental(layer: LayerConfig) -> dict[str, Any] | None:
    inc = layer.incremental
    if inc is None:
        return None
    return {"strategy": inc.strategy, "column": inc.column, "lookback": inc.lookback, "window_days": inc.window_days,
            "backfill_column": inc.backfill_column}


def _quality_config(layer: LayerConfig) -> dict[str, Any] | None:
    q = layer.quality
    if q is None:
        return None
    return {"schemas": [{"name": g.name, "policy": g.policy} for g in q.gates],
            "max_invalid_fraction": q.max_invalid_fraction}


def _freshness(age_s: float | None) -> str:
    if age_s is None:
        return "never"
    return "stale" if age_s > STALE_AFTER_HOURS * 3600 else "fresh"


def _delta(project: Project, table: str, history_limit: int) -> dict[str, Any]:
    """Schema, partitioning, files, size, rows, version and recent history of one table."""
    from medallion_cli.delta import TableRef, describe, history

    ref = TableRef(table, project.table_uri(table), None, project.storage)
    empty = {"exists": False, "version": None, "rows": None, "files": None, "size_bytes": None, "schema": [],
             "partition_columns": [], "properties": {}, "history": []}
    if not ref.store.is_table(ref.uri):
        return empty
    d = describe(ref)
    return {"exists": True, "version": d.version, "rows": d.rows_from_stats, "files": d.files, "size_bytes": d.size_bytes,
            "schema": [{"name": c["name"], "type": c["type"], "nullable": c["nullable"]} for c in d.columns],
            "partition_columns": d.partition_columns, "properties": d.properties,
            "history": [h.to_dict() for h in history(ref, limit=history_limit)]}


def _watermarks(project: Project) -> list[dict[str, Any]]:
    from medallion_cli import watermarks

    if not watermarks.incremental_layers(project):
        return []
    return [w.to_dict() for w in watermarks.show(project)]


def _quarantine(project: Project, layer: LayerConfig) -> dict[str, Any] | None:
    """The quarantine table's size and its counts per check (None: the layer quarantines nothing)."""
    from medallion_cli.quality import quarantine_table, summarize

    q = layer.quality
    if q is None or not any(g.policy == "quarantine" for g in q.gates):
        return None
    table = quarantine_table(layer)
    uri = project.table_uri(table)
    if not project.storage.is_table(uri):
        return {"table": table, "exists": False, "rows": 0, "files": 0, "size_bytes": 0, "checks": []}
    from medallion_cli.delta import TableRef, describe

    d = describe(TableRef(table, uri, None, project.storage))
    summary = summarize(uri, project.storage, table=table, samples=3)
    checks = [{"schema": c["schema"], "column": c["column"], "check": c["check"], "rows": c["rows"],
               "samples": [None if v is None else str(v) for v in c["samples"]]} for c in summary["checks"]]
    return {"table": table, "exists": True, "version": d.version, "rows": summary["rows"], "files": d.files,
            "size_bytes": d.size_bytes, "checks": checks}


def _quality_history(table: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's quality reports, one per recorded run that checked it, oldest first."""
    found = []
    for run in reversed(runs):
        for t in run["tables"]:
            q = t.get("quality")
            if t["table"] == table and q:
                found.append({"run_id": run["run_id"], "started_at": run["started_at"],
                              "rows_checked": q.get("rows_checked"), "rows_invalid": q.get("rows_invalid"),
                              "rows_dropped": q.get("rows_dropped"), "rows_quarantined": q.get("rows_quarantined"),
                              "checks": [{k: c.get(k) for k in ("schema", "column", "check", "rows")}
                                         for c in q.get("checks") or []]})
    return found


# -- runs -----------------------------------------------------------------------------
def _runs(project: Project, limit: int) -> list[dict[str, Any]]:
    """Recorded runs of tables (``run``, ``retry``), newest first, with per-table outcomes."""
    from medallion_cli.runrecords import RunRecords

    out = []
    for doc in RunRecords(project).documents(limit=limit, commands=("run", "retry")):
        err = doc.get("error") or {}
        out.append({
            "run_id": doc["run_id"], "command": doc["command"], "command_line": doc["command_line"],
            "status": doc["status"], "exit_code": doc["exit_code"], "started_at": doc["started_at"],
            "ended_at": doc["ended_at"], "duration_s": doc["duration_s"], "retry_of": doc["retry_of"],
            "error": err.get("message"), "error_hint": err.get("hint"),
            "tables": [{"table": layer.get("table"), "status": layer.get("status"), "duration_s": layer.get("duration_s"),
                        "rows_in": layer.get("rows_in"), "rows_out": layer.get("rows_out"),
                        "version": layer.get("version"), "error": _error_text(layer.get("error")),
                        "warnings": list(layer.get("warnings") or []), "quality": layer.get("quality")}
                       for layer in doc["layers"]],
        })
    return out


def _error_text(error: Any) -> str | None:
    if error is None:
        return None
    if isinstance(error, dict):
        return error.get("message") or str(error)
    return str(error)


def _last_status(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per table, its outcome in the newest run that included it."""
    found: dict[str, dict[str, Any]] = {}
    for run in runs:  # newest first
        for t in run["tables"]:
            found.setdefault(t["table"], {"run_id": run["run_id"], "status": t["status"],
                                          "started_at": run["started_at"], "duration_s": t["duration_s"],
                                          "error": t["error"]})
    return found


# -- pipeline modules -----------------------------------------------------------------
def pipeline_nodes(path: Path) -> dict[str, Any]:
    """The Hamilton nodes of a pipeline module (public functions), their inputs and
    docstrings, read with :mod:`ast` (the module is not imported)."""
    if not path.is_file():
        return {"module": path.name, "doc": None, "nodes": [], "error": "pipeline module not found"}
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError) as exc:
        return {"module": path.name, "doc": None, "nodes": [], "error": f"cannot parse: {exc}"}
    functions = [f for f in tree.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and not f.name.startswith("_")]
    names = {f.name for f in functions}
    nodes = []
    for f in functions:
        args = [a.arg for a in (*f.args.posonlyargs, *f.args.args, *f.args.kwonlyargs)]
        nodes.append({"name": f.name, "doc": ast.get_docstring(f), "depends_on": [a for a in args if a in names],
                      "inputs": [a for a in args if a not in names],
                      "returns": ast.unparse(f.returns) if f.returns is not None else None})
    return {"module": path.name, "doc": ast.get_docstring(tree), "nodes": nodes, "error": None}
