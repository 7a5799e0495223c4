"""What medallion writes into each Delta commit, and how to read it back.

Every commit medallion makes carries ``custom_metadata`` (run id, layer, mode, watermark,
ingested files) and, for incremental layers, a Delta *app transaction*
``medallion/<table>`` whose version is the watermark as an integer. Data and watermark
land in one atomic commit, so the Delta log alone can rebuild the state file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PREFIX = "medallion."
WRITE_ID = f"{PREFIX}write_id"  # unique per write: a retry finds out whether its attempt landed


def app_id(table: str) -> str:
    return f"medallion/{table}"


def write_app_id(table: str) -> str:
    """The app transaction of writes that carry no watermark.

    delta-rs refuses a commit whose app id is also in a concurrent winning commit; with it,
    an object-store retry of a commit whose reply was lost fails instead of committing the
    same data a second time (and medallion's retry then finds its write id in the log).
    """
    return f"medallion/{table}/writes"


def new_write_id() -> str:
    import uuid

    return uuid.uuid4().hex


@dataclass(frozen=True)
class CommitInfo:
    """medallion's view of one Delta commit."""

    version: int
    timestamp_ms: int | None
    operation: str | None
    run_id: str | None = None
    layer: str | None = None
    mode: str | None = None
    watermark_column: str | None = None
    watermark: str | None = None
    watermark_int: int | None = None
    files: tuple[tuple[str, str], ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    write_id: str | None = None

    @property
    def by_medallion(self) -> bool:
        return self.run_id is not None


def build_metadata(
    *,
    run_id: str,
    layer: str,
    version: str,
    mode: str,
    watermark_column: str | None = None,
    watermark: str | None = None,
    watermark_int: int | None = None,
    files: list[tuple[str, str]] | None = None,
) -> dict[str, str]:
    meta = {
        f"{PREFIX}run_id": run_id,
        f"{PREFIX}layer": layer,
        f"{PREFIX}version": version,
        f"{PREFIX}mode": mode,
    }
    if watermark_int is not None:
        meta[f"{PREFIX}watermark_column"] = watermark_column or ""
        meta[f"{PREFIX}watermark"] = watermark or ""
        meta[f"{PREFIX}watermark_int"] = str(watermark_int)
    if files is not None:
        meta[f"{PREFIX}files"] = json.dumps(files, separators=(",", ":"))
    return meta


def parse_entry(entry: dict[str, Any]) -> CommitInfo:
    """A ``DeltaTable.history()`` entry (custom metadata appears as top-level keys)."""
    files = entry.get(f"{PREFIX}files")
    wm_int = entry.get(f"{PREFIX}watermark_int")
    return CommitInfo(
        version=int(entry["version"]),
        timestamp_ms=entry.get("timestamp"),
        operation=entry.get("operation"),
        run_id=entry.get(f"{PREFIX}run_id"),
        layer=entry.get(f"{PREFIX}layer"),
        mode=entry.get(f"{PREFIX}mode"),
        watermark_column=entry.get(f"{PREFIX}watermark_column") or None,
        watermark=entry.get(f"{PREFIX}watermark") or None,
        watermark_int=int(wm_int) if wm_int not in (None, "") else None,
        files=tuple(tuple(f) for f in json.loads(files)) if files else None,
        write_id=entry.get(WRITE_ID),
    )


def commits_since(dt: Any, after_version: int) -> list[CommitInfo]:
    """Commits with version > ``after_version``, oldest first."""
    current = dt.version()
    if current <= after_version:
        return []
    entries = dt.history(current - after_version)
    return sorted((parse_entry(e) for e in entries if int(e["version"]) > after_version), key=lambda c: c.version)
