"""``medallion check``: validate a project without running it (for CI).

Configs parse, every pipeline module imports, every layer's DAG resolves with the inputs a
run would give it (Hamilton validates names and types), and every schema a quality gate
names imports from schemas.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medallion_cli.errors import MedallionError
from medallion_cli.project import import_file


@dataclass(frozen=True)
class CheckResult:
    layer: str | None
    check: str
    ok: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_project(root: Path) -> list[CheckResult]:
    from medallion_cli.flow import EXECUTORS
    from medallion_cli.project import load_project

    try:
        project = load_project(root)
    except MedallionError as exc:
        return [CheckResult(None, "configuration", False, exc.message)]
    results = [CheckResult(None, "configuration", True, f"{len(project.layers)} layers: {', '.join(project.layer_names)}")]
    schemas: dict[str, Any] = {}  # table -> polars schema of the layer output that writes it
    for layer in project.layers:
        dag_result, driver = _check_dag(project, layer)
        results.append(dag_result)
        if driver is not None:
            results.append(_check_output_columns(project, layer, driver, schemas))
        ok = layer.executor is None or layer.executor in EXECUTORS
        results.append(CheckResult(layer.name, "executor", ok, layer.executor or "default" if ok else
                                   f"unknown executor {layer.executor!r}: use one of {', '.join(EXECUTORS)}"))
        if layer.quality is not None:
            results.extend(_check_schemas(project, layer))
        if layer.retry is not None:
            results.append(_check_retry(project, layer))
    tracker = _check_tracker(project)
    if tracker is not None:
        results.append(tracker)
    for layer, name, table, uri in missing_inputs(project, project.layers):
        results.append(CheckResult(layer.name, "inputs", False, describe_missing_input(project, layer, name, table, uri)))
    return results


def _check_tracker(project: Any) -> CheckResult | None:
    """``medallion.tracker`` parses and the Hamilton SDK imports (the server is checked when
    a run starts: CI may check a project without reaching it)."""
    from medallion_cli.tracker import check_sdk, load_tracker

    try:
        config = load_tracker(project)
        if config is None:
            return None
        check_sdk()
    except MedallionError as exc:
        return CheckResult(None, "tracker", False, exc.message + (f" ({exc.hint})" if exc.hint else ""))
    return CheckResult(None, "tracker", True, f"Hamilton UI project {config.project_id} at {config.api_url}")


def _check_retry(project: Any, layer: Any) -> CheckResult:
    """The exception types a pipeline's ``medallion.retry`` lists import as exception classes."""
    from medallion_cli.flow import resolve_exceptions

    try:
        resolve_exceptions(layer.retry, root=project.root, where=str(layer.config_path))
    except MedallionError as exc:
        return CheckResult(layer.name, "retry", False, exc.message)
    r = layer.retry
    return CheckResult(layer.name, "retry", True, f"up to {r.max_attempts} attempts on {', '.join(r.retry_exceptions)}")


def _check_dag(project: Any, layer: Any) -> tuple[CheckResult, Any]:
    import os

    import polars as pl

    os.environ.setdefault("HAMILTON_AUTOLOAD_EXTENSIONS", "0")
    path = project.root / "pipelines" / f"{layer.name}.py"
    try:
        module = import_file(path)
    except (Exception, SystemExit) as exc:  # any import-time error of the user's module
        return CheckResult(layer.name, "pipeline", False, f"{path.name} fails to import: {type(exc).__name__}: {exc}"), None
    from hamilton import driver

    try:
        dr = driver.Builder().with_modules(module).build()
    except Exception as exc:  # Hamilton rejects the module's functions
        return CheckResult(layer.name, "pipeline", False, f"Hamilton cannot build the DAG of {path.name}: {exc}"), None
    names = {v.name for v in dr.list_available_variables()}
    if layer.output not in names:
        return CheckResult(layer.name, "pipeline", False, f"{path.name} has no node {layer.output!r} (medallion.output)"), None
    inputs = {**layer.inputs, **{name: pl.LazyFrame() for name in layer.input_names}, "run_id": "check",
              "run_started_at": datetime.now(timezone.utc)}
    try:
        dr.validate_execution([layer.output], inputs=inputs)
    except Exception as exc:  # Hamilton: missing or mistyped inputs
        text = str(exc).strip().splitlines()
        return CheckResult(layer.name, "pipeline", False, f"the DAG does not resolve: {' '.join(text[:3])}"), None
    return CheckResult(layer.name, "pipeline", True, f"{path.name}: {layer.output} resolves from its inputs"), dr


def _check_output_columns(project: Any, layer: Any, dr: Any, schemas: dict[str, Any]) -> CheckResult:
    """keys, partition_by and order_by name columns of the output.

    The output's schema comes from running the DAG on an empty source frame with the
    source's columns (the landing schema, or the upstream layer's output computed the same
    way, or the upstream table's schema); if that is not possible, from the target table.
    """
    import polars as pl

    from medallion_cli.project import missing_target_columns, target_columns

    source = None
    if layer.source.landing is not None:
        from medallion_cli.sources import SOURCE_FILE_COLUMN, polars_schema

        from medallion_cli.incremental import INGESTED_AT

        # what medallion hands a landing DAG: the declared columns plus its own two
        source = {**polars_schema(layer.source.schema), SOURCE_FILE_COLUMN: pl.String(),
                  INGESTED_AT: pl.Datetime("us", "UTC")}
    else:
        source = schemas.get(layer.source.table) or _table_schema(project, layer.source.table)
    columns, how, why_not = None, "", ""
    if source is not None:
        dims = {x.name: pl.LazyFrame(schema=schemas.get(x.table) or _table_schema(project, x.table) or {})
                for x in layer.snapshots}
        inputs = {**layer.inputs, **dims, layer.source.input_name: pl.LazyFrame(schema=source), "run_id": "check",
                  "run_started_at": datetime.now(timezone.utc)}
        try:
            value = dr.execute([layer.output], inputs=inputs)[layer.output]
            schema = value.collect_schema() if isinstance(value, pl.LazyFrame) else value.schema
            columns, how = list(schema.names()), "the output on an empty input"
            schemas[layer.target.table] = dict(schema)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a DAG that needs rows to run
            why_not = f"the DAG fails on an empty input ({type(exc).__name__})"
    if columns is None:
        table = _table_schema(project, layer.target.table)
        if table is not None:
            columns, how = list(table), f"table {layer.target.table}"
    if columns is None:
        return CheckResult(layer.name, "columns", True, f"not checked: {why_not or 'the source schema is unknown'}")
    problem = missing_target_columns(layer, columns)
    if problem:
        return CheckResult(layer.name, "columns", False, f"{problem} (columns of {how}: {', '.join(columns)})")
    named = ", ".join(f"{k}: {', '.join(v)}" for k, v in target_columns(layer.target).items())
    return CheckResult(layer.name, "columns", True, f"{named or 'no key, partition or order columns'} ({how})")


def _table_schema(project: Any, table: str) -> dict[str, Any] | None:
    """The polars schema of an existing project table, or None."""
    from medallion_cli.delta import TableRef, open_table, query

    ref = TableRef(table, project.table_uri(table), None, project.storage)
    try:
        if not ref.store.is_table(ref.uri):
            return None
        return dict(query(open_table(ref), "SELECT * FROM t LIMIT 0", ref=ref).schema)
    except Exception:  # noqa: BLE001 - an unreadable table is reported by the commands that use it
        return None


def _check_schemas(project: Any, layer: Any) -> list[CheckResult]:
    from medallion_cli.quality import load_schema

    out = []
    for gate in layer.quality.gates:
        try:
            load_schema(project, gate.name)
            out.append(CheckResult(layer.name, "quality", True, f"schema {gate.name} ({gate.policy})"))
        except MedallionError as exc:
            out.append(CheckResult(layer.name, "quality", False, exc.message))
    return out


def preflight_targets(project: Any, layers: Any) -> None:
    """Before any layer runs: the key, partition and order columns of every selected layer
    exist in its table, if the table exists (the output itself is checked before writing)."""
    from medallion_cli.errors import ConfigError
    from medallion_cli.project import missing_target_columns, target_columns

    for layer in layers:
        if not target_columns(layer.target):
            continue
        columns = _table_columns(project, layer.target.table)
        problem = None if columns is None else missing_target_columns(layer, columns)
        if problem:
            raise ConfigError(f"{layer.config_path}: {problem} (nor does table {layer.target.table})",
                              hint=f"table columns: {', '.join(columns)}; fix the YAML, or rebuild with --full-refresh")


def missing_inputs(project: Any, layers: Any) -> list[tuple[Any, str, str, str]]:
    """(layer, input, table, uri) for each table input of ``layers`` that no pipeline of the
    project writes and that does not exist either: a typo, or an external table not there."""
    written = {layer.target.table for layer in project.layers}
    out = []
    for layer in layers:
        inputs = [(layer.source.input_name, layer.source.table)] if layer.source.table is not None else []
        inputs += [(snap.name, snap.table) for snap in layer.snapshots]
        for name, table in inputs:
            if table in written:
                continue
            uri = project.table_uri(table)
            if not project.storage.is_table(uri):
                out.append((layer, name, table, uri))
    return out


def describe_missing_input(project: Any, layer: Any, name: str, table: str, uri: str) -> str:
    return (f"{layer.config_path}: input {name!r} of {layer.name} reads table {table!r}, which no pipeline writes "
            f"and which does not exist ({uri})")


def preflight_inputs(project: Any, layers: Any) -> None:
    """Before any table runs: every table input is a project table or an existing Delta table."""
    from medallion_cli.errors import ConfigError

    for layer, name, table, uri in missing_inputs(project, layers):
        raise ConfigError(describe_missing_input(project, layer, name, table, uri),
                          hint=f"name a project table ({', '.join(sorted(l.target.table for l in project.layers))}), "
                               "or create that external table first")


def _table_columns(project: Any, table: str) -> list[str] | None:
    from medallion_cli.delta import TableRef

    ref = TableRef(table, project.table_uri(table), None, project.storage)
    if not ref.store.is_table(ref.uri):
        return None
    return [f.name for f in ref.store.table(ref.uri).schema().fields]
