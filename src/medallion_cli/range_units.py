"""Gold in bounded memory: polars' streaming engine, and partition-range work units.

**Streaming.** ``medallion.streaming: true|false`` chooses the polars engine that
evaluates a table's output (``runner._collect``). The default is on for tables that read
other tables and overwrite their target (gold's rebuilds: aggregations whose output is far
smaller than their input, which the streaming engine computes in bounded memory) and off
for landing reads and merges (their output is as big as their input, so streaming saves
nothing). Operations the streaming engine lacks run in memory (polars falls back per node).

**Partition-range units** (``medallion.partition: {by: column, column: event_date,
ranges: N | auto}``) for a ``partitions``-strategy table: the partition values a run
rebuilds (the affected dates, or all of them on a full load) are split into consecutive
ranges. Each unit reads its range plus the ``window_days - 1`` days before it that its
rolling windows need, runs the DAG, keeps only the output rows of its own range and writes
them as uncommitted Parquet files (``units.write_unit_file``). The driver commits every
unit's files in one Delta transaction with the watermark and the run's metadata, exactly
as the one-unit write: a full load replaces every file (``mode=overwrite``); an
incremental run removes the files holding rows of the affected range and adds the units'
files plus, for a file that also held rows outside the range, those rows rewritten.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medallion_cli.errors import ConfigError

if TYPE_CHECKING:
    from medallion_cli.incremental import LayerPlan
    from medallion_cli.project import IncrementalConfig, LayerConfig, SourceConfig, TargetConfig

RANGE_KEYS = ("by", "column", "ranges")


# -- configuration ------------------------------------------------------------------------------
def streaming_default(source: SourceConfig, target: TargetConfig) -> bool:
    """Streaming is on by default for tables that read tables and overwrite their target."""
    return source.landing is None and target.mode == "overwrite"


def load_streaming(value: Any, path: Path, source: SourceConfig, target: TargetConfig) -> bool:
    """``medallion.streaming``: true, false, or absent (:func:`streaming_default`)."""
    if value is None:
        return streaming_default(source, target)
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: medallion.streaming must be true or false, got {value!r}",
                          hint="`streaming: false` evaluates the output with polars' in-memory engine")
    return value


def is_column_partition(value: Any) -> bool:
    return isinstance(value, dict) and value.get("by") == "column"


@dataclass(frozen=True)
class ColumnPartition:
    """``medallion.partition: {by: column, column: C, ranges: N | auto}`` (gold).

    ``ranges: N`` splits the rebuilt values of ``column`` into N ranges of about equal rows;
    ``auto`` (the default) into as few as keep each unit's estimated input (its range plus
    the window before it) within the project's ``memory_budget_mb``.
    """

    column: str
    ranges: int | str = "auto"
    by: str = "column"
    max_files: None = None  # bronze's key, absent here


def load_partition(spec: dict, path: Path, target: TargetConfig, incremental: IncrementalConfig | None
                   ) -> ColumnPartition:
    unknown = sorted(set(spec) - set(RANGE_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown medallion.partition key {unknown[0]!r}",
                          hint=f"keys for `by: column`: {', '.join(RANGE_KEYS)}")
    if incremental is None or incremental.strategy != "partitions":
        raise ConfigError(f"{path}: medallion.partition {{by: column}} needs incremental strategy `partitions`",
                          hint="remove medallion.partition: the table then runs as one unit")
    column = spec.get("column", incremental.column)
    if column != incremental.column:
        raise ConfigError(f"{path}: medallion.partition.column must be the incremental column "
                          f"{incremental.column!r}, got {column!r}",
                          hint=f"`partition: {{by: column, column: {incremental.column}, ranges: auto}}`")
    ranges = spec.get("ranges", "auto")
    if ranges != "auto" and (not isinstance(ranges, int) or isinstance(ranges, bool) or ranges < 1):
        raise ConfigError(f"{path}: medallion.partition.ranges must be a positive integer or `auto`, got {ranges!r}",
                          hint="e.g. `ranges: auto` (fit the memory budget) or `ranges: 4`")
    return ColumnPartition(column=str(column), ranges=ranges)


# -- planning -------------------------------------------------------------------------------------
def why_one_unit(layer: LayerConfig, plan: LayerPlan) -> str | None:
    """Why this run cannot split into ranges (None: it can)."""
    if plan.write_mode not in ("overwrite", "replace"):
        return f"write mode {plan.write_mode}"
    if layer.quality is not None:
        return "a quality gate checks the whole batch"
    if layer.target.partition_by:  # its files would need partition values: written by delta-rs in one write
        return "a partitioned target (target.partition_by)"
    return None


def window_days(layer: LayerConfig, inputs: dict[str, Any]) -> int:
    days = layer.incremental.window_days
    return days if isinstance(days, int) else int(inputs[str(days)])


def split_ranges(counts: Sequence[tuple[date, int]], lo: date, hi: date, *, days: int, ranges: int | str,
                 row_bytes: float, budget_bytes: float) -> list[tuple[date, date]]:
    """Consecutive ``(first, last)`` date ranges covering ``[lo, hi]`` exactly.

    ``counts``: source rows per date (dates before ``lo`` are the window context). With an
    integer ``ranges`` the dates in ``[lo, hi]`` are cut into that many ranges of about
    equal rows (fewer if there are fewer dates); with ``auto`` each range grows while its
    rows plus its window's (times ``row_bytes``) fit ``budget_bytes``; one date too big
    for the budget is a range of its own.
    """
    per_day = dict(counts)
    own = sorted(d for d, _ in counts if lo <= d <= hi)
    if not own:
        return [(lo, hi)]
    starts: list[date] = []
    if ranges == "auto":
        def cost(first: date, last: date) -> float:
            span = (last - first).days + days
            return sum(per_day.get(first - timedelta(days=days - 1) + timedelta(days=i), 0)
                       for i in range(span)) * row_bytes
        first = None
        for d in own:
            if first is None or cost(first, d) > budget_bytes:
                starts.append(d)
                first = d
    else:
        n = min(int(ranges), len(own))
        total = sum(per_day[d] for d in own) or 1
        cum, group = 0, -1
        for i, d in enumerate(own):
            want = min(n - 1, cum * n // total)
            want = max(want, n - (len(own) - i))  # enough dates left for the other ranges
            if want > group:
                starts.append(d)
                group += 1
            cum += per_day[d]
    starts[0] = lo
    ends = [s - timedelta(days=1) for s in starts[1:]] + [hi]
    return list(zip(starts, ends))


def source_profile(project: Any, layer: LayerConfig, plan: LayerPlan, column: str) -> tuple[list[tuple[date, int]], int, float]:
    """Rows per ``column`` value of the run's source, its null rows, and an estimate of the
    in-memory bytes of a source row (the source table's Parquet bytes per row, expanded:
    about 110 B a row on the template's silver_events, where the in-memory engine measured
    about 100 B)."""
    import polars as pl

    from medallion_cli import units

    counts = plan.source.group_by(column).agg(pl.len().alias("n")).collect(engine="streaming")
    nulls = counts.filter(pl.col(column).is_null())["n"].sum()
    pairs = [(d, int(n)) for d, n in counts.filter(pl.col(column).is_not_null()).iter_rows()]
    files = pl.DataFrame(project.storage.table(project.table_uri(str(layer.source.table)))
                          .get_add_actions(flatten=True)).select("size_bytes", "num_records")
    size, rows = files["size_bytes"].sum(), files["num_records"].sum()
    # Gold's output is small next to its input (unlike bronze, no WORKING_SET multiple):
    # the estimate is what the in-memory engine holds of the range's rows.
    row_bytes = (size / rows if rows else 0.0) * units.EXPANSION["parquet"]
    return sorted(pairs), int(nulls or 0), row_bytes


# -- running --------------------------------------------------------------------------------------
def maybe_run(ctx: Any, layer: LayerConfig, plan: LayerPlan, inputs: dict[str, Any], uri: str,
              warnings: list[str], t_layer: float) -> Any:
    """Run ``layer`` as partition-range units when it splits into more than one; returns
    the ``LayerResult``, or None to run it as one unit (``warnings`` says why, if notable)."""
    from medallion_cli import units

    part = layer.partition
    if why_one_unit(layer, plan) is not None:
        return None
    column, days = part.column, window_days(layer, inputs)
    counts, nulls, row_bytes = source_profile(ctx.project, layer, plan, column)
    if nulls:
        warnings.append(f"{layer.target.table} ran as one unit: {nulls} source rows have a null {column}")
        return None
    if not counts:
        return None
    if plan.write_mode == "replace":
        lo, hi = _affected(plan)
    else:
        lo, hi = counts[0][0], counts[-1][0]
    split = split_ranges(counts, lo, hi, days=days, ranges=part.ranges, row_bytes=row_bytes,
                         budget_bytes=ctx.project.memory_budget_mb * units.MB)
    if len(split) < 2:
        return None
    try:
        return _run_ranges(ctx, layer, plan, inputs, uri, split, days, (lo, hi), warnings, t_layer)
    except units.UnitsNotApplicable as exc:  # nothing was committed: run the batch as one unit
        warnings.append(f"{layer.target.table} ran as one unit: {exc}")
        return None


def _affected(plan: LayerPlan) -> tuple[date, date]:
    """The replaced range of a ``replace`` plan, from its predicate (``C >= 'a' AND C <= 'b'``)."""
    import re

    found = re.findall(r"'(\d{4}-\d{2}-\d{2})'", plan.predicate or "")
    return date.fromisoformat(found[0]), date.fromisoformat(found[1])


# -- one range, wherever it runs (the driver, or a Ray worker: engines.run_tasks) -----------------
@dataclass(frozen=True)
class RangeJob:
    """What every range of one run shares (picklable: a Ray task gets it). ``source``: the
    plan's lazy source (a scan of the source table at the planned version); each range
    filters and reads its own dates plus the window before them."""

    source: Any
    inputs: dict[str, Any]  # the DAG's other inputs (snapshot tables as lazy scans)
    days: int
    first: tuple[date, date]  # the first range (its rows_in also counts the window before it)
    executor: str | None
    uri: str
    run_id: str
    exists: bool = False  # a Ray task checks its output against the existing table's schema


def compute_range(fp_project: Any, project: Any, layer: LayerConfig, job: RangeJob, unit: tuple[date, date]
                  ) -> tuple[Any, int, int, list[str]]:
    """Range ``unit`` (first and last date): its dates plus the ``days - 1`` before them
    through the DAG, the output kept to its own dates. Returns the frame, its source rows
    (as the one-unit run counts them), the DAG attempts and retry warnings."""
    import polars as pl

    from medallion_cli import runner
    from medallion_cli.flow import run_dag, with_retries
    from medallion_cli.project import check_target_columns

    column = pl.col(layer.partition.column)
    first, last = unit
    own = (column >= first) & (column <= last)
    frame = job.source.filter((column >= first - timedelta(days=job.days - 1)) & (column <= last))
    unit_inputs = {**job.inputs, layer.source.input_name: frame}

    def once() -> tuple[Any, int]:
        value = run_dag(fp_project, layer=layer.name, output=layer.output, inputs=unit_inputs,
                        executor=job.executor, pipelines_dir=project.root / "pipelines")
        if isinstance(value, pl.DataFrame):
            value = value.lazy()
        if isinstance(value, pl.LazyFrame):
            value = value.filter(own)  # the window's days belong to the range before
        # rows_in as the one-unit run counts them: the first unit also counts the window before the range
        return runner._collect(value, frame if tuple(unit) == tuple(job.first) else frame.filter(own), layer)

    (df, rows_in), tries, retried = with_retries(once, layer.retry, root=project.root,
                                                 where=str(layer.config_path), layer=layer.name)
    check_target_columns(layer, df.columns)
    return df, rows_in, tries, retried


def range_unit(fp_project: Any, project: Any, layer: LayerConfig, job: RangeJob, index: int, unit: tuple[date, date]
               ) -> tuple[Any, int, list[str]]:
    """A range as a Ray task: :func:`compute_range` and its Parquet file (``units.unit_output``)."""
    from medallion_cli import units

    df, rows_in, tries, retried = compute_range(fp_project, project, layer, job, unit)
    out = units.unit_output(df, rows_in, job.uri, layer.target, index=index, run_id=job.run_id, exists=job.exists,
                            storage=project.storage)
    return out, tries, retried


def _run_ranges(ctx: Any, layer: LayerConfig, plan: LayerPlan, inputs: dict[str, Any], uri: str,
                split: list[tuple[date, date]], days: int, affected: tuple[date, date], warnings: list[str],
                t_layer: float) -> Any:
    from medallion_cli import __version__, runner, units
    from medallion_cli.commits import app_id, build_metadata, write_app_id
    from medallion_cli.incremental import snapshot_app_id

    project, store, storage, target = ctx.project, ctx.store, ctx.project.storage, layer.target
    attempts = 0
    job = RangeJob(source=plan.source, inputs={k: v for k, v in inputs.items() if k != layer.source.input_name},
                   days=days, first=split[0], executor=ctx.executor or layer.executor, uri=uri, run_id=ctx.run_id)

    def compute(unit: tuple[date, date]) -> tuple[Any, int]:
        nonlocal attempts
        df, rows_in, tries, retried = compute_range(ctx.fp_project, project, layer, job, unit)
        attempts += tries
        warnings.extend(retried)
        return df, rows_in

    execute = None
    placed: dict[int, str] = {}  # range -> the Ray node it ran on
    engine = ctx.options.engine
    if engine is not None and engine.type == "ray":
        from medallion_cli import engines

        def execute(batch: list[tuple[date, date]], exists: bool) -> Any:
            nonlocal attempts
            for out, tries, retried in engines.run_tasks(engine, project, layer, range_unit, replace(job, exists=exists),
                                                         batch, placed=placed):
                attempts += tries
                warnings.extend(retried)
                yield out

    overwrite = plan.write_mode == "overwrite"
    exists = storage.is_table(uri)
    try:
        actions, schema, rows_in, rows_out = units.run_units(
            split, compute, uri, target, run_id=ctx.run_id, storage=storage,
            on_unit=lambda index: runner._crash_point(layer, "unit_written"),
            overwrite=plan.kind == "full_refresh" or not exists, execute=execute)
    finally:
        ctx.attempts[layer.name] = attempts
    removes: list[Any] = []
    kept: list[Any] = []
    try:
        if exists and not overwrite:
            removes, kept = replaced_files(uri, layer.partition.column, affected, run_id=ctx.run_id, storage=storage)
        runner._crash_point(layer, "units_written")
    except BaseException:
        units.remove_unit_files(uri, [*actions, *kept], storage.fs(uri) if _remote(uri) else None)
        raise
    wm = plan.watermark_after
    metadata = build_metadata(run_id=ctx.run_id, layer=layer.name, version=__version__, mode=plan.kind,
                              watermark_column=plan.watermark_column, watermark=wm[0] if wm else None,
                              watermark_int=wm[1] if wm else None)
    transactions = [(app_id(target.table), wm[1]) if wm else (write_app_id(target.table), time.time_ns() // 1000),
                    *((snapshot_app_id(layer, name), v) for name, v in plan.snapshot_versions.items())]
    if overwrite or not exists:
        outcome = units.commit_units(actions, schema, uri, target, metadata=metadata, transactions=transactions,
                                     storage=storage, overwrite=overwrite)
    else:
        outcome = commit_replace([*actions, *kept], removes, schema, uri, target, metadata=metadata,
                                 transactions=transactions, storage=storage)
    outcome = replace(outcome, metrics={**outcome.metrics, "units": len(split),
                                        **({"ray_nodes": len(set(placed.values()))} if placed else {})})
    runner._crash_point(layer, "committed")
    runner._record_state(store, layer, uri, plan, outcome.version, ctx.run_id, storage)
    runner._crash_point(layer, "recorded")
    result = runner._result(layer, uri, plan, "written", outcome, rows_in, rows_out,
                            time.perf_counter() - t_layer, warnings)
    return replace(result, attempts=attempts)


def _remote(uri: str) -> bool:
    from medallion_cli.storage import is_remote

    return is_remote(uri)


def replaced_files(uri: str, column: str, affected: tuple[date, date], *, run_id: str, storage: Any
                   ) -> tuple[list[Any], list[Any]]:
    """The ``RemoveAction``s of the table's files that may hold rows of ``affected``, and
    the ``AddAction``s of the rows of those files outside it, rewritten (uncommitted)."""
    import polars as pl
    from deltalake.transaction import RemoveAction

    from medallion_cli import units

    lo, hi = affected
    dt = storage.table(uri)
    files = pl.DataFrame(dt.get_add_actions(flatten=True))
    low, high = f"min.{column}", f"max.{column}"
    has_stats = low in files.columns and high in files.columns
    now = int(time.time() * 1000)
    removes, kept = [], []
    fs = storage.fs(uri) if _remote(uri) else None
    for i, row in enumerate(files.iter_rows(named=True)):
        first, last = (row.get(low), row.get(high)) if has_stats else (None, None)
        if first is not None and last is not None and (last < lo or first > hi):
            continue  # no row of the affected range
        removes.append(RemoveAction(path=row["path"], data_change=True, deletion_timestamp=now,
                                    size=row["size_bytes"]))
        inside = first is not None and last is not None and first >= lo and last <= hi
        if inside and not row.get(f"null_count.{column}"):
            continue  # every row is replaced
        full = f"{uri.rstrip('/')}/{row['path']}"
        rest = pl.read_parquet(full, storage_options=storage.polars(uri)).filter(
            ~((pl.col(column) >= lo) & (pl.col(column) <= hi)).fill_null(False))
        if rest.height:
            kept.append(units.write_unit_file(rest, uri, run_id=run_id, unit=90000 + i, storage=storage, fs=fs))
    return removes, kept


def commit_replace(adds: Sequence[Any], removes: Sequence[Any], schema: Any, uri: str, target: TargetConfig, *,
                   metadata: dict[str, str], transactions: Sequence[tuple[str, int]], storage: Any) -> Any:
    """One Delta transaction removing ``removes`` and adding ``adds``, with the run's
    metadata and app transactions: what the one-unit ``replace`` write commits."""
    import json

    from deltalake import CommitProperties, Transaction

    from medallion_cli.materialize import WriteOutcome

    metadata, done = storage.write_guard(uri, metadata, exists=True)
    commit = CommitProperties(custom_metadata=metadata,
                              app_transactions=[Transaction(app, version) for app, version in transactions] or None)
    storage.call(lambda: storage.table(uri).create_write_transaction([*adds, *removes], mode="append", schema=schema,
                                                                     commit_properties=commit),
                 what=f"committing {len(adds)} unit file(s) to {target.table}", uri=uri, done=done)
    rows = sum(json.loads(a.stats)["numRecords"] for a in adds)
    return WriteOutcome(operation="replace", version=storage.table(uri).version(),
                        metrics={"num_added_files": len(adds), "num_removed_files": len(removes)}, rows=rows)
