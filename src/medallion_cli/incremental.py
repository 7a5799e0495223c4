"""Plan what one layer reads and writes in a run: everything, only what is new, or a window.

A :class:`LayerPlan` is computed before anything runs: it names the source frame (already
filtered to the window), the write mode and replace predicate, and the watermark the
commit will carry. ``medallion run --plan`` prints plans without running them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from medallion_cli.errors import ConfigError, UsageError
from medallion_cli.project import LayerConfig, Project
from medallion_cli.sources import SOURCE_FILE_COLUMN, LandingFile
from medallion_cli.state import StateStore, Watermark
from medallion_cli.timeparse import iso_utc as _iso
from medallion_cli.timeparse import parse_duration

if TYPE_CHECKING:
    import polars as pl

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Window:
    """A backfill window from ``--since`` (inclusive) and ``--until`` (exclusive), UTC."""

    since: datetime | None = None
    until: datetime | None = None

    def __bool__(self) -> bool:
        return self.since is not None or self.until is not None

    @classmethod
    def parse(cls, since: str | None, until: str | None) -> Window:
        """From the text of ``--since`` / ``--until``; ``since`` must come before ``until``."""
        from medallion_cli.timeparse import parse_time

        window = cls(
            since=parse_time(since, what="--since") if since else None,
            until=parse_time(until, what="--until") if until else None,
        )
        if window.since and window.until and window.since >= window.until:
            raise UsageError(f"--since {since} is not before --until {until}", hint="--since is inclusive, --until exclusive")
        return window

    def describe(self) -> str:
        lo = _iso(self.since) if self.since else "the beginning"
        hi = _iso(self.until) if self.until else "now"
        return f"[{lo}, {hi})"


@dataclass
class LayerPlan:
    """What a layer will do in this run."""

    layer: LayerConfig
    kind: str  # full | incremental | backfill | full_refresh | nothing
    window: str
    source: Any = None  # pl.LazyFrame, filtered to the window
    write_mode: str = "append"  # append | merge | overwrite | replace
    predicate: str | None = None
    output_filter: Any = None  # pl.Expr keeping only rows inside the replaced range
    watermark_column: str | None = None
    watermark_before: str | None = None
    watermark_after: tuple[str, int] | None = None  # (text, i64); None keeps it
    files: list[LandingFile] = field(default_factory=list)
    files_new: int = 0
    files_changed: int = 0
    files_skipped: int = 0
    ignored: tuple[str, ...] = ()
    source_version: int | None = None
    started_at: datetime | None = None
    warnings: list[str] = field(default_factory=list)
    file_times: dict[str, int] = field(default_factory=dict)  # landing file -> its _ingested_at (µs)
    file_order: tuple[str, ...] = ()  # landing files in the order the source frame reads them
    snapshot_versions: dict[str, int] = field(default_factory=dict)  # snapshot input -> version read
    snapshot_frames: dict[str, Any] = field(default_factory=dict)  # snapshot input -> its frame

    @property
    def runs(self) -> bool:
        return self.kind != "nothing"

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer.name,
            "table": self.layer.target.table,
            "kind": self.kind,
            "window": self.window,
            "write_mode": self.write_mode,
            "predicate": self.predicate,
            "watermark_column": self.watermark_column,
            "watermark_before": self.watermark_before,
            "watermark_after": self.watermark_after[0] if self.watermark_after else self.watermark_before,
            "files_new": self.files_new,
            "files_changed": self.files_changed,
            "files_skipped": self.files_skipped,
            "source_version": self.source_version,
            "snapshot_versions": dict(self.snapshot_versions),
            "warnings": list(self.warnings),
        }


def micros(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def plan_layer(
    project: Project,
    layer: LayerConfig,
    store: StateStore,
    *,
    started: datetime,
    inputs: dict[str, Any],
    window: Window = Window(),
    full_refresh: bool = False,
    reference: Project | None = None,
) -> LayerPlan:
    """Decide what ``layer`` reads and how it writes in this run.

    ``reference``: another project (the live one, when ``medallion verify`` rebuilds into a
    scratch lake) whose records give bronze's files and ingestion times on a full refresh.
    """
    from medallion_cli import sources

    inc = layer.incremental
    if inc is None:
        if window:
            raise UsageError(
                f"layer {layer.name!r} is not incremental: --since/--until do not apply to it",
                hint="add a medallion.incremental section to its YAML, or leave the layer out",
            )
        plan = LayerPlan(layer, "full", "everything", write_mode=layer.target.mode, started_at=started)
        if layer.source.landing is not None:
            landing = sources.list_landing(project.resolve_path(layer.source.landing), project.storage, settle=layer.source.settle)
            plan.files, plan.ignored = list(landing.files), landing.ignored
            scan = sources.scan_landing(landing, layer.source, project.storage)
            plan.source, plan.warnings = scan.frame, [*landing.warnings, *scan.warnings]
        else:
            plan.source_version, plan.source = _scan_source(project, layer)
        if layer.snapshots:
            _read_snapshots(project, layer, plan)
        return plan
    current = store.watermark(layer.target.table)
    if inc.strategy == "files":
        return _plan_files(project, layer, store, current, started, window, full_refresh, reference)
    if inc.strategy == "watermark":
        plan = _plan_watermark(project, layer, current, started, window, full_refresh)
    else:
        plan = _plan_partitions(project, layer, current, started, inputs, window, full_refresh)
    if layer.snapshots:
        changed = _read_snapshots(project, layer, plan)
        if changed and not window and not full_refresh and plan.kind in ("incremental", "nothing"):
            # A changed dimension can touch any row already written: rebuild it all.
            again = plan_layer(project, layer, store, started=started, inputs=inputs, full_refresh=True)
            _read_snapshots(project, layer, again)
            again.kind = "full"
            again.window = f"{again.window} (changed: {'; '.join(changed)})"
            return again
    return plan


def _scan_source(project: Project, layer: LayerConfig) -> tuple[int, pl.LazyFrame]:
    table = str(layer.source.table)
    uri = project.table_uri(table)
    storage = project.storage
    if not storage.is_table(uri):
        raise UsageError(
            f"source table {table!r} does not exist yet ({uri})",
            hint="run the layer that writes it first, e.g. `medallion run all`",
        )
    version = storage.table(uri).version()
    return version, storage.scan_delta(uri, version=version)


# -- snapshot inputs: dimensions read whole ---------------------------------------------------
def snapshot_app_id(layer: LayerConfig, name: str) -> str:
    """The app transaction that records which version of input ``name`` a commit read."""
    from medallion_cli.commits import app_id

    return f"{app_id(layer.target.table)}/{name}"


def _read_snapshots(project: Project, layer: LayerConfig, plan: LayerPlan) -> list[str]:
    """Pin each snapshot input at its current version; say which changed since the last commit.

    The version a commit read is kept in the commit itself (an app transaction per input),
    so this needs no state file and survives log cleanup.
    """
    storage = project.storage
    target = project.table_uri(layer.target.table)
    consumer = storage.table(target) if storage.is_table(target) else None
    changed = []
    for snap in layer.snapshots:
        uri = project.table_uri(snap.table)
        if not storage.is_table(uri):
            raise UsageError(f"input table {snap.table!r} of {layer.target.table} does not exist yet ({uri})",
                             hint="run the layer that writes it first, e.g. `medallion run all`")
        version = storage.table(uri).version()
        before = consumer.transaction_version(snapshot_app_id(layer, snap.name)) if consumer is not None else None
        plan.snapshot_versions[snap.name] = version
        plan.snapshot_frames[snap.name] = storage.scan_delta(uri, version=version)
        if before is not None and before != version:
            if snap.on_change == "recompute":
                changed.append(f"{snap.table} version {before} → {version}")
            else:
                plan.warnings.append(f"{snap.table} changed (version {before} → {version}); on_change: ignore keeps "
                                     f"the rows already in {layer.target.table}")
    return changed


# -- bronze: each landing file once -------------------------------------------------------
INGESTED_AT = "_ingested_at"


def _plan_files(
    project: Project,
    layer: LayerConfig,
    store: StateStore,
    current: Watermark | None,
    started: datetime,
    window: Window,
    full_refresh: bool,
    reference: Project | None = None,
) -> LayerPlan:
    """Which landing files bronze ingests, and the ingestion time each file's rows carry.

    A file keeps the time it was first ingested (at its current content) for good: a full
    refresh re-reads every file but stamps each with its recorded time, so arrival order,
    which decides ties downstream, is the same as in the incremental history. New and
    changed files get this run's time. A backfill (``--since/--until``) takes the landing
    files modified in the window that are not ingested yet: an append table never gets a
    file twice.
    """
    from medallion_cli import sources

    landing = sources.list_landing(project.resolve_path(str(layer.source.landing)), project.storage, settle=layer.source.settle)
    # Ingestion times only move forward, so a later layer's watermark on them never skips rows.
    if current is not None and current.value_int is not None:
        started = max(started, from_micros(current.value_int + 1))
    plan = LayerPlan(layer, "incremental", "new and changed landing files", write_mode=layer.target.mode,
                     watermark_column="_source_file", watermark_before=current.value if current else None,
                     ignored=landing.ignored, started_at=started, warnings=list(landing.warnings))
    seen = store.ingested_files(layer.target.table) if reference is None else {}
    times: dict[str, datetime] = {}
    if full_refresh:
        recorded = recorded_ingestion(reference or project, layer, None if reference else store)
        times = {f.name: recorded[f.name][1] for f in landing.files
                 if f.name in recorded and recorded[f.name][0] == f.fingerprint and recorded[f.name][1] is not None}
        plan.kind, plan.window, plan.write_mode = "full_refresh", "all landing files", "overwrite"
        if reference is not None:  # a recompute of what the reference lake ingested, nothing more
            times = {f.name: recorded[f.name][1] for f in landing.files
                     if f.name in recorded and recorded[f.name][1] is not None}
            chosen = [f for f in landing.files if f.name in times]
            waiting = landing.count - len(chosen)
            if waiting:
                plan.warnings.append(f"{waiting} landing file(s) not ingested by the live lake yet are left out")
            changed = [f.name for f in chosen if recorded[f.name][0] not in (None, f.fingerprint)]
            if changed:
                plan.warnings.append(f"{len(changed)} landing file(s) changed since the live lake ingested them "
                                     f"(their current content is read): {', '.join(changed[:5])}")
        else:
            chosen = list(landing.files)
        plan.files_new = len([f for f in chosen if f.name not in times])
    else:
        new = [f for f in landing.files if f.name not in seen]
        changed = [f for f in landing.files if f.name in seen and seen[f.name] != f.fingerprint]
        if window:
            plan.kind = "backfill"
            plan.window = f"landing files modified in {window.describe()} and not ingested yet"

            def inside(f: LandingFile) -> bool:
                return (window.since is None or f.modified_at >= window.since) and (
                    window.until is None or f.modified_at < window.until)

            new, changed = [f for f in new if inside(f)], [f for f in changed if inside(f)]
        chosen = sorted(new + changed, key=lambda f: f.name)
        plan.files_new, plan.files_changed = len(new), len(changed)
        plan.files_skipped = landing.count - len(chosen)
        if changed:
            plan.warnings.append(
                "re-ingesting changed file(s): " + ", ".join(f.name for f in changed[:5]) + (" ..." if len(changed) > 5 else "")
            )
    plan.files = chosen
    plan.file_times = {f.name: micros(times.get(f.name, started)) for f in chosen}
    if plan.files_changed and plan.write_mode == "append":
        # A changed file replaces its earlier rows (one commit), so bronze holds each
        # file's current content once, as a full refresh would.
        plan.write_mode = "replace"
        plan.predicate = f"{SOURCE_FILE_COLUMN} IN ({', '.join(sql_string(f.name) for f in chosen)})"
    if not chosen and full_refresh:
        plan.window = "all landing files (there are none: the table is emptied)"
    elif not chosen and not window and not project.storage.is_table(project.table_uri(layer.target.table)):
        # Created empty, so the tables reading it run too (a feed that has not delivered yet
        # must not fail the tables downstream of it).
        plan.window = "no landing files yet (the table is created empty)"
    elif not chosen:
        plan.kind = "nothing"
        plan.window = "no new or changed landing files" + (f" modified in {window.describe()}" if window else "")
        return plan
    scan = sources.scan_landing(landing.subset(chosen), layer.source, project.storage)
    plan.source, plan.warnings = with_ingestion_times(scan.frame, times, started), plan.warnings + list(scan.warnings)
    plan.file_order = scan.order
    plan.watermark_after = (f"last batch: {len(chosen)} file(s) at {_iso(started)}", micros(started))
    return plan


def sql_string(value: str) -> str:
    """A SQL string literal (quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def with_ingestion_times(frame: pl.LazyFrame, times: dict[str, datetime], default: datetime) -> pl.LazyFrame:
    """Add ``_ingested_at``: each file's recorded ingestion time, ``default`` for the others."""
    import polars as pl

    dtype = pl.Datetime("us", "UTC")
    column = pl.lit(default, dtype=dtype)
    if times:
        column = pl.col(SOURCE_FILE_COLUMN).replace_strict(
            {name: at for name, at in times.items()}, default=column, return_dtype=dtype)
    return frame.with_columns(column.alias(INGESTED_AT))


def recorded_ingestion(project: Project, layer: LayerConfig, store: StateStore | None = None
                       ) -> dict[str, tuple[str | None, datetime | None]]:
    """Each ingested file's fingerprint and ingestion time, as ``project`` recorded them.

    The time comes from the bronze table's own rows (the latest ``_ingested_at`` per
    ``_source_file``) when it has those columns, else from the state file.
    """
    import polars as pl

    store = store or StateStore(project.state_path)
    table = layer.target.table
    detail: dict[str, tuple[str | None, datetime | None]] = dict(store.ingested_detail(table))
    uri = project.table_uri(table)
    if project.storage.is_table(uri):
        frame = project.storage.scan_delta(uri)
        names = frame.collect_schema().names()
        if SOURCE_FILE_COLUMN in names and INGESTED_AT in names:
            found = frame.group_by(SOURCE_FILE_COLUMN).agg(pl.col(INGESTED_AT).max()).collect()
            for name, at in found.iter_rows():
                if name is not None and at is not None:
                    fp = detail.get(name, (None, None))[0]
                    detail[name] = (fp, at)
    return detail


# -- silver: rows past a watermark on a column of the source table ----------------------------
def _plan_watermark(
    project: Project,
    layer: LayerConfig,
    current: Watermark | None,
    started: datetime,
    window: Window,
    full_refresh: bool,
) -> LayerPlan:
    import polars as pl

    inc = layer.incremental
    column = str(inc.column)
    version, frame = _scan_source(project, layer)
    dtype = frame.collect_schema().get(column)
    if dtype is None:
        raise ConfigError(f"{layer.config_path}: incremental column {column!r} is not a column of {layer.source.table}")
    encode, decode = _codec(dtype, column, layer)
    plan = LayerPlan(layer, "incremental", "", write_mode=layer.target.mode, watermark_column=column,
                     watermark_before=current.value if current else None, source_version=version, started_at=started)
    hi = frame.select(pl.col(column).max()).collect().item()
    if window and not full_refresh:
        by = inc.backfill_column or column
        plan.kind, plan.window = "backfill", f"{layer.source.table} rows with {by} in {window.describe()}"
        plan.watermark_column = by
        plan.source = frame.filter(_window_filter(frame, by, window, layer))
        return plan
    if hi is None:
        plan.window = f"{layer.source.table} has no rows"
        if full_refresh or current is None or current.value_int is None:
            # An empty source still makes (or empties) the table, so the chain below sees it.
            plan.kind = "full_refresh" if full_refresh else "full"
            plan.write_mode = "overwrite" if full_refresh else plan.write_mode
            plan.source = frame
        else:
            plan.kind = "nothing"
        return plan
    hi_int = encode(hi)
    if full_refresh or current is None or current.value_int is None:
        plan.kind = "full_refresh" if full_refresh else "full"
        plan.window = f"{column} <= {decode(hi_int)}"
        if full_refresh:
            plan.write_mode = "overwrite"
        plan.source = frame.filter(pl.col(column) <= hi)
    else:
        if hi_int <= current.value_int:
            plan.kind = "nothing"
            plan.window = f"no rows past {column} = {current.value}"
            return plan
        lookback = parse_duration(inc.lookback or "0")
        lower = current.value_int - (micros(EPOCH + lookback) if _is_time(dtype) else int(lookback.total_seconds()))
        plan.window = f"{column} in ({decode(lower)}, {decode(hi_int)}]" + (f" (lookback {inc.lookback})" if inc.lookback else "")
        plan.source = frame.filter((pl.col(column) > literal_from_int(lower, dtype)) & (pl.col(column) <= hi))
    plan.watermark_after = (decode(hi_int), hi_int)
    return plan


def _window_filter(frame: pl.LazyFrame, column: str, window: Window, layer: LayerConfig) -> pl.Expr:
    """``since <= column < until`` on a UTC timestamp or a date column."""
    import polars as pl

    dtype = frame.collect_schema().get(column)
    if dtype is None:
        raise ConfigError(f"{layer.config_path}: backfill column {column!r} is not a column of {layer.source.table}")
    if isinstance(dtype, pl.Date):
        def literal(value: datetime) -> Any:
            return pl.lit(value.date())
    elif isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        def literal(value: datetime) -> Any:
            return pl.lit(value, dtype=dtype)
    else:
        raise UsageError(f"--since/--until need a date or UTC timestamp column; {column!r} of "
                         f"{layer.source.table} is {dtype}")
    cond = pl.lit(True)
    if window.since is not None:
        cond = cond & (pl.col(column) >= literal(window.since))
    if window.until is not None:
        cond = cond & (pl.col(column) < literal(window.until))
    return cond


def _is_time(dtype: Any) -> bool:
    import polars as pl

    return isinstance(dtype, pl.Datetime)


def _codec(dtype: Any, column: str, layer: LayerConfig):
    """(encode, decode) between a watermark column's values and the stored integer."""
    import polars as pl

    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            raise ConfigError(f"incremental column {column!r} of {layer.source.table} must be a UTC timestamp")
        return micros, lambda v: _iso(from_micros(v))
    if dtype.is_integer():
        return int, str
    raise ConfigError(f"incremental column {column!r} must be a UTC timestamp or an integer, not {dtype}")


def literal_from_int(value: int, dtype: Any) -> Any:
    import polars as pl

    if isinstance(dtype, pl.Datetime):
        return pl.lit(from_micros(value), dtype=dtype)
    return pl.lit(value, dtype=dtype)


# -- gold: replace the partitions touched by changes in the source ----------------------------
def _plan_partitions(
    project: Project,
    layer: LayerConfig,
    current: Watermark | None,
    started: datetime,
    inputs: dict[str, Any],
    window: Window,
    full_refresh: bool,
) -> LayerPlan:
    import polars as pl

    inc = layer.incremental
    column = str(inc.column)
    days = inc.window_days if isinstance(inc.window_days, int) else inputs.get(str(inc.window_days))
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise UsageError(f"layer {layer.name!r}: window_days ({inc.window_days}) must be a positive integer, got {days!r}")
    version, frame = _scan_source(project, layer)
    if not isinstance(frame.collect_schema().get(column), pl.Date):
        raise ConfigError(f"{layer.config_path}: partition column {column!r} must be a Date column of {layer.source.table}")
    plan = LayerPlan(layer, "incremental", "", write_mode="replace", watermark_column=f"{layer.source.table} version",
                     watermark_before=current.value if current else None, source_version=version, started_at=started)
    plan.watermark_after = (str(version), version)

    if window and not full_refresh:
        plan.kind = "backfill"
        plan.watermark_after = None
        lo = window.since.date() if window.since else frame.select(pl.col(column).min()).collect().item()
        hi = (window.until - timedelta(microseconds=1)).date() if window.until else frame.select(pl.col(column).max()).collect().item()
        if lo is None or hi is None or lo > hi:
            plan.kind, plan.window = "nothing", f"no {column} in {window.describe()}"
            return plan
        affected = (lo, hi)  # the window's dates are what is replaced
    elif full_refresh or current is None or current.value_int is None:
        plan.kind = "full_refresh" if full_refresh else "full"
        plan.window = f"all of {layer.source.table} (version {version})"
        plan.write_mode = "overwrite"
        plan.source = frame
        return plan
    else:
        if current.value_int >= version:
            plan.kind, plan.window = "nothing", f"{layer.source.table} unchanged since version {current.value_int}"
            return plan
        from deltalake.exceptions import DeltaError

        try:
            touched = _touched(project, layer, column, current.value_int + 1, version)
        except (DeltaError, OSError, _NoChangeFeed) as exc:  # no feed, or its files were vacuumed
            plan.warnings.append(
                f"cannot read the change data feed of {layer.source.table} ({exc}); recomputing everything"
            )
            plan.kind, plan.window, plan.write_mode, plan.source = "full", "everything (no change feed)", "overwrite", frame
            return plan
        if touched is None:
            plan.kind, plan.window = "nothing", f"versions {current.value_int + 1}..{version} of {layer.source.table} changed no rows"
            return plan
        affected = (touched[0], touched[1] + timedelta(days=days - 1))
    context_lo = affected[0] - timedelta(days=days - 1)
    plan.window = f"{column} in [{affected[0]}, {affected[1]}]"
    if plan.kind == "incremental":
        plan.window += f" (changes in versions {current.value_int + 1}..{version})"
    plan.source = frame.filter((pl.col(column) >= context_lo) & (pl.col(column) <= affected[1]))
    plan.output_filter = (pl.col(column) >= affected[0]) & (pl.col(column) <= affected[1])
    plan.predicate = f"{column} >= '{affected[0].isoformat()}' AND {column} <= '{affected[1].isoformat()}'"
    return plan


class _NoChangeFeed(Exception):
    pass


def _touched(project: Project, layer: LayerConfig, column: str, start: int, end: int) -> tuple[date, date] | None:
    """Min and max of ``column`` over the source's changes in versions ``start..end``."""
    import polars as pl

    dt = project.storage.table(project.table_uri(str(layer.source.table)))
    if dt.metadata().configuration.get("delta.enableChangeDataFeed", "false").lower() != "true":
        # Without the feed delta-rs still answers, from added files only: updates would
        # show no pre-image and deletes nothing, so the touched range would be wrong.
        raise _NoChangeFeed("delta.enableChangeDataFeed is not set on it")
    reader = dt.load_cdf(starting_version=start, ending_version=end, columns=[column])
    changes = pl.DataFrame(reader.read_all())
    if changes.height == 0:
        return None
    lo, hi = changes.select(pl.col(column).min().alias("lo"), pl.col(column).max().alias("hi")).row(0)
    if lo is None:
        return None
    return lo, hi
