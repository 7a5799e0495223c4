"""Change Delta tables: restore, vacuum, optimize. Each is planned, shown, then applied.

A restore of an incremental table also puts its watermark (and, for bronze, the list of
ingested files) back to what they were at the restored version, in the restore commit
itself, so the next run neither skips nor re-loads anything. Incremental layers that read
the restored table through its change feed are reset to rebuild in full.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from medallion_cli import __version__
from medallion_cli.commits import app_id, build_metadata, commits_since
from medallion_cli.delta import TableError, TableRef, open_table, query
from medallion_cli.errors import ProjectNotFoundError, UsageError
from medallion_cli.locks import layer_locks
from medallion_cli.project import Project
from medallion_cli.state import StateStore
from medallion_cli.storage import first_line as _first_line
from medallion_cli.timeparse import iso_utc
from medallion_cli.sync import fold, sync_table

DEFAULT_RETENTION_HOURS = 168


def _normal(uri: str) -> str:
    """One spelling per table: ``file://`` URIs, relative paths, symlinks and trailing slashes folded."""
    from urllib.parse import urlsplit
    from urllib.request import url2pathname

    if uri.startswith("file://"):
        uri = url2pathname(urlsplit(uri).path)
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme.lower()}://{rest.strip('/')}"
    return os.path.realpath(os.path.expanduser(uri))


def as_project_table(ref: TableRef, project: Project | None, storage_overrides: Iterable[str] = ()) -> tuple[TableRef, Project | None]:
    """The project table a path or URI points at, so that it is changed as that table.

    A restore by path must move the watermark like a restore by name. Without a project
    from ``-C`` or the working directory, the project around a local path is used.
    """
    if ref.layer is not None:
        return ref, project
    if project is None:
        if "://" in ref.uri and not ref.uri.startswith("file://"):
            return ref, None
        from medallion_cli.project import find_project_root, load_project

        try:
            root = find_project_root(Path(_normal(ref.uri)).parent)
        except ProjectNotFoundError:
            return ref, None
        project = load_project(root, storage_overrides=storage_overrides)
    target = _normal(ref.uri)
    for layer in project.layers:
        uri = project.table_uri(layer.target.table)
        if _normal(uri) == target:
            return TableRef(layer.target.table, uri, layer, project.storage), project
    return ref, project


def layers_writing(project: Project | None, ref: TableRef, *, downstream: bool = False) -> list[str]:
    """The layers whose runs write ``ref`` (its quarantine table included), in run order.

    With ``downstream``, also the layers whose watermark a restore of ``ref`` resets.
    """
    from medallion_cli.quality import quarantine_table

    if project is None:
        return []
    target = _normal(ref.uri)
    found = []
    for layer in project.layers:
        written = {_normal(project.table_uri(layer.target.table)), _normal(project.table_uri(quarantine_table(layer)))}
        reset = downstream and layer.source.table == ref.name and layer.incremental is not None \
            and layer.incremental.strategy == "partitions"
        if target in written or reset:
            found.append(layer.name)
    return found


@contextmanager
def serialized(project: Project | None, layers: list[str], *, command: str, wait: float | None = None) -> Iterator[None]:
    """Hold the run locks of ``layers`` while a command changes their tables or state.

    A run plans its window and commits its watermark under its layer's lock; a restore,
    vacuum, optimize or watermark change in between would be undone by that commit.
    Fails at once with a :class:`ConflictError` naming the holder, unless ``wait``.
    """
    if project is None or not layers:
        yield
        return
    ordered = [name for name in project.layer_names if name in layers]
    with layer_locks(project.lock_dir, ordered, run_id=command, wait=wait, command=command):
        yield


@dataclass(frozen=True)
class RestorePlan:
    table: str
    uri: str
    current_version: int
    target_version: int
    rows_now: int
    rows_then: int
    watermark_now: str | None
    watermark_then: str | None
    watermark_then_int: int | None
    watermark_column: str | None
    files_then: list[tuple[str, str]] | None
    downstream_resets: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["files_then"] = None if self.files_then is None else len(self.files_then)
        return data


def plan_restore(project: Project | None, ref: TableRef, *, version: int | None = None, as_of: datetime | None = None) -> RestorePlan:
    if (version is None) == (as_of is None):
        raise UsageError("say what to restore to: --version N or --as-of TIMESTAMP")
    dt = open_table(ref)
    current = dt.version()
    then = open_table(ref, version=version, as_of=as_of)
    target = then.version()
    if target == current:
        raise UsageError(f"{ref.name} is already at version {current}")
    count = "SELECT count(*) AS n FROM t"
    rows_now, rows_then = int(query(dt, count, ref=ref)["n"][0]), int(query(then, count, ref=ref)["n"][0])
    wm_now = wm_then = wm_then_int = column = None
    files_then = None
    downstream: list[str] = []
    layer = ref.layer
    if layer is not None and layer.incremental is not None and project is not None:
        store = StateStore(project.state_path)
        sync_table(store, ref.name, ref.uri, storage=ref.store)
        mark = store.watermark(ref.name)
        wm_now = mark.value if mark else None
        commits = [c for c in commits_since(dt, -1) if c.version <= target]
        files, last = fold(commits)
        if last is not None:
            wm_then, wm_then_int, column = last.watermark, last.watermark_int, last.watermark_column
        column = column or (mark.column if mark else None)
        if layer.incremental.strategy == "files":
            files_then = sorted((name, *entry) for name, entry in files.items())
        downstream = [
            other.target.table for other in project.layers
            if other.source.table == ref.name and other.incremental is not None and other.incremental.strategy == "partitions"
        ]
    return RestorePlan(ref.name, ref.uri, current, target, rows_now, rows_then, wm_now, wm_then, wm_then_int, column,
                       files_then, downstream)


def apply_restore(project: Project | None, ref: TableRef, plan: RestorePlan) -> int:
    """Restore, recording the watermark of the restored version in the same commit. Returns the new version."""
    from deltalake import CommitProperties, Transaction

    dt = open_table(ref)
    if dt.version() != plan.current_version:
        raise UsageError(f"{ref.name} changed since the plan was made (now version {dt.version()})", hint="run the command again")
    tracked = ref.layer is not None and ref.layer.incremental is not None
    metadata = build_metadata(
        run_id=f"restore-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}", layer=ref.layer.name if ref.layer else "-",
        version=__version__, mode="restore", watermark_column=plan.watermark_column, watermark=plan.watermark_then,
        watermark_int=plan.watermark_then_int, files=plan.files_then,
    ) if tracked else {"medallion.mode": "restore", "medallion.version": __version__}
    txns = [Transaction(app_id(ref.name), plan.watermark_then_int)] if tracked and plan.watermark_then_int is not None else None
    try:
        dt.restore(plan.target_version, commit_properties=CommitProperties(custom_metadata=metadata, app_transactions=txns))
    except Exception as exc:  # delta-rs: missing files, protocol, concurrent commit
        raise TableError(f"cannot restore {ref.name} to version {plan.target_version}: {_first_line(exc)}",
                         hint="data files of that version may have been vacuumed") from None
    dt.update_incremental()
    if tracked and project is not None:
        store = StateStore(project.state_path)
        sync_table(store, ref.name, ref.uri, storage=ref.store)
        for table in plan.downstream_resets:
            uri = project.table_uri(table)
            seen = project.storage.table(uri).version() if project.storage.is_table(uri) else None
            with store.connect() as con:
                old = store.watermark(table)
                store.record(con, table=table, column=old.column if old else "-", value=None, value_int=None,
                             delta_version=seen, run_id=None, action="reset", note=f"{ref.name} was restored")
    return dt.version()


@dataclass(frozen=True)
class VacuumPlan:
    table: str
    retention_hours: int
    full: bool
    files: list[str]
    cutoff: datetime
    versions_losing_time_travel: list[int]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cutoff"] = iso_utc(self.cutoff)
        data["file_count"] = len(self.files)
        return data


def plan_vacuum(ref: TableRef, *, retention_hours: int | None, allow_short: bool, full: bool) -> VacuumPlan:
    from medallion_cli.delta import history

    hours = DEFAULT_RETENTION_HOURS if retention_hours is None else retention_hours
    if hours < 0:
        raise UsageError("--retention-hours cannot be negative")
    if hours < DEFAULT_RETENTION_HOURS and not allow_short:
        raise UsageError(
            f"a retention of {hours} h is below Delta's default of {DEFAULT_RETENTION_HOURS} h: readers and "
            "writers still using older versions would fail",
            hint="pass --allow-short-retention if no job reads or writes this table meanwhile",
        )
    dt = open_table(ref)
    try:
        files = dt.vacuum(retention_hours=hours, dry_run=True, enforce_retention_duration=not allow_short, full=full)
    except Exception as exc:
        raise TableError(f"cannot plan a vacuum of {ref.name}: {_first_line(exc)}") from None
    cutoff = datetime.now(timezone.utc) - timedelta(hours=hours)
    entries = history(ref)
    latest = dt.version()
    losing = sorted(e.version for e in entries if e.timestamp and e.timestamp < cutoff and e.version < latest) if files else []
    return VacuumPlan(ref.name, hours, full, sorted(files), cutoff, losing)


def apply_vacuum(ref: TableRef, plan: VacuumPlan, *, allow_short: bool) -> list[str]:
    dt = open_table(ref)
    try:
        return dt.vacuum(retention_hours=plan.retention_hours, dry_run=False,
                         enforce_retention_duration=not allow_short, full=plan.full)
    except Exception as exc:
        raise TableError(f"vacuum of {ref.name} failed: {_first_line(exc)}") from None


@dataclass(frozen=True)
class OptimizePlan:
    table: str
    files: int
    small_files: int
    size_bytes: int
    z_order: list[str]
    target_size_mb: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_optimize(ref: TableRef, *, z_order: list[str] | None, target_size_mb: int = 128) -> OptimizePlan:
    import polars as pl

    dt = open_table(ref)
    known = [f.name for f in dt.schema().fields]
    for col in z_order or []:
        if col not in known:
            raise UsageError(f"{ref.name} has no column {col!r} to z-order by", hint=f"columns: {', '.join(known)}")
    actions = pl.DataFrame(dt.get_add_actions(flatten=True))
    small = int((actions["size_bytes"] < target_size_mb * 1024 * 1024 // 2).sum()) if actions.height else 0
    return OptimizePlan(ref.name, actions.height, small, int(actions["size_bytes"].sum()) if actions.height else 0,
                        list(z_order or []), target_size_mb)


def apply_optimize(ref: TableRef, plan: OptimizePlan) -> dict[str, Any]:
    from deltalake import CommitProperties

    dt = open_table(ref)
    props = CommitProperties(custom_metadata={"medallion.mode": "optimize", "medallion.version": __version__})
    size = plan.target_size_mb * 1024 * 1024
    try:
        if plan.z_order:
            return dict(dt.optimize.z_order(plan.z_order, target_size=size, commit_properties=props))
        return dict(dt.optimize.compact(target_size=size, commit_properties=props))
    except Exception as exc:
        raise TableError(f"optimize of {ref.name} failed: {_first_line(exc)}") from None
