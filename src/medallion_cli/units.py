"""Work units: run one table's batch in pieces that fit a memory budget, commit them once.

A bronze table that declares ``medallion.partition: {by: files, max_files: N}`` splits its
batch of landing files into units. Each unit runs the pipeline's DAG on its own files,
collects only its own output, and writes it as a Parquet data file under the table root
(``part-<run_id>-<unit>-<uuid>.parquet``), returning an ``AddAction`` whose Delta stats
(numRecords, minValues, maxValues, nullCount) are computed here. Nothing is visible until
the driver commits every unit's files in **one** Delta transaction carrying the watermark
(app transaction) and the run's metadata, exactly as the one-unit write does. A run killed
between the unit writes and the commit leaves files no version references: readers never
see them, the re-run writes its own, and ``medallion vacuum TABLE --full`` removes them.

The unit boundary is the one a distributed engine would use: the driver plans units and
commits; a worker needs only a unit's file list and returns its ``AddAction`` list.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from medallion_cli.materialize import WriteOutcome, prepare_frame, reconcile_schema
from medallion_cli.project import TargetConfig
from medallion_cli.storage import Storage, is_remote

if TYPE_CHECKING:
    import polars as pl

    from medallion_cli.sources import LandingFile

MB = 1024 * 1024

# In-memory size of a landing file's rows per byte on disk, by format (measured on the
# generated events: Parquet ~4.5x, CSV ~1.2x, JSON lines ~0.8x; gzip adds ~5x).
EXPANSION = {"parquet": 5.0, "csv": 1.5, "ndjson": 1.0}
GZIP_EXPANSION = 5.0
# A unit holds its source rows, the DAG's output and the Parquet being encoded at once.
WORKING_SET = 3.0
# Delta stats: longer strings get a truncated min and no max (a truncated max is no bound).
STATS_STRING_PREFIX = 32


class UnitsNotApplicable(Exception):
    """The batch cannot be committed as units (the table's schema would change): run it as one."""


def estimated_bytes(file: LandingFile) -> int:
    """Memory a landing file's rows take once read (an estimate from its size and format)."""
    factor = EXPANSION.get(file.format, 1.5) * (GZIP_EXPANSION if file.compression else 1.0)
    return int(file.size * factor)


@dataclass(frozen=True)
class FilePart:
    """Consecutive row groups ``[first, stop)`` of one Parquet landing file: its rows
    ``[offset, offset + rows)``. A unit of its own; it has its file's ``name`` (so its
    ``_source_file`` and ``_ingested_at`` are the whole file's)."""

    file: LandingFile
    first: int
    stop: int
    offset: int
    rows: int

    @property
    def name(self) -> str:
        return self.file.name


def parquet_row_groups(file: LandingFile, storage: Storage | None = None) -> list[tuple[int, int]] | None:
    """``(rows, compressed bytes)`` of each row group of a Parquet landing file, from its
    footer (an ``s3://`` file through the project's storage), or None when it cannot be
    read (the file is then read whole, and its read says what is wrong)."""
    import pyarrow.parquet as pq

    def read() -> Any:
        if is_remote(file.path):
            with (storage or Storage()).fs(file.path).open(file.path, "rb") as handle:
                return pq.ParquetFile(handle).metadata
        return pq.ParquetFile(file.path).metadata

    try:
        meta = (storage or Storage()).call(read, what=f"reading the footer of {file.name}", uri=file.path) \
            if is_remote(file.path) else read()
    except Exception:  # noqa: BLE001 - an unreadable file is reported by its read, as without units
        return None
    if meta is None:
        return None
    groups = []
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        groups.append((group.num_rows, sum(group.column(j).total_compressed_size for j in range(group.num_columns))))
    return groups


def split_row_groups(file: LandingFile, groups: Sequence[tuple[int, int]], budget: float) -> list[FilePart]:
    """Consecutive row-group ranges of ``file`` whose working set fits ``budget`` bytes (each
    row group costs the file's estimate in proportion to its compressed size; one row
    group over the budget is a part of its own)."""
    total = sum(size for _rows, size in groups) or 1
    cost_per_byte = estimated_bytes(file) * WORKING_SET / total
    parts: list[FilePart] = []
    first = offset = rows = 0
    used = 0.0
    for i, (n, size) in enumerate(groups):
        cost = size * cost_per_byte
        if i > first and used + cost > budget:
            parts.append(FilePart(file, first, i, offset, rows))
            first, offset, rows, used = i, offset + rows, 0, 0.0
        rows += n
        used += cost
    parts.append(FilePart(file, first, len(groups), offset, rows))
    return parts


def plan_units(files: Sequence[LandingFile], *, budget_mb: int, max_files: int | None = None,
               row_groups: Callable[[LandingFile], Sequence[tuple[int, int]] | None] | None = None,
               ) -> list[list[LandingFile | FilePart]]:
    """Split ``files`` into consecutive units of at most ``max_files`` files whose working
    set (:func:`estimated_bytes` times :data:`WORKING_SET`) fits ``budget_mb``.

    Every file is in exactly one unit and the order is kept: given in the order the
    one-unit scan reads them (``LayerPlan.file_order``), the units' rows, concatenated,
    are in the one-unit order, so that whatever downstream breaks ties by row order does
    the same. A file too big for the budget alone is a unit of its own, or, for a Parquet
    file with several row groups (``row_groups(file)``: rows and compressed bytes of each,
    :func:`parquet_row_groups`), several units of one :class:`FilePart` each, in row order.
    CSV and JSON lines files are never split.
    """
    budget = budget_mb * MB
    units: list[list[LandingFile | FilePart]] = []
    current: list[LandingFile | FilePart] = []
    used = 0.0
    for file in files:
        cost = estimated_bytes(file) * WORKING_SET
        if cost > budget and file.format == "parquet" and row_groups is not None:
            groups = row_groups(file)
            if groups is not None and len(groups) > 1:
                if current:
                    units.append(current)
                    current, used = [], 0.0
                units.extend([part] for part in split_row_groups(file, groups, budget))
                continue
        full = max_files is not None and len(current) >= max_files
        if current and (full or used + cost > budget):
            units.append(current)
            current, used = [], 0.0
        current.append(file)
        used += cost
    if current:
        units.append(current)
    return units


def why_one_unit(layer: Any, plan: Any, uri: str) -> str | None:
    """Why this run of ``layer`` cannot split (None: it can). Only declared, plain appends
    of landing files split; everything else runs as one unit, exactly as without units."""
    if layer.partition is None:
        return "no medallion.partition"
    if layer.incremental is None or layer.incremental.strategy != "files":
        return "not an incremental (files) table"
    if plan.write_mode != "append" and not (plan.write_mode == "overwrite" and plan.kind == "full_refresh"):
        return f"write mode {plan.write_mode} (changed files are replaced in one write)"
    if layer.quality is not None:
        return "a quality gate checks the whole batch"
    if layer.target.partition_by:
        return "partitioned target"
    if plan.output_filter is not None:
        return "an output filter"
    return None


# -- one unit: its output frame to a Parquet file and an AddAction ---------------------------
def _iso_ms(value: datetime, *, up: bool) -> str:
    """A UTC timestamp at millisecond precision (Delta stats), rounded down or up so the
    value stays a bound of the column."""
    value = value.astimezone(timezone.utc)
    floor = value.replace(microsecond=value.microsecond // 1000 * 1000)
    if up and floor != value:
        floor += timedelta(milliseconds=1)
    return floor.strftime("%Y-%m-%dT%H:%M:%S.") + f"{floor.microsecond // 1000:03d}Z"


def file_stats(df: pl.DataFrame) -> str:
    """Delta statistics of ``df`` as the ``stats`` JSON string of an ``AddAction``.

    Integers, floats (NaN ignored), booleans, dates, UTC timestamps (min rounded down, max
    up to the millisecond) and strings get minValues/maxValues and nullCount; other types
    (lists, structs, decimals, binary) get none, which only costs data skipping.
    """
    import polars as pl

    stats: dict[str, Any] = {"numRecords": df.height, "minValues": {}, "maxValues": {}, "nullCount": {}}
    wanted = []
    for name, dtype in df.schema.items():
        if dtype.is_integer() or dtype.is_float() or dtype in (pl.Boolean, pl.Date, pl.String) or (
                isinstance(dtype, pl.Datetime) and dtype.time_zone is not None):
            wanted.append(name)
    if not wanted or df.height == 0:
        stats["nullCount"] = {name: 0 for name in wanted}
        return json.dumps(stats, separators=(",", ":"))
    exprs = []
    for i, name in enumerate(wanted):
        col = pl.col(name).fill_nan(None) if df.schema[name].is_float() else pl.col(name)
        exprs += [col.min().alias(f"min{i}"), col.max().alias(f"max{i}"), pl.col(name).null_count().alias(f"nulls{i}")]
    row = df.select(exprs).row(0)
    for i, name in enumerate(wanted):
        low, high, nulls = row[3 * i], row[3 * i + 1], row[3 * i + 2]
        stats["nullCount"][name] = int(nulls)
        if low is None or high is None:
            continue
        if isinstance(low, float) and not (math.isfinite(low) and math.isfinite(high)):
            continue
        if isinstance(low, datetime):
            low, high = _iso_ms(low, up=False), _iso_ms(high, up=True)
        elif isinstance(low, date):
            low, high = low.isoformat(), high.isoformat()
        elif isinstance(low, str):
            low = low[:STATS_STRING_PREFIX]
            if len(high) > STATS_STRING_PREFIX:
                stats["minValues"][name] = low
                continue
        stats["minValues"][name] = low
        stats["maxValues"][name] = high
    return json.dumps(stats, separators=(",", ":"))


def write_unit_file(df: pl.DataFrame, uri: str, *, run_id: str, unit: int, storage: Storage | None = None,
                    fs: Any = None) -> Any:
    """Write ``df`` as one Parquet file under the table root; its ``AddAction`` (uncommitted).

    An object-store table (``s3://...``) gets the file through ``fs`` (the project's fsspec
    filesystem, :meth:`Storage.fs`) in one PUT, retried as every other storage call; the
    commit then references it exactly as a local file.
    """
    from deltalake.transaction import AddAction

    name = f"part-{run_id}-{unit:05d}-{uuid.uuid4().hex}.parquet"
    buffer = io.BytesIO()
    df.write_parquet(buffer, compression="snappy", statistics=True)
    data = buffer.getvalue()
    if is_remote(uri):
        if storage is None or fs is None:
            raise ValueError("an object-store table needs storage and fs")
        target = f"{uri.rstrip('/')}/{name}"
        storage.call(lambda: fs.pipe_file(target, data), what=f"writing unit file {name}", uri=uri)
    else:
        os.makedirs(uri, exist_ok=True)
        path = os.path.join(uri, name)
        with open(path, "wb") as out:
            out.write(data)
    return AddAction(path=name, size=len(data), partition_values={}, modification_time=int(time.time() * 1000),
                     data_change=True, stats=file_stats(df))


def remove_unit_files(uri: str, actions: Sequence[Any], fs: Any = None) -> None:
    """Delete files written for a batch that will not be committed (best effort: what
    stays is an orphan no version references, removed by ``vacuum --full``)."""
    for action in actions:
        try:
            if is_remote(uri):
                fs.rm_file(f"{uri.rstrip('/')}/{action.path}")
            else:
                os.remove(os.path.join(uri, action.path))
        except Exception:  # noqa: BLE001 - cleanup must not hide the original failure
            pass


# -- the batch: every unit, then one commit ---------------------------------------------------
@dataclass(frozen=True)
class UnitOutput:
    """What one unit gives the driver: its uncommitted file (None if it wrote no rows), the
    polars schema of its output, rows read and written, and columns its output would add to
    the table (then nothing was written). Small and picklable: a Ray task returns it."""

    index: int
    action: Any
    schema: Any
    rows_in: int
    rows_out: int
    added: tuple[str, ...] = ()


def unit_output(df: pl.DataFrame, rows_in: int, uri: str, target: TargetConfig, *, index: int, run_id: str,
                exists: bool, storage: Storage) -> UnitOutput:
    """Check one unit's output frame against the table (``prepare_frame``,
    ``reconcile_schema``) and write its Parquet file; where the unit runs (driver or worker)."""
    df = prepare_frame(df, table=target.table)
    if exists:
        df, added, _missing = reconcile_schema(df, uri, table=target.table, evolution=target.schema_evolution,
                                               storage=storage)
        if added:
            return UnitOutput(index, None, df.schema, rows_in, df.height, tuple(added))
    fs = storage.fs(uri) if is_remote(uri) else None
    action = write_unit_file(df, uri, run_id=run_id, unit=index, storage=storage, fs=fs) if df.height else None
    return UnitOutput(index, action, df.schema, rows_in, df.height)


def run_units(
    units: Sequence[Sequence[LandingFile]],
    compute: Callable[[Sequence[LandingFile]], tuple[pl.DataFrame, int]],
    uri: str,
    target: TargetConfig,
    *,
    run_id: str,
    storage: Storage,
    before_commit: Callable[[], None] = lambda: None,
    on_unit: Callable[[int], None] = lambda unit: None,
    overwrite: bool = False,
    execute: Callable[[Sequence[Sequence[LandingFile]], bool], Iterator[UnitOutput]] | None = None,
) -> tuple[list[Any], Any, int, int]:
    """Run every unit (``compute`` gives a unit's output frame and its source row count),
    check its schema against the table's (``prepare_frame``, ``reconcile_schema``) and write
    its Parquet file. Returns the ``AddAction``s, the Delta schema to commit with, and the
    rows read and written. Nothing is committed; on any failure the files this run wrote
    are removed. Raises :class:`UnitsNotApplicable` when a unit would change the table's
    schema (new columns, or units that disagree), so that the batch runs as one unit.
    With ``overwrite`` (a full refresh) the units' schema replaces the table's, as the
    one-unit overwrite does: the existing schema is not consulted.

    ``execute(units, exists)``, when given, runs the units elsewhere (a distributed engine)
    and yields their :class:`UnitOutput` in unit order; ``compute`` is then not called.
    """
    from deltalake import Schema as DeltaSchema

    exists = storage.is_table(uri)
    fs = storage.fs(uri) if is_remote(uri) else None
    # A full refresh replaces the table's schema, as the one-unit overwrite does: the units
    # are not checked against the existing one.
    check_existing = exists and not overwrite

    def here(batch: Sequence[Sequence[LandingFile]], exists: bool) -> Iterator[UnitOutput]:
        for index, files in enumerate(batch):
            df, read = compute(files)
            yield unit_output(df, read, uri, target, index=index, run_id=run_id, exists=exists, storage=storage)
            del df

    actions: list[Any] = []
    schema: Any = None
    rows_in = rows_out = 0
    outputs = (execute or here)(units, check_existing)
    try:
        for out in outputs:
            if out.action is not None:
                actions.append(out.action)
            if out.added:
                raise UnitsNotApplicable(f"the output adds column(s) {', '.join(out.added)}")
            if schema is None:
                schema = out.schema
            elif out.schema != schema:
                raise UnitsNotApplicable("units produced different schemas")
            rows_in += out.rows_in
            rows_out += out.rows_out
            on_unit(out.index)
        before_commit()
    except BaseException:
        close = getattr(outputs, "close", None)
        if close is not None:
            close()  # a remote engine stops its tasks before the files are removed
        remove_unit_files(uri, actions, fs)
        remove_run_files(uri, run_id, fs=fs)
        raise
    # Files of attempts that did not count (a retried task) are never committed: remove them.
    remove_run_files(uri, run_id, keep={a.path for a in actions}, fs=fs)
    delta_schema = storage.table(uri).schema() if check_existing else DeltaSchema.from_arrow(_arrow_schema(schema))
    return actions, delta_schema, rows_in, rows_out


def remove_run_files(uri: str, run_id: str, keep: set[str] | frozenset[str] = frozenset(), fs: Any = None) -> None:
    """Delete this run's unit files (``part-<run_id>-*``) that are not in ``keep`` (best effort):
    files of failed or retried attempts, which no version references. An object-store table
    is listed through ``fs``."""
    try:
        if is_remote(uri):
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(uri.rstrip("/"), detail=False, refresh=True)]
        else:
            names = os.listdir(uri)
    except Exception:  # noqa: BLE001 - no folder yet, or the store is unreachable: vacuum --full is the backstop
        return
    for name in names:
        if name.startswith(f"part-{run_id}-") and name not in keep:
            try:
                if is_remote(uri):
                    fs.rm_file(f"{uri.rstrip('/')}/{name}")
                else:
                    os.remove(os.path.join(uri, name))
            except Exception:  # noqa: BLE001
                pass


def _arrow_schema(schema: Any) -> Any:
    import polars as pl

    return pl.DataFrame(schema=schema).to_arrow().schema


def commit_units(
    actions: Sequence[Any],
    schema: Any,
    uri: str,
    target: TargetConfig,
    *,
    metadata: dict[str, str],
    transactions: Sequence[tuple[str, int]],
    storage: Storage,
    overwrite: bool = False,
) -> WriteOutcome:
    """Commit every unit's files in one Delta transaction with the run's metadata and app
    transactions (the watermark). A missing table is created by that same commit. An
    empty batch on an existing table commits nothing, as the one-unit append does.

    With ``overwrite`` (a full refresh) the commit is delta-rs's ``mode="overwrite"``: it
    removes every file of the current version and adds the units' files, with ``schema``
    as the table's schema, in one version (an empty batch empties the table, as the
    one-unit overwrite does)."""
    from deltalake import CommitProperties, Transaction
    from deltalake.transaction import create_table_with_add_actions

    exists = storage.is_table(uri)
    rows = sum(json.loads(a.stats)["numRecords"] for a in actions)
    if not actions and exists and not overwrite:
        return WriteOutcome(operation="none", version=None, rows=0)
    metadata, done = storage.write_guard(uri, metadata, exists=exists)
    commit = CommitProperties(custom_metadata=metadata,
                              app_transactions=[Transaction(app, version) for app, version in transactions] or None)
    what = f"committing {len(actions)} unit file(s) to {target.table}"
    if exists:
        mode = "overwrite" if overwrite else "append"
        storage.call(lambda: storage.table(uri).create_write_transaction(list(actions), mode=mode, schema=schema,
                                                                         commit_properties=commit),
                     what=what, uri=uri, done=done)
        operation = mode
    else:
        # As with the one-unit write, two creators race on version 0: the loser appends.
        storage.call(lambda: create_table_with_add_actions(uri, schema, list(actions), mode="append",
                                                           configuration=target.properties or None,
                                                           storage_options=storage.delta(uri),
                                                           commit_properties=commit),
                     what=what, uri=uri, done=done)
        operation = "create"
    version = storage.table(uri).version()
    return WriteOutcome(operation=operation, version=version, metrics={"num_output_rows": rows, "num_added_files": len(actions)},
                        rows=rows)
