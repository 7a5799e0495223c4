"""The project's state file: watermarks, their history and ingested files, in DuckDB.

The Delta log is the source of truth (every medallion commit carries its watermark); this
file is an index over it that ``medallion watermark repair`` can rebuild. DuckDB lets one
process hold the file at a time, so every operation opens, works and closes quickly, and
retries briefly when another medallion process has it open.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medallion_cli.errors import ConflictError, ExitCode, MedallionError
from medallion_cli.timeparse import iso_utc as _iso

SCHEMA_VERSION = 2  # 1: watermarks, history, ingested files; 2: + run records (runs, run_tables)

# What DuckDB says about a file that is empty, cut short or not a database at all.
_CORRUPT = ("not a valid duckdb database", "could not read enough bytes", "corrupt", "checksum")


class StateCorruptError(MedallionError):
    """The state file cannot be read as a DuckDB database (empty, truncated, overwritten)."""

    exit_code = ExitCode.USAGE

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"the state file {path} is corrupt ({reason})",
            hint="run `medallion watermark repair`: it sets the file aside and rebuilds it from the Delta logs",
        )
        self.path = path


def _is_corrupt(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "could not set lock" not in text and any(word in text for word in _CORRUPT)


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.removeprefix("IO Error: ")[:160]


def _lock_timeout() -> float:
    """Seconds to keep retrying while another process has the file (MEDALLION_STATE_LOCK_TIMEOUT)."""
    return float(os.environ.get("MEDALLION_STATE_LOCK_TIMEOUT", "10"))

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS medallion_meta (key TEXT PRIMARY KEY, value TEXT)",
    """CREATE TABLE IF NOT EXISTS watermarks (
        table_name TEXT PRIMARY KEY,
        column_name TEXT NOT NULL,
        value TEXT,
        value_int BIGINT,
        delta_version BIGINT,
        updated_at TIMESTAMPTZ NOT NULL,
        run_id TEXT
    )""",
    "CREATE SEQUENCE IF NOT EXISTS watermark_history_seq",
    """CREATE TABLE IF NOT EXISTS watermark_history (
        id BIGINT PRIMARY KEY DEFAULT nextval('watermark_history_seq'),
        table_name TEXT NOT NULL,
        column_name TEXT,
        old_value TEXT,
        new_value TEXT,
        delta_version BIGINT,
        changed_at TIMESTAMPTZ NOT NULL,
        run_id TEXT,
        action TEXT NOT NULL,
        note TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS ingested_files (
        table_name TEXT NOT NULL,
        path TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        delta_version BIGINT,
        run_id TEXT,
        ingested_at TIMESTAMPTZ,
        PRIMARY KEY (table_name, path)
    )""",
    # Schema 2: run records (see runrecords.py). A version-1 file gains them on first use.
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY,
        command TEXT NOT NULL,
        command_line TEXT,
        options TEXT,
        user_name TEXT,
        host TEXT,
        pid BIGINT,
        medallion_version TEXT,
        project TEXT,
        started_at TIMESTAMPTZ NOT NULL,
        ended_at TIMESTAMPTZ,
        duration_s DOUBLE,
        status TEXT NOT NULL,
        exit_code INTEGER,
        error TEXT,
        storage_retries BIGINT,
        retry_of TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS run_tables (
        run_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        table_name TEXT NOT NULL,
        layer TEXT,
        status TEXT NOT NULL,
        rows_in BIGINT,
        rows_out BIGINT,
        rows_invalid BIGINT,
        rows_quarantined BIGINT,
        rows_dropped BIGINT,
        delta_version BIGINT,
        kind TEXT,
        window_text TEXT,
        watermark_before TEXT,
        watermark_after TEXT,
        duration_s DOUBLE,
        error TEXT,
        detail TEXT,
        PRIMARY KEY (run_id, table_name)
    )""",
)


@dataclass(frozen=True)
class Watermark:
    """The high-water mark of one table: what has been processed into it, and by whom."""

    table: str
    column: str
    value: str | None
    value_int: int | None
    delta_version: int | None
    updated_at: datetime
    run_id: str | None
    files_ingested: int | None = None  # files strategy: all files recorded as ingested
    input: str | None = None  # the input it belongs to (None: the table's incremental input)

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "column": self.column,
            "value": self.value,
            "value_int": self.value_int,
            "delta_version": self.delta_version,
            "updated_at": _iso(self.updated_at),
            "run_id": self.run_id,
            "files_ingested": self.files_ingested,
            "input": self.input,
        }


@dataclass(frozen=True)
class WatermarkChange:
    """One entry of the audit trail."""

    id: int
    table: str
    column: str | None
    old_value: str | None
    new_value: str | None
    delta_version: int | None
    changed_at: datetime
    run_id: str | None
    action: str  # advance | set | reset | repair | full_refresh
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["changed_at"] = _iso(self.changed_at)
        return data


class StateStore:
    """Access to one project's state file. Cheap to create; connects per operation."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def connect(self, *, write: bool = True) -> Iterator[Any]:
        """A short-lived connection, retried while another process holds the file."""
        import duckdb

        if not write and not self.path.exists():
            con = duckdb.connect(":memory:")
            try:
                self._migrate(con)
                yield con
            finally:
                con.close()
            return
        con = self._open()
        try:
            with self._transaction(con):
                yield con
        finally:
            con.close()

    def _open(self) -> Any:
        """Open the file (retried while another process holds it), in UTC, its schema migrated."""
        import duckdb

        from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

        self.path.parent.mkdir(parents=True, exist_ok=True)
        timeout = _lock_timeout()

        def locked(exc: BaseException) -> bool:  # another process has the file: worth waiting for
            return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower() and not _is_corrupt(exc)

        try:
            con = Retrying(retry=retry_if_exception(locked), stop=stop_after_delay(timeout),
                           wait=wait_exponential(multiplier=0.02, max=0.5), reraise=True)(duckdb.connect, str(self.path))
        except duckdb.Error as exc:
            if _is_corrupt(exc):
                raise StateCorruptError(self.path, _reason(exc)) from exc
            if locked(exc):
                raise ConflictError(
                    f"the state file {self.path} stayed locked by another process for {timeout:g}s",
                    hint="another medallion command is using it; retry when it has finished",
                ) from exc
            raise MedallionError(
                f"cannot open the state file {self.path}: {exc}",
                hint="check the file's permissions; `medallion watermark repair` rebuilds it from the Delta logs",
            ) from exc
        try:
            con.execute("SET TimeZone = 'UTC'")
            self._migrate(con)
        except BaseException as exc:
            con.close()
            if isinstance(exc, duckdb.Error) and _is_corrupt(exc):
                raise StateCorruptError(self.path, _reason(exc)) from exc
            raise
        return con

    @contextmanager
    def _transaction(self, con: Any) -> Iterator[Any]:
        """One transaction on ``con``: committed when the block ends, rolled back if it raises."""
        import duckdb

        try:
            con.execute("BEGIN TRANSACTION")
            yield con
            con.execute("COMMIT")
        except BaseException as exc:
            try:
                con.execute("ROLLBACK")
            except Exception:  # the transaction may not have started
                pass
            if isinstance(exc, duckdb.Error) and _is_corrupt(exc):
                raise StateCorruptError(self.path, _reason(exc)) from exc
            raise

    def set_aside_if_corrupt(self) -> Path | None:
        """Move a corrupt state file (and its WAL) to ``<name>.corrupt-<UTC time>``; return where.

        Returns ``None`` when the file is missing or readable. The Delta logs hold every
        watermark, so ``watermark repair`` then rebuilds the state from scratch.
        """
        if not self.path.exists():
            return None
        try:
            with self.connect() as con:
                # Every row, not count(*): a count comes from metadata and misses a cut-off file.
                for table in ("watermarks", "watermark_history", "ingested_files", "runs", "run_tables"):
                    con.execute(f"SELECT * FROM {table}").fetchall()
            return None
        except StateCorruptError:
            pass
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        self.path.rename(aside)
        wal = self.path.with_name(self.path.name + ".wal")
        if wal.exists():
            wal.rename(aside.with_name(aside.name + ".wal"))
        return aside

    @staticmethod
    def _migrate(con: Any) -> None:
        for statement in _SCHEMA:
            con.execute(statement)
        row = con.execute("SELECT value FROM medallion_meta WHERE key = 'schema_version'").fetchall()
        if not row:
            con.execute("INSERT INTO medallion_meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        elif int(row[0][0]) < SCHEMA_VERSION:
            # Every migration so far only adds tables (created above): record the new version.
            con.execute("UPDATE medallion_meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)])
        elif int(row[0][0]) > SCHEMA_VERSION:
            raise MedallionError(
                f"the state file was written by a newer medallion (schema {row[0][0]} > {SCHEMA_VERSION})",
                hint="upgrade medallion",
            )

    # -- watermarks -------------------------------------------------------------------
    def watermarks(self, table: str | None = None) -> list[Watermark]:
        query = "SELECT table_name, column_name, value, value_int, delta_version, updated_at, run_id FROM watermarks"
        params: list[Any] = []
        if table is not None:
            query += " WHERE table_name = ?"
            params.append(table)
        with self.connect(write=False) as con:
            rows = con.execute(query + " ORDER BY table_name", params).fetchall()
        return [Watermark(*row) for row in rows]

    def watermark(self, table: str) -> Watermark | None:
        found = self.watermarks(table)
        return found[0] if found else None

    def history(self, table: str | None = None, limit: int | None = None) -> list[WatermarkChange]:
        query = (
            "SELECT id, table_name, column_name, old_value, new_value, delta_version, changed_at, run_id, action, note "
            "FROM watermark_history"
        )
        params: list[Any] = []
        if table is not None:
            query += " WHERE table_name = ?"
            params.append(table)
        query += " ORDER BY id DESC"
        if limit is not None:
            query += " LIMIT ?"
            params.append(int(limit))
        with self.connect(write=False) as con:
            rows = con.execute(query, params).fetchall()
        return [WatermarkChange(*row) for row in rows]

    def record(
        self,
        con: Any,
        *,
        table: str,
        column: str,
        value: str | None,
        value_int: int | None,
        delta_version: int | None,
        run_id: str | None,
        action: str,
        note: str | None = None,
    ) -> None:
        """Set a table's watermark and append the change to the audit trail (in ``con``'s transaction)."""
        now = datetime.now(timezone.utc)
        old = con.execute("SELECT value FROM watermarks WHERE table_name = ?", [table]).fetchall()
        con.execute(
            """INSERT INTO watermarks VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (table_name) DO UPDATE SET column_name = excluded.column_name,
                 value = excluded.value, value_int = excluded.value_int,
                 delta_version = excluded.delta_version, updated_at = excluded.updated_at,
                 run_id = excluded.run_id""",
            [table, column, value, value_int, delta_version, now, run_id],
        )
        con.execute(
            """INSERT INTO watermark_history (table_name, column_name, old_value, new_value, delta_version,
                 changed_at, run_id, action, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [table, column, old[0][0] if old else None, value, delta_version, now, run_id, action, note],
        )

    def remove(self, con: Any, *, table: str, run_id: str | None, action: str, note: str | None = None) -> None:
        """Forget a table's watermark and ingested files (logged in the audit trail)."""
        old = con.execute("SELECT column_name, value, delta_version FROM watermarks WHERE table_name = ?", [table]).fetchall()
        con.execute("DELETE FROM watermarks WHERE table_name = ?", [table])
        con.execute("DELETE FROM ingested_files WHERE table_name = ?", [table])
        column, value, version = old[0] if old else (None, None, None)
        con.execute(
            """INSERT INTO watermark_history (table_name, column_name, old_value, new_value, delta_version,
                 changed_at, run_id, action, note) VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?)""",
            [table, column, value, version, datetime.now(timezone.utc), run_id, action, note],
        )

    # -- ingested files ---------------------------------------------------------------
    def ingested_files(self, table: str) -> dict[str, str]:
        """Landing files recorded as ingested into ``table``: path to fingerprint."""
        return {path: fp for path, (fp, _) in self.ingested_detail(table).items()}

    def ingested_detail(self, table: str) -> dict[str, tuple[str, datetime | None]]:
        """Path to (fingerprint, the ingestion time its rows carry in ``_ingested_at``)."""
        with self.connect(write=False) as con:
            rows = con.execute("SELECT path, fingerprint, ingested_at FROM ingested_files WHERE table_name = ?",
                               [table]).fetchall()
        return {path: (fp, at) for path, fp, at in rows}

    @staticmethod
    def record_files(con: Any, *, table: str, files: list[tuple], delta_version: int | None, run_id: str | None) -> None:
        """Record ``(path, fingerprint[, ingested_at])`` entries (time: a datetime or epoch µs)."""
        if not files:
            return
        now = datetime.now(timezone.utc)
        con.executemany(
            """INSERT INTO ingested_files VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (table_name, path) DO UPDATE SET fingerprint = excluded.fingerprint,
                 delta_version = excluded.delta_version, run_id = excluded.run_id, ingested_at = excluded.ingested_at""",
            [[table, f[0], f[1], delta_version, run_id, _as_time(f[2]) if len(f) > 2 else now] for f in files],
        )


def _as_time(value: Any) -> datetime | None:
    from datetime import timedelta

    if value is None or isinstance(value, datetime):
        return value
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=int(value))
