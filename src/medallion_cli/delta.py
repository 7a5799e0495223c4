"""Inspect and maintain Delta tables: the project's own and any other (by path or URI).

Reads go through deltalake's own query engine (``QueryBuilder``), which handles deletion
vectors, v2 checkpoints and column mapping where the pyarrow reader refuses them. Every
delta-rs error becomes a :class:`MedallionError` with a hint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medallion_cli.errors import MedallionError, UsageError
from medallion_cli.storage import first_line as _first_line
from medallion_cli.timeparse import iso_utc

if TYPE_CHECKING:
    import polars as pl

    from medallion_cli.project import LayerConfig, Project


class TableError(MedallionError):
    """A Delta table that exists but cannot be read as asked (corrupt log, unsupported feature)."""


@dataclass(frozen=True)
class TableRef:
    """A table named on the command line, resolved to a URI (and its layer, if any)."""

    name: str
    uri: str
    layer: LayerConfig | None = None
    storage: Any = None  # storage.Storage

    @property
    def store(self) -> Any:
        from medallion_cli.storage import Storage

        return self.storage or Storage()


def resolve(name: str, project: Project | None, storage: Any = None) -> TableRef:
    """A project table (by table or layer name), else a path or URI of a Delta table."""
    if project is not None:
        for layer in project.layers:
            if name in (layer.name, layer.target.table):
                return TableRef(layer.target.table, project.table_uri(layer.target.table), layer, project.storage)
        for layer, table in _quarantine_tables(project):
            if name == table:  # a plain table: its layer's watermark is not its own
                return TableRef(table, project.table_uri(table), None, project.storage)
        storage = storage or project.storage
    if "://" in name:
        return TableRef(name.rstrip("/"), name, None, storage)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "_delta_log").is_dir():
            raise UsageError(f"{name} is not a Delta table (no _delta_log folder)", hint="point at the table's root folder")
        return TableRef(name.rstrip("/"), str(path.resolve()), None, storage)
    known = ", ".join(layer.target.table for layer in project.layers) if project else ""
    if project is not None:
        known += "".join(f", {table}" for _, table in _quarantine_tables(project)
                         if project.storage.is_table(project.table_uri(table)))
    raise UsageError(
        f"unknown table {name!r}",
        hint=f"project tables: {known}; or pass a path or URI" if known else "pass the path or URI of a Delta table",
    )


def _quarantine_tables(project: Project) -> list[tuple[LayerConfig, str]]:
    """``(layer, <table>__quarantine)`` for every layer (the table exists once rows went there)."""
    from medallion_cli.quality import QUARANTINE_SUFFIX

    return [(layer, layer.target.table + QUARANTINE_SUFFIX) for layer in project.layers]


def open_table(ref: TableRef, *, version: int | None = None, as_of: datetime | None = None) -> Any:
    """Open the table (at a version or time), turning delta-rs errors into clear ones."""
    from deltalake.exceptions import DeltaError, DeltaProtocolError, TableNotFoundError

    from medallion_cli.storage import explain

    try:
        dt = ref.store.table(ref.uri)
    except MedallionError:
        raise
    except TableNotFoundError:
        raise UsageError(f"{ref.name} is not a Delta table (or does not exist yet)", hint="check the name; project tables appear after their first run") from None
    except (DeltaError, DeltaProtocolError, OSError, ValueError) as exc:
        explained = explain(exc, uri=ref.uri, storage=ref.store)
        if explained is not None:
            raise explained from None
        if "not a delta table" in str(exc).lower() or "no files in log segment" in str(exc).lower():
            raise UsageError(f"{ref.name} is not a Delta table (or does not exist yet)", hint="check the name or URI") from None
        raise TableError(f"cannot open {ref.name}: {_first_line(exc)}", hint="the table's _delta_log may be corrupt or use a feature deltalake does not support") from None
    if version is None and as_of is None:
        return dt
    latest = dt.version()
    if version is not None and not 0 <= version <= latest:
        raise UsageError(f"{ref.name} has no version {version}", hint=f"versions go from 0 to {latest}")
    if as_of is not None:
        _check_existed(dt, ref, as_of)
    try:
        dt.load_as_version(version if version is not None else as_of)
    except (DeltaError, DeltaProtocolError, OSError, ValueError) as exc:
        when = f"version {version}" if version is not None else as_of.isoformat()
        raise UsageError(f"cannot load {ref.name} at {when}: {_first_line(exc)}",
                         hint="its log may have been cleaned up; `medallion history` lists the versions that remain") from None
    return dt


def _check_existed(dt: Any, ref: TableRef, as_of: datetime) -> None:
    """deltalake loads version 0 for a time before the table existed: refuse that instead."""
    try:
        oldest = dt.history()[-1]
    except Exception:  # noqa: BLE001 - an unreadable history is reported by load_as_version
        return
    first = _ts(oldest.get("inCommitTimestamp") or oldest.get("timestamp"))
    if first is None or as_of >= first:
        return
    if int(oldest["version"]) == 0:
        raise UsageError(f"{ref.name} did not exist at {iso_utc(as_of)}: it was created at {iso_utc(first)}",
                         hint="pass a time after its creation, or --version N (`medallion history` lists them)")
    raise UsageError(f"{ref.name} has no version as old as {iso_utc(as_of)}: its oldest remaining version, "
                     f"{oldest['version']}, is from {iso_utc(first)}",
                     hint="older commits were cleaned from the log; pass a later time or --version N")


def _ts(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else iso_utc(value)


# -- history --------------------------------------------------------------------------
_METRIC_KEYS = {
    "rows_added": ("num_added_rows", "num_target_rows_inserted", "numOutputRows", "numTargetRowsInserted", "numAddedRows"),
    "rows_updated": ("num_target_rows_updated", "num_updated_rows", "numTargetRowsUpdated", "numUpdatedRows"),
    "rows_deleted": ("num_deleted_rows", "num_target_rows_deleted", "numTargetRowsDeleted", "numDeletedRows"),
    "files_added": ("num_added_files", "num_target_files_added", "numAddedFiles", "numFiles", "numTargetFilesAdded"),
    "files_removed": ("num_removed_files", "num_target_files_removed", "numRemovedFiles", "numTargetFilesRemoved"),
    "duration_ms": ("execution_time_ms", "executionTimeMs"),
}


@dataclass(frozen=True)
class HistoryEntry:
    version: int
    timestamp: datetime | None
    operation: str | None
    rows_added: int | None
    rows_updated: int | None
    rows_deleted: int | None
    files_added: int | None
    files_removed: int | None
    duration_ms: int | None
    engine: str | None
    run_id: str | None
    layer: str | None
    watermark: str | None
    parameters: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["timestamp"] = _iso(self.timestamp)
        return data


def _metric(metrics: dict[str, Any], name: str) -> int | None:
    for key in _METRIC_KEYS[name]:
        if key in metrics and metrics[key] is not None:
            try:
                return int(metrics[key])
            except (TypeError, ValueError):
                return None
    return None


def history(ref: TableRef, *, limit: int | None = None) -> list[HistoryEntry]:
    """Commits newest first, with row and file counts and medallion's run metadata."""
    dt = open_table(ref)
    try:
        entries = dt.history(limit)
    except Exception as exc:  # delta-rs raises several types for unreadable commits
        raise TableError(f"cannot read the history of {ref.name}: {_first_line(exc)}") from None
    out = []
    for e in entries:
        metrics = e.get("operationMetrics") or {}
        params = e.get("operationParameters") or {}
        out.append(
            HistoryEntry(
                version=int(e["version"]),
                timestamp=_ts(e.get("inCommitTimestamp") or e.get("timestamp")),
                operation=e.get("operation"),
                rows_added=_metric(metrics, "rows_added"),
                rows_updated=_metric(metrics, "rows_updated"),
                rows_deleted=_metric(metrics, "rows_deleted"),
                files_added=_metric(metrics, "files_added"),
                files_removed=_metric(metrics, "files_removed"),
                duration_ms=_metric(metrics, "duration_ms"),
                engine=e.get("engineInfo") or e.get("clientVersion"),
                run_id=e.get("medallion.run_id"),
                layer=e.get("medallion.layer"),
                watermark=e.get("medallion.watermark"),
                parameters={k: str(v) for k, v in params.items()},
            )
        )
    return out


# -- tables ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TableInfo:
    layer: str
    table: str
    uri: str
    exists: bool
    version: int | None = None
    rows: int | None = None
    files: int | None = None
    size_bytes: int | None = None
    last_commit: datetime | None = None
    last_run_id: str | None = None
    kind: str = "layer"  # layer | quarantine (rows a quality gate rejected)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_commit"] = _iso(self.last_commit)
        return data


def list_tables(project: Project) -> list[TableInfo]:
    """Every table the project's layers write, with its current state, then the quarantine
    tables that exist."""
    out = []
    for layer in project.layers:
        ref = TableRef(layer.target.table, project.table_uri(layer.target.table), layer, project.storage)
        if not ref.store.is_table(ref.uri):
            out.append(TableInfo(layer.name, ref.name, ref.uri, False))
            continue
        out.append(_table_info(layer.name, ref, "layer"))
    for layer, table in _quarantine_tables(project):
        ref = TableRef(table, project.table_uri(table), None, project.storage)
        if ref.store.is_table(ref.uri):
            out.append(_table_info(layer.name, ref, "quarantine"))
    return out


def _table_info(layer: str, ref: TableRef, kind: str) -> TableInfo:
    import polars as pl

    dt = open_table(ref)
    actions = pl.DataFrame(dt.get_add_actions(flatten=True))
    last = dt.history(1)[0]
    last_run = next((e.get("medallion.run_id") for e in dt.history(20) if e.get("medallion.run_id")), None)
    return TableInfo(
        layer, ref.name, ref.uri, True, dt.version(),
        int(actions["num_records"].sum()) if actions.height else 0, actions.height,
        int(actions["size_bytes"].sum()) if actions.height else 0,
        _ts(last.get("inCommitTimestamp") or last.get("timestamp")), last_run, kind,
    )


# -- describe -------------------------------------------------------------------------
@dataclass(frozen=True)
class TableDescription:
    name: str
    uri: str
    version: int
    table_name: str | None
    description: str | None
    created: datetime | None
    columns: list[dict[str, Any]]
    partition_columns: list[str]
    properties: dict[str, str]
    min_reader_version: int
    min_writer_version: int
    reader_features: list[str]
    writer_features: list[str]
    files: int
    size_bytes: int
    rows_from_stats: int | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created"] = _iso(self.created)
        return data


def describe(ref: TableRef, *, version: int | None = None) -> TableDescription:
    import json

    import polars as pl

    dt = open_table(ref, version=version)
    meta, proto = dt.metadata(), dt.protocol()
    schema = json.loads(dt.schema().to_json())
    columns = [
        {"name": f["name"], "type": _type_name(f["type"]), "nullable": bool(f.get("nullable", True)),
         "metadata": {k: str(v) for k, v in (f.get("metadata") or {}).items()}}
        for f in schema["fields"]
    ]
    try:
        actions = pl.DataFrame(dt.get_add_actions(flatten=True))
    except Exception as exc:  # noqa: BLE001 - delta-rs raises varied errors on odd logs
        raise TableError(f"cannot list the files of {ref.name}: {_first_line(exc)}") from None
    files = actions.height
    size = int(actions["size_bytes"].sum()) if files else 0
    rows = int(actions["num_records"].sum()) if files and "num_records" in actions.columns and actions["num_records"].null_count() < files else None
    return TableDescription(
        name=ref.name, uri=ref.uri, version=dt.version(), table_name=meta.name, description=meta.description,
        created=_ts(meta.created_time), columns=columns, partition_columns=list(meta.partition_columns),
        properties=dict(meta.configuration), min_reader_version=proto.min_reader_version,
        min_writer_version=proto.min_writer_version, reader_features=list(proto.reader_features or []),
        writer_features=list(proto.writer_features or []), files=files, size_bytes=size, rows_from_stats=rows,
    )


def _type_name(t: Any) -> str:
    if isinstance(t, str):
        return t
    kind = t.get("type")
    if kind == "array":
        return f"array<{_type_name(t['elementType'])}>"
    if kind == "map":
        return f"map<{_type_name(t['keyType'])}, {_type_name(t['valueType'])}>"
    if kind == "struct":
        return "struct<" + ", ".join(f"{f['name']}: {_type_name(f['type'])}" for f in t["fields"]) + ">"
    return str(kind)


# -- show -----------------------------------------------------------------------------
def _quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def query(dt: Any, sql: str, *, ref: TableRef) -> pl.DataFrame:
    import polars as pl
    from deltalake import QueryBuilder

    try:
        reader = QueryBuilder().register("t", dt).execute(sql)
        return pl.DataFrame(reader.read_all())
    except Exception as exc:  # DataFusion and object-store errors
        message = _first_line(exc)
        if "not found" in message.lower() and ("object at location" in message.lower() or "fetch metadata" in message.lower()):
            raise TableError(f"{ref.name}: data files are missing ({message})",
                             hint="the files were vacuumed or not copied; time travel to a later version, or restore them") from None
        raise TableError(f"cannot read {ref.name}: {message}", hint="check --where and --columns") from None


def show(
    ref: TableRef,
    *,
    version: int | None = None,
    as_of: datetime | None = None,
    where: str | None = None,
    columns: list[str] | None = None,
    limit: int = 20,
) -> pl.DataFrame:
    """Preview rows (time travel included) through deltalake's query engine."""
    dt = open_table(ref, version=version, as_of=as_of)
    if columns:
        known = [f.name for f in dt.schema().fields]
        missing = [c for c in columns if c not in known]
        if missing:
            raise UsageError(f"{ref.name} has no column {missing[0]!r}", hint=f"columns: {', '.join(known)}")
    select = ", ".join(_quote(c) for c in columns) if columns else "*"
    if where is None:
        return query(dt, f"SELECT {select} FROM t LIMIT {int(limit)}", ref=ref)
    condition = check_where(where, query(dt, "SELECT * FROM t LIMIT 0", ref=ref))
    # On lines of its own and in parentheses: check_where() made sure it cannot leave them.
    sql = f"SELECT {select} FROM t WHERE (\n{condition}\n) LIMIT {int(limit)}"
    try:
        return query(dt, sql, ref=ref)
    except TableError as exc:
        if "data files are missing" in exc.message:
            raise
        raise UsageError(f"--where {where!r}: {exc.message.removeprefix(f'cannot read {ref.name}: ')}",
                         hint="write one condition over the table's columns, e.g. \"region = 'north' AND amount > 10\"") from None


# Outside string literals a condition holds names, numbers, operators and parentheses only:
# no comment, no statement separator, no escape or dollar quoting that could end it early.
_WHERE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ \t\r\n.,:()<>=!+-*/%|'\"")
_WHERE_KEYWORDS = {"select", "from", "union", "intersect", "except", "limit", "offset", "order", "group", "having",
                   "with", "join", "window", "values", "insert", "update", "delete", "drop", "create", "copy"}


def check_where(where: str, empty: pl.DataFrame) -> str:
    """``--where``: exactly one boolean expression over the columns of ``empty``, or a UsageError.

    It is spliced into the query as ``WHERE (<condition>)``, so it is checked lexically
    (nothing that could close the parentheses, start a comment or a new clause) and parsed
    by polars' SQL parser, which must see a single expression over known columns whose
    type is boolean.
    """
    import re

    import polars as pl

    hint = "write one condition over the table's columns, e.g. \"region = 'north' AND amount > 10\""

    def refuse(why: str) -> UsageError:
        return UsageError(f"--where {where!r}: {why}", hint=hint)

    if not where.strip():
        raise refuse("is empty")
    if "\\" in where:  # engines disagree on backslash escapes in strings: where a string ends
        raise refuse("backslashes are not allowed")
    outside: list[str] = []  # the text outside quotes, for the keyword check
    depth, i, n = 0, 0, len(where)
    while i < n:
        ch = where[i]
        if ch in "'\"":
            end = i + 1
            while True:  # '' and "" escape the quote; nothing else does
                end = where.find(ch, end)
                if end < 0:
                    raise refuse("has an unclosed quote")
                if end + 1 < n and where[end + 1] == ch:
                    end += 2
                    continue
                break
            outside.append(" ")
            i = end + 1
            continue
        if ch not in _WHERE_CHARS:
            raise refuse(f"character {ch!r} is not allowed outside quotes")
        if where.startswith(("--", "/*", "*/"), i):
            raise refuse("comments are not allowed")
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise refuse("has a ')' without its '('")
        outside.append(ch)
        i += 1
    if depth:
        raise refuse("has a '(' without its ')'")
    words = {w.lower() for w in re.findall(r"[A-Za-z_]+", "".join(outside))}
    clause = sorted(words & _WHERE_KEYWORDS)
    if clause:
        raise refuse(f"{clause[0].upper()} is not allowed: only one condition, no query or clause")
    try:
        expr = pl.sql_expr(where)
    except Exception as exc:  # polars' SQL parser: not one expression
        raise refuse(f"is not one SQL condition ({_first_line(exc)})") from None
    unknown = [c for c in expr.meta.root_names() if c not in empty.columns]
    if unknown:
        raise refuse(f"no column {unknown[0]!r}") from None
    try:
        dtype = empty.select(expr.alias("condition")).schema["condition"]
    except Exception:  # noqa: BLE001 - polars types stricter (date >= '2024-01-03'): DataFusion judges
        dtype = pl.Boolean
    if dtype not in (pl.Boolean, pl.Null):
        raise refuse(f"is a {dtype} value, not a condition (true or false)")
    return where


# -- diff -----------------------------------------------------------------------------
@dataclass(frozen=True)
class TableDiff:
    name: str
    from_version: int
    to_version: int
    added_columns: list[str]
    dropped_columns: list[str]
    retyped_columns: list[dict[str, str]]
    rows_from: int
    rows_to: int
    rows_added: Any = None  # pl.DataFrame with --rows
    rows_removed: Any = None
    key: list[str] | None = None  # with --key: rows whose key is in both versions are changes
    rows_changed: list[dict[str, Any]] | None = None  # {"key": {...}, "changes": {col: {"from", "to"}}}

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in ("name", "from_version", "to_version", "added_columns", "dropped_columns",
                                               "retyped_columns", "rows_from", "rows_to")}
        data["row_count_change"] = self.rows_to - self.rows_from
        for key in ("rows_added", "rows_removed"):
            frame = getattr(self, key)
            data[key] = None if frame is None else frame.to_dicts()
        if self.key is not None:
            data["key"] = self.key
            data["rows_changed"] = self.rows_changed
        return data


def diff(ref: TableRef, from_version: int, to_version: int | None = None, *, rows: bool = False, limit: int = 20,
         key: list[str] | None = None) -> TableDiff:
    """Schema and row-count changes between two versions; with ``rows``, the rows themselves;
    with ``key``, a row whose key is in both versions is one change (with the columns that
    changed) instead of a removal and an addition."""
    from deltalake import QueryBuilder

    latest = open_table(ref).version()
    to_version = latest if to_version is None else to_version
    old, new = open_table(ref, version=from_version), open_table(ref, version=to_version)
    old_cols = {f.name: str(f.type) for f in old.schema().fields}
    new_cols = {f.name: str(f.type) for f in new.schema().fields}
    count = "SELECT count(*) AS n FROM t"
    result = TableDiff(
        name=ref.name, from_version=from_version, to_version=to_version,
        added_columns=[c for c in new_cols if c not in old_cols],
        dropped_columns=[c for c in old_cols if c not in new_cols],
        retyped_columns=[{"column": c, "from": old_cols[c], "to": new_cols[c]} for c in new_cols
                         if c in old_cols and old_cols[c] != new_cols[c]],
        rows_from=int(query(old, count, ref=ref)["n"][0]), rows_to=int(query(new, count, ref=ref)["n"][0]),
    )
    if not rows and not key:
        return result
    shared = [c for c in new_cols if c in old_cols and old_cols[c] == new_cols[c]]
    common = ", ".join(_quote(c) for c in shared)
    if not common:
        raise UsageError("the two versions share no column of the same type: rows cannot be compared")
    import polars as pl

    def run(sql: str) -> pl.DataFrame:
        try:
            reader = QueryBuilder().register("a", old).register("b", new).execute(sql)
            return pl.DataFrame(reader.read_all())
        except Exception as exc:
            raise TableError(f"cannot compare rows of {ref.name}: {_first_line(exc)}") from None

    fields = {k: getattr(result, k) for k in result.__dataclass_fields__}
    if not key:
        return TableDiff(**{**fields,
                            "rows_added": run(f"SELECT {common} FROM b EXCEPT ALL SELECT {common} FROM a LIMIT {int(limit)}"),
                            "rows_removed": run(f"SELECT {common} FROM a EXCEPT ALL SELECT {common} FROM b LIMIT {int(limit)}")})
    missing = [k for k in key if k not in shared]
    if missing:
        raise UsageError(f"--key {missing[0]!r} is not a column of both versions (with the same type)",
                         hint=f"columns: {', '.join(shared)}")
    cte = (f"WITH added AS (SELECT {common} FROM b EXCEPT ALL SELECT {common} FROM a), "
           f"removed AS (SELECT {common} FROM a EXCEPT ALL SELECT {common} FROM b) ")
    on = " AND ".join(f"r.{_quote(k)} = d.{_quote(k)}" for k in key)
    only = ("SELECT {cols} FROM {x} WHERE NOT EXISTS (SELECT 1 FROM {y} WHERE {on}) LIMIT {n}")
    added = run(cte + only.format(cols=", ".join(f"d.{_quote(c)}" for c in shared), x="added d", y="removed r", on=on, n=int(limit)))
    removed = run(cte + only.format(cols=", ".join(f"r.{_quote(c)}" for c in shared), x="removed r", y="added d", on=on, n=int(limit)))
    pairs = run(cte + "SELECT " + ", ".join([*(f"r.{_quote(c)} AS {_quote('from:' + c)}" for c in shared),
                                               *(f"d.{_quote(c)} AS {_quote('to:' + c)}" for c in shared)])
                + f" FROM removed r JOIN added d ON {on} LIMIT {int(limit)}")
    changed = []
    for row in pairs.iter_rows(named=True):
        changes = {c: {"from": row[f"from:{c}"], "to": row[f"to:{c}"]} for c in shared
                   if row[f"from:{c}"] != row[f"to:{c}"] and c not in key}
        changed.append({"key": {k: row[f"from:{k}"] for k in key}, "changes": changes})
    return TableDiff(**{**fields, "rows_added": added, "rows_removed": removed, "key": list(key), "rows_changed": changed})
