"""Bring the state file in line with the Delta logs.

Before a layer runs, :func:`sync_table` applies every commit made since the version the
state file last saw (for instance a commit whose run was killed before it could update
the state). ``medallion watermark repair`` does the same from version 0 and reports what
it changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medallion_cli.commits import CommitInfo, commits_since
from medallion_cli.state import StateStore


@dataclass(frozen=True)
class SyncReport:
    """What syncing one table changed in the state file."""

    table: str
    from_version: int | None
    to_version: int | None
    watermark_before: str | None
    watermark_after: str | None
    files_added: int
    action: str  # none | synced | rebuilt | removed

    @property
    def changed(self) -> bool:
        return self.action != "none"

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# Commit modes after which a bronze table holds exactly the files the commit lists.
RESETS_FILES = ("full_refresh", "restore")


def fold(commits: list[CommitInfo]) -> tuple[dict[str, tuple], CommitInfo | None]:
    """Ingested files and the commit holding the watermark, after ``commits`` (oldest first).

    Files map to ``(fingerprint, ingestion µs or None)``. A restore commit always counts
    as the watermark commit, even without a value: the table then went back to before its
    first watermark.
    """
    files: dict[str, tuple] = {}
    last_wm: CommitInfo | None = None
    for commit in commits:
        if commit.mode in RESETS_FILES:
            files.clear()
        for entry in commit.files or ():
            files[entry[0]] = (entry[1], entry[2] if len(entry) > 2 else None)
        if commit.watermark_int is not None or commit.mode == "restore":
            last_wm = commit
    return files, last_wm


def files_from_rows(dt: Any, storage: Any, landing: Any) -> dict[str, tuple]:
    """Rebuild a bronze table's ingested files from its rows, when its log was cleaned up.

    Delta deletes JSON commits (and the file lists medallion keeps in their metadata)
    past ``delta.logRetentionDuration``; the rows keep ``_source_file`` and
    ``_ingested_at``. A landing file not modified since its rows were ingested is taken
    as ingested at its current fingerprint; one modified later is left out, so the next
    run ingests it again as a changed file. Without those columns the list cannot be
    rebuilt and this refuses rather than ingest everything twice.
    """
    import polars as pl

    from medallion_cli.errors import MedallionError
    from medallion_cli.incremental import INGESTED_AT, micros
    from medallion_cli.sources import SOURCE_FILE_COLUMN

    uri = dt.table_uri
    frame = storage.scan_delta(uri, version=dt.version())
    names = frame.collect_schema().names()
    if SOURCE_FILE_COLUMN not in names or INGESTED_AT not in names:
        raise MedallionError(
            f"the Delta log of {uri} was cleaned up before version {_first_version(dt)} and its rows have no "
            f"{SOURCE_FILE_COLUMN}/{INGESTED_AT} columns: which landing files were ingested cannot be rebuilt",
            hint="keep the state file (.medallion/state.duckdb); to start over, `medallion run bronze --full-refresh`",
        )
    found = frame.group_by(SOURCE_FILE_COLUMN).agg(pl.col(INGESTED_AT).max()).collect()
    current = {f.name: f for f in landing.files} if landing is not None else {}
    files: dict[str, tuple] = {}
    for name, at in found.iter_rows():
        landed = current.get(name)
        if name is None or at is None or landed is None or landed.modified_at > at:
            continue
        files[name] = (landed.fingerprint, micros(at))
    return files


def _watermark_from_txn(dt: Any, table: str, commits: list[CommitInfo]) -> CommitInfo | None:
    """The watermark kept in the app transaction, which survives checkpoints and log cleanup."""
    from medallion_cli.commits import app_id

    value = dt.transaction_version(app_id(table))
    if value is None:
        return None
    last = commits[-1]
    return CommitInfo(version=last.version, timestamp_ms=last.timestamp_ms, operation=last.operation,
                      watermark_column=last.watermark_column or "?", watermark=str(value), watermark_int=value)


def _first_version(dt: Any) -> int:
    return min(int(e["version"]) for e in dt.history())


def sync_table(store: StateStore, table: str, uri: str, *, rebuild: bool = False, run_id: str | None = None,
               storage: Any = None, landing: Callable[[], Any] | None = None) -> SyncReport:
    """Apply the table's commits the state has not seen (all of them with ``rebuild``).

    ``landing`` lists a bronze table's landing files: needed only when the commits to
    apply were removed by log cleanup, to rebuild the ingested files from the rows.
    """
    from medallion_cli.storage import Storage

    storage = storage or Storage()
    current = store.watermark(table)
    before = current.value if current else None
    if not storage.is_table(uri):
        if current is None and not store.ingested_files(table):
            return SyncReport(table, None, None, None, None, 0, "none")
        with store.connect() as con:
            store.remove(con, table=table, run_id=run_id, action="repair", note=f"table {uri} does not exist")
        return SyncReport(table, current.delta_version if current else None, None, before, None, 0, "removed")

    dt = storage.table(uri)
    version = dt.version()
    seen = -1 if rebuild or current is None or current.delta_version is None else current.delta_version
    commits = commits_since(dt, seen)
    if not commits and not rebuild:
        return SyncReport(table, seen, seen, before, before, 0, "none")

    replace_files = rebuild or any(c.mode in RESETS_FILES for c in commits)
    files, last_wm = fold(commits)
    if commits and commits[0].version > seen + 1 and not any(c.mode in RESETS_FILES for c in commits):
        # The log before commits[0] was cleaned up: what those commits recorded is gone.
        replace_files = True
        if landing is not None:
            files = {**files_from_rows(dt, storage, landing()), **files}
        if last_wm is None:
            last_wm = _watermark_from_txn(dt, table, commits)
    action = "repair" if rebuild else "sync"
    note = f"from Delta versions {seen + 1}..{version}"
    with store.connect() as con:
        if replace_files:
            con.execute("DELETE FROM ingested_files WHERE table_name = ?", [table])
        store.record_files(con, table=table, files=[(name, *entry) for name, entry in files.items()],
                           delta_version=version, run_id=run_id)
        if last_wm is not None and last_wm.watermark_int is None:  # restored to before any watermark
            after = None
            if current is not None and current.value is not None:
                store.record(con, table=table, column=current.column, value=None, value_int=None,
                             delta_version=version, run_id=last_wm.run_id, action=action, note=note + ": restored")
        elif last_wm is not None:
            after = last_wm.watermark
            if current is None or (current.value, current.value_int) != (last_wm.watermark, last_wm.watermark_int):
                store.record(con, table=table, column=last_wm.watermark_column or "?", value=last_wm.watermark,
                             value_int=last_wm.watermark_int, delta_version=version, run_id=last_wm.run_id,
                             action=action, note=note)
            else:
                con.execute("UPDATE watermarks SET delta_version = ? WHERE table_name = ?", [version, table])
        elif rebuild and current is not None:
            after = None
            if current.value is not None:  # the log holds no watermark for this table
                store.record(con, table=table, column=current.column, value=None, value_int=None,
                             delta_version=version, run_id=run_id, action=action, note=note + ": no watermark in the log")
            else:
                con.execute("UPDATE watermarks SET delta_version = ? WHERE table_name = ?", [version, table])
        else:
            after = before
            con.execute("UPDATE watermarks SET delta_version = ? WHERE table_name = ?", [version, table])
    return SyncReport(table, None if seen < 0 else seen, version, before, after, len(files),
                      "rebuilt" if rebuild else "synced")


def sync_layer(project: Any, layer: Any, store: StateStore, *, rebuild: bool = False, run_id: str | None = None,
               target: StateStore | None = None) -> SyncReport:
    """:func:`sync_table` for a project layer's target table (``target``: write there instead)."""
    landing = None
    if layer.source.landing is not None:
        def landing() -> Any:
            from medallion_cli.sources import list_landing

            return list_landing(project.resolve_path(str(layer.source.landing)), project.storage)

    return sync_table(target or store, layer.target.table, project.table_uri(layer.target.table), rebuild=rebuild,
                      run_id=run_id, storage=project.storage, landing=landing)
