"""``medallion verify``: rebuild tables from scratch and compare them with the live ones.

The selected tables (and every layer upstream of them) are rebuilt by a real full refresh
(:func:`runner.run_project`) on a scratch copy of the project whose lake, state file and
lock folder live in a temporary directory. The live lake and state file are only read.

Comparison rules, per table:

* rows are matched on the target's merge ``keys``; a table without keys (append, overwrite,
  aggregates such as gold) is compared as a multiset: the key is every non-float column and
  the n-th row of a key is matched with the n-th (ordered by the float columns); a
  ``<table>__quarantine`` table is matched on ``_row_key`` when it has one, else like a
  table without keys;
* float columns are equal when both are null, both NaN, or
  ``|live - recomputed| <= tolerance * max(|live|, |recomputed|)`` (relative: 0 only equals
  0); every other column must be identical (nested columns are compared as JSON);
* :data:`IGNORED_COLUMNS` differ between runs by design and are not compared.

A row of the recompute that the live table lacks is *missing*, a live row the recompute
lacks is *extra*, a key present in both with different values is *changed*.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medallion_cli.errors import MedallionError, UsageError
from medallion_cli.project import LayerConfig, Project, join_uri

if TYPE_CHECKING:
    import polars as pl

# Columns whose values differ between two runs over the same data by design.
IGNORED_COLUMNS = ("_run_id", "_quarantined_at")
DEFAULT_TOLERANCE = 1e-9
EXAMPLES = 5  # examples per kind (missing, extra, changed) and table
ROW_KEY = "_row_key"  # the unique key of a quarantine row


@dataclass(frozen=True)
class TableComparison:
    """One live table against its recompute."""

    table: str
    layer: str
    key: tuple[str, ...]
    key_rule: str  # keys | row_key | multiset
    rows_live: int
    rows_recomputed: int
    missing: int = 0
    extra: int = 0
    changed: int = 0
    examples: tuple[dict[str, Any], ...] = ()
    columns_only_live: tuple[str, ...] = ()
    columns_only_recomputed: tuple[str, ...] = ()
    columns_retyped: tuple[str, ...] = ()
    live_exists: bool = True

    @property
    def equal(self) -> bool:
        return not (self.missing or self.extra or self.changed or self.columns_only_live
                    or self.columns_only_recomputed or self.columns_retyped)

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "layer": self.layer,
            "equal": self.equal,
            "rows_live": self.rows_live,
            "rows_recomputed": self.rows_recomputed,
            "missing": self.missing,
            "extra": self.extra,
            "changed": self.changed,
            "key": list(self.key),
            "key_rule": self.key_rule,
            "live_exists": self.live_exists,
            "columns_only_live": list(self.columns_only_live),
            "columns_only_recomputed": list(self.columns_only_recomputed),
            "columns_retyped": list(self.columns_retyped),
            "examples": list(self.examples),
        }


@dataclass(frozen=True)
class VerifyResult:
    """What ``medallion verify`` found: one comparison per table, and what it rebuilt."""

    project: str
    tables: tuple[TableComparison, ...]
    rebuilt: tuple[str, ...]  # layers rebuilt in the scratch lake (upstream ones included)
    tolerance: float
    duration_s: float
    scratch: str | None = None  # the scratch directory, if it was kept

    @property
    def equal(self) -> bool:
        return all(t.equal for t in self.tables)

    @property
    def differing(self) -> list[TableComparison]:
        return [t for t in self.tables if not t.equal]

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "equal": self.equal,
            "tolerance": self.tolerance,
            "ignored_columns": list(IGNORED_COLUMNS),
            "rebuilt": list(self.rebuilt),
            "scratch": self.scratch,
            "duration_s": round(self.duration_s, 3),
            "tables": [t.to_dict() for t in self.tables],
        }


# -- selection ------------------------------------------------------------------------
def select(project: Project, names: Sequence[str], exclude: Sequence[str] = ()) -> list[LayerConfig]:
    """Pipelines whose tables to compare, in run order: selectors as for ``medallion run``
    (nothing means ``all``); ``<table>__quarantine`` names its table."""
    from medallion_cli.graph import project_graph
    from medallion_cli.selection import SelectionSpec, parse_selection, select_tables

    graph = project_graph(project)
    spec = parse_selection(names or ["all"], exclude)
    spec = SelectionSpec(tuple(_unquarantined(graph, s) for s in spec.include),
                         tuple(_unquarantined(graph, s) for s in spec.exclude))
    by_table = {l.target.table: l for l in project.layers}
    return [by_table[t] for t in select_tables(graph, spec)]


def _unquarantined(graph: Any, selector: Any) -> Any:
    """``silver_events__quarantine`` (or ``silver__quarantine``) selects what its base names."""
    from dataclasses import replace

    from medallion_cli.quality import QUARANTINE_SUFFIX
    from medallion_cli.selection import known_names

    base = selector.value.removesuffix(QUARANTINE_SUFFIX)
    names, pipelines = known_names(graph)
    if base != selector.value and base in names + pipelines:
        return replace(selector, value=base)
    return selector


def upstream(project: Project, layers: Sequence[LayerConfig]) -> list[LayerConfig]:
    """The layers plus every layer whose table they read, transitively, in run order."""
    from medallion_cli.graph import project_graph

    graph = project_graph(project)
    needed = {l.target.table for l in layers}
    for layer in layers:
        needed |= graph.upstream(layer.target.table)
    return [l for l in project.layers if l.target.table in needed]


# -- the scratch project --------------------------------------------------------------
@dataclass(frozen=True)
class ScratchProject(Project):
    """The project with every table, the state file and the locks under ``scratch``.

    Tables named by an absolute path or URI are mapped into the scratch lake too, so a
    rebuild can never write where the live project keeps its tables.
    """

    scratch: Path = Path()

    @property
    def lock_dir(self) -> Path:
        return self.scratch / "locks"

    def table_uri(self, table: str) -> str:
        return join_uri(str(self.scratch / "lake"), scratch_name(table))


def scratch_name(table: str) -> str:
    if "://" in table or table.startswith("/"):
        tail = table.rstrip("/").rsplit("/", 1)[-1]
        return f"{tail}-{hashlib.sha1(table.encode()).hexdigest()[:8]}"
    return table


def scratch_project(project: Project, scratch: Path) -> ScratchProject:
    values = {f.name: getattr(project, f.name) for f in fields(project)}
    values.update(lake_root=str(scratch / "lake"), state_path=scratch / "state.duckdb", scratch=scratch)
    return ScratchProject(**values)


# -- verify ---------------------------------------------------------------------------
def verify_project(
    project: Project,
    names: Sequence[str],
    *,
    exclude: Sequence[str] = (),
    tolerance: float = DEFAULT_TOLERANCE,
    scratch_parent: Path | None = None,
    keep_scratch: bool = False,
    examples: int = EXAMPLES,
    on_layer_start: Callable[[LayerConfig], None] | None = None,
    on_layer_done: Callable[[Any], None] | None = None,
) -> VerifyResult:
    """Rebuild the selected tables (and their upstream layers) in a scratch lake and compare.

    ``names`` and ``exclude`` are selectors, as for ``medallion run`` (nothing means all).

    Reads the live tables; writes only under the scratch directory, which is removed
    afterwards unless ``keep_scratch``.
    """
    from medallion_cli.runner import RunFailedError, RunOptions, run_project
    from medallion_cli.selection import SelectionSpec, Selector

    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise UsageError(f"--tolerance must be a finite number >= 0, got {tolerance}", hint="e.g. --tolerance 1e-9")
    layers = select(project, names, exclude)
    rebuild = upstream(project, layers)
    if scratch_parent is not None:
        scratch_parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="medallion-verify-", dir=scratch_parent)).resolve()
    t0 = time.perf_counter()
    try:
        twin = scratch_project(project, scratch)
        options = RunOptions(full_refresh=True, reference=project)
        try:
            rebuilt = SelectionSpec(tuple(Selector(l.target.table, "table") for l in rebuild))
            run_project(twin, rebuilt, options=options, on_layer_start=on_layer_start,
                        on_layer_done=on_layer_done)
        except RunFailedError as exc:
            err = MedallionError(f"the recompute failed, nothing was compared: {exc.message}", exc.hint)
            err.exit_code = exc.exit_code
            raise err from exc
        compared = []
        for layer in layers:
            compared.extend(compare_layer(project, twin, layer, tolerance=tolerance, examples=examples))
    finally:
        if not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return VerifyResult(project.name, tuple(compared), tuple(l.name for l in rebuild), tolerance,
                        time.perf_counter() - t0, str(scratch) if keep_scratch else None)


def compare_layer(live: Project, twin: Project, layer: LayerConfig, *, tolerance: float,
                  examples: int = EXAMPLES) -> list[TableComparison]:
    """The layer's table and, when either side has one, its quarantine table."""
    from medallion_cli.quality import quarantine_table

    out = []
    table = layer.target.table
    for name, keys, quarantine in ((table, layer.target.keys, False), (quarantine_table(layer), (), True)):
        old = read_table(live, name)
        new = read_table(twin, name)
        if quarantine and old is None and new is None:
            continue
        if quarantine:
            present = (new if new is not None else old).columns
            keys = (ROW_KEY,) if ROW_KEY in present else ()
        rule = ("row_key" if quarantine else "keys") if keys else "multiset"
        out.append(compare_frames(old, new, table=name, layer=layer.name, keys=keys, rule=rule,
                                  tolerance=tolerance, examples=examples))
    return out


def read_table(project: Project, table: str) -> pl.DataFrame | None:
    """The table's current rows, or None if it does not exist."""
    from medallion_cli.delta import TableRef, open_table, query

    uri = project.table_uri(table)
    if not project.storage.is_table(uri):
        return None
    ref = TableRef(table, uri, None, project.storage)
    return query(open_table(ref), "SELECT * FROM t", ref=ref)


# -- comparison -----------------------------------------------------------------------
_N, _LIVE, _NEW, _SUFFIX = "__verify_n", "__verify_live", "__verify_new", "__verify_recomputed"


def compare_frames(
    live: pl.DataFrame | None,
    recomputed: pl.DataFrame | None,
    *,
    table: str,
    layer: str = "",
    keys: Sequence[str] = (),
    rule: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    examples: int = EXAMPLES,
) -> TableComparison:
    """Rows missing from, extra in and changed in ``live`` compared with ``recomputed``."""
    import polars as pl

    live_exists = live is not None
    if live is None and recomputed is None:
        return TableComparison(table, layer, tuple(keys), rule or ("keys" if keys else "multiset"), 0, 0, live_exists=False)
    if live is None:
        live = pl.DataFrame(schema=recomputed.schema)
    if recomputed is None:
        recomputed = pl.DataFrame(schema=live.schema)
    live = live.drop([c for c in IGNORED_COLUMNS if c in live.columns])
    recomputed = recomputed.drop([c for c in IGNORED_COLUMNS if c in recomputed.columns])
    common = [c for c in recomputed.columns if c in live.columns]
    only_live = tuple(c for c in live.columns if c not in common) if live_exists else ()
    only_new = tuple(c for c in recomputed.columns if c not in common) if live_exists else ()
    retyped = [c for c in common if live.schema[c] != recomputed.schema[c]]
    live, recomputed = _comparable(live.select(common), retyped), _comparable(recomputed.select(common), retyped)
    floats = [c for c in common if live.schema[c].is_float()]
    keys = tuple(keys) if keys and all(k in common for k in keys) else ()
    rule = (rule or "keys") if keys else "multiset"
    key = list(keys) or [c for c in common if c not in floats]
    values = [c for c in common if c not in key]
    base = TableComparison(table, layer, tuple(key), rule, live.height, recomputed.height, columns_only_live=only_live,
                           columns_only_recomputed=only_new, columns_retyped=tuple(retyped), live_exists=live_exists)
    return _diff(base, live, recomputed, key, values, floats, tolerance, examples)


def _comparable(frame: pl.DataFrame, retyped: Sequence[str]) -> pl.DataFrame:
    """Nested columns as JSON text and retyped columns as text, so both sides join and sort."""
    import polars as pl

    exprs = []
    for name, dtype in frame.schema.items():
        if dtype.is_nested():  # {"name":value} -> value
            encoded = pl.struct(name).struct.json_encode().str.strip_prefix("{" + json.dumps(name) + ":")
            exprs.append(encoded.str.strip_suffix("}").alias(name))
        elif name in retyped:
            exprs.append(pl.col(name).cast(pl.String).alias(name))
    return frame.with_columns(exprs) if exprs else frame


def _numbered(frame: pl.DataFrame, key: list[str], columns: list[str]) -> pl.DataFrame:
    """The n-th row of each key (ordered by all columns), so duplicates pair up one to one."""
    import polars as pl

    ordered = frame.sort(columns, nulls_last=True) if columns else frame
    n = pl.int_range(pl.len()).over(key) if key else pl.int_range(pl.len())
    return ordered.with_columns(n.alias(_N))


def _differs(column: str, dtype: Any, tolerance: float) -> pl.Expr:
    import polars as pl

    a, b = pl.col(column), pl.col(column + _SUFFIX)
    if not dtype.is_float():
        return a.ne_missing(b)
    same = (a.is_null() & b.is_null()) | (a == b).fill_null(False) | (a.is_nan() & b.is_nan()).fill_null(False)
    close = ((a - b).abs() <= pl.max_horizontal(a.abs(), b.abs()) * tolerance).fill_null(False)
    return ~(same | close)


def _diff(base: TableComparison, live: pl.DataFrame, new: pl.DataFrame, key: list[str], values: list[str],
          floats: list[str], tolerance: float, examples: int) -> TableComparison:
    from dataclasses import replace

    import polars as pl

    columns = [*key, *values]
    joined = _numbered(live, key, columns).with_columns(pl.lit(True).alias(_LIVE)).join(
        _numbered(new, key, columns).with_columns(pl.lit(True).alias(_NEW)),
        on=[*key, _N], how="full", coalesce=True, nulls_equal=True, suffix=_SUFFIX,
    )
    missing = joined.filter(pl.col(_LIVE).is_null())
    extra = joined.filter(pl.col(_NEW).is_null())
    both = joined.filter(pl.col(_LIVE).is_not_null() & pl.col(_NEW).is_not_null())
    flags = [f"{c}__differs" for c in values]
    if values:
        both = both.with_columns([_differs(c, live.schema[c], tolerance).alias(f) for c, f in zip(values, flags)])
        changed = both.filter(pl.any_horizontal(flags))
    else:  # every column is part of the key: a difference is a missing plus an extra row
        changed = both.clear()
    found = []
    first = (lambda frame: frame.sort(key, nulls_last=True).head(examples)) if key else (lambda frame: frame.head(examples))
    for kind, frame in (("missing", missing), ("extra", extra)):
        for row in first(frame).iter_rows(named=True):
            found.append({"kind": kind, "key": {k: _plain(row[k]) for k in key}})
    for row in first(changed).iter_rows(named=True):
        diffs = {c: {"live": _plain(row[c]), "recomputed": _plain(row[c + _SUFFIX])} for c in values if row[f"{c}__differs"]}
        found.append({"kind": "changed", "key": {k: _plain(row[k]) for k in key}, "columns": diffs})
    return replace(base, missing=missing.height, extra=extra.height, changed=changed.height, examples=tuple(found))


def _plain(value: Any) -> Any:
    """A JSON-ready value (dates and datetimes are left to the renderer)."""
    if value is None or isinstance(value, (bool, int, str, datetime, date)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)
