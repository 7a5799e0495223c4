"""Bring the state file in line with the Delta logs.

Before a layer runs, :func:`sync_table` applies every commit made since the version the
state file last saw (for instance a commit whose run was killed before it could update
the state). ``medallion watermark repair`` does the same from version 0 and reports what
it changed.
"""

from __future__ import annotations

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


def fold(commits: list[CommitInfo]) -> tuple[dict[str, str], CommitInfo | None]:
    """Ingested files and the commit holding the watermark, after ``commits`` (oldest first).

    A restore commit always counts as the watermark commit, even without a value: the
    table then went back to before its first watermark.
    """
    files: dict[str, str] = {}
    last_wm: CommitInfo | None = None
    for commit in commits:
        if commit.mode in RESETS_FILES:
            files.clear()
        if commit.files:
            files.update(dict(commit.files))
        if commit.watermark_int is not None or commit.mode == "restore":
            last_wm = commit
    return files, last_wm


def sync_table(store: StateStore, table: str, uri: str, *, rebuild: bool = False, run_id: str | None = None,
               storage: Any = None) -> SyncReport:
    """Apply the table's commits the state has not seen (all of them with ``rebuild``)."""
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
    action = "repair" if rebuild else "sync"
    note = f"from Delta versions {seen + 1}..{version}"
    with store.connect() as con:
        if replace_files:
            con.execute("DELETE FROM ingested_files WHERE table_name = ?", [table])
        store.record_files(con, table=table, files=list(files.items()), delta_version=version, run_id=run_id)
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
