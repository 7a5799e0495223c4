"""Run records: what every ``run`` (and ``retry``, ``verify``, ``restore``, ``vacuum``,
``optimize``) did, kept in the state file.

A run is a row of ``runs``; each table it finished is a row of ``run_tables``, written as
the table finishes, so a run killed half-way still shows the tables it completed. The
document that ``medallion runs show --json``, ``medallion run --json``, ``--output-json``
and ``.medallion/runs/RUN_ID.json`` hold is built from those rows by one function
(:func:`document`).

Run statuses: ``running`` (in progress), ``succeeded``, ``failed`` (the command failed, or
any table failed: the per-table statuses say which), ``interrupted`` (Ctrl-C, or the
process ended without finishing the record, e.g. SIGKILL). A record is ``running`` only
while its process holds ``.medallion/locks/runs/RUN_ID.lock`` (an ``flock``, released by
the kernel however the process ends); the next command that opens the records marks a
``running`` record whose lock is free as ``interrupted``.

Table statuses are those of :class:`runner.LayerResult`: ``written`` (succeeded with a new
Delta version), ``unchanged`` (succeeded, nothing new), ``failed``, ``skipped``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from medallion_cli import __version__
from medallion_cli.errors import ConfigError, ExitCode, MedallionError, UsageError
from medallion_cli.timeparse import iso_utc

DOCUMENT_SCHEMA_VERSION = 1  # the run document's shape (``schema_version`` in it)
RUN_STATUSES = ("running", "succeeded", "failed", "interrupted")
TABLE_STATUSES = ("written", "unchanged", "failed", "skipped")
RECORDED_COMMANDS = ("run", "retry", "verify", "restore", "vacuum", "optimize")
SUCCEEDED_TABLE = ("written", "unchanged")

# Options whose value is KEY=VALUE: the value is masked when KEY names a secret.
_KEY_VALUE_OPTIONS = ("--storage-option", "--set", "-s")


@dataclass(frozen=True)
class Retention:
    """``medallion.runs`` in conf/project.yml: records older than ``keep_days`` or beyond the
    newest ``keep_runs`` are deleted (with their ``.medallion/runs`` files)."""

    keep_days: float = 30
    keep_runs: int = 200

    @classmethod
    def from_project(cls, project: Any) -> Retention:
        section = project_section(project).get("runs")
        where = f"{project.root / 'conf' / 'project.yml'}: medallion.runs"
        if section is None:
            return cls()
        if not isinstance(section, dict):
            raise ConfigError(f"{where} must be a mapping", hint="e.g. runs: {keep_days: 30, keep_runs: 200}")
        unknown = sorted(set(section) - {"keep_days", "keep_runs"})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}", hint="known keys: keep_days, keep_runs")
        days, runs = section.get("keep_days", cls.keep_days), section.get("keep_runs", cls.keep_runs)
        if isinstance(days, bool) or not isinstance(days, (int, float)) or days <= 0:
            raise ConfigError(f"{where}.keep_days must be a positive number, got {days!r}")
        if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
            raise ConfigError(f"{where}.keep_runs must be a positive integer, got {runs!r}")
        return cls(float(days), runs)


def project_section(project: Any) -> dict[str, Any]:
    """The ``medallion:`` section of conf/project.yml (read again: cheap, and keeps
    :class:`project.Project` unchanged)."""
    from medallion_cli.project import PROJECT_CONFIG, read_yaml

    data = read_yaml(project.root / PROJECT_CONFIG)
    section = data.get("medallion") or {}
    return section if isinstance(section, dict) else {}


def masked_command_line(argv: list[str]) -> str:
    """``medallion ARGS`` with the values of secret-named ``--storage-option``/``--set`` keys
    replaced by ``***`` and every known secret scrubbed."""
    from medallion_cli.storage import is_secret, scrub

    masked: list[str] = []
    expect_pair = False
    for arg in argv:
        if expect_pair or any(arg.startswith(o + "=") for o in _KEY_VALUE_OPTIONS):
            prefix, pair = ("", arg) if expect_pair else (arg.split("=", 1)[0] + "=", arg.split("=", 1)[1])
            key, sep, _ = pair.partition("=")
            if sep and is_secret(key.rpartition(".")[2]):
                arg = f"{prefix}{key}=***"
            expect_pair = False
        elif arg in _KEY_VALUE_OPTIONS:
            expect_pair = True
        masked.append(arg)
    return scrub(shlex.join(["medallion", *masked]))


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no passwd entry (containers): the uid will do
        return str(os.getuid())


class RunRecords:
    """The run records of one project (its state file and ``.medallion/runs``)."""

    def __init__(self, project: Any, store: Any = None) -> None:
        from medallion_cli.state import StateStore

        self.project = project
        self.store = store if store is not None else StateStore(project.state_path)
        self.artifact_dir = project.root / ".medallion" / "runs"
        self.lock_dir = project.lock_dir / "runs"

    # -- reading ------------------------------------------------------------------------
    def reconcile(self) -> list[str]:
        """Mark ``running`` records of this host whose process is gone as ``interrupted``;
        return their ids. Records of other hosts cannot be checked and stay as they are."""
        if not self.store.path.exists():  # nothing recorded yet: do not create the file for a read
            return []
        host = socket.gethostname()
        with self.store.connect() as con:
            rows = con.execute("SELECT run_id, started_at FROM runs WHERE status = 'running' AND host = ?", [host]).fetchall()
            gone = [(run_id, started) for run_id, started in rows if not self._alive(run_id)]
            for run_id, started in gone:
                con.execute(
                    "UPDATE runs SET status = 'interrupted', exit_code = NULL, error = ? WHERE run_id = ? AND status = 'running'",
                    [json.dumps({"error": "Interrupted", "message": "the process ended before the run finished "
                                 "(killed, or the machine stopped)", "hint": "`medallion retry` runs the unfinished tables",
                                 "exit_code": None}), run_id],
                )
        for run_id, _ in gone:
            (self.lock_dir / f"{run_id}.lock").unlink(missing_ok=True)
            write_document(self.show(run_id), self.artifact_dir / f"{run_id}.json")
        return [run_id for run_id, _ in gone]

    def _alive(self, run_id: str) -> bool:
        """True while the process that records ``run_id`` holds its lock."""
        path = self.lock_dir / f"{run_id}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases a lock taken here
        return False

    def list(self, *, limit: int | None = 20, status: str | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
        """Run summaries, newest first."""
        if status is not None and status not in RUN_STATUSES:
            raise UsageError(f"unknown run status {status!r}", hint=f"use one of: {', '.join(RUN_STATUSES)}")
        if limit is not None and limit < 1:
            raise UsageError(f"--limit must be at least 1, got {limit}")
        self.reconcile()
        query = f"SELECT {_RUN_COLUMNS} FROM runs"
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if since is not None:
            where.append("started_at >= ?")
            params.append(since)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY started_at DESC, run_id DESC"
        if limit is not None:
            query += " LIMIT ?"
            params.append(int(limit))
        with self.store.connect(write=False) as con:
            runs = con.execute(query, params).fetchall()
            counts = {r[0]: {} for r in runs}
            if runs:
                marks = ",".join("?" for _ in runs)
                for run_id, st, n in con.execute(
                        f"SELECT run_id, status, count(*) FROM run_tables WHERE run_id IN ({marks}) GROUP BY ALL",
                        [r[0] for r in runs]).fetchall():
                    counts[run_id][st] = n
        return [_summary(_run_dict(row), counts[row[0]]) for row in runs]

    def last_table_runs(self, tables: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """Per table, its newest recorded run: status, run id, when it started, one-line error.

        Tables no recorded run touched are absent.
        """
        if not tables or not self.store.path.exists():
            return {}
        self.reconcile()
        marks = ",".join("?" for _ in tables)
        with self.store.connect(write=False) as con:
            rows = con.execute(
                f"SELECT t.table_name, t.status, t.run_id, r.started_at, t.error FROM run_tables t JOIN runs r USING (run_id) "
                f"WHERE t.table_name IN ({marks}) "
                f"QUALIFY row_number() OVER (PARTITION BY t.table_name ORDER BY r.started_at DESC, t.run_id DESC) = 1",
                list(tables)).fetchall()
        return {table: {"status": status, "run_id": run_id, "started_at": iso_utc(started), "error": error}
                for table, status, run_id, started, error in rows}

    def resolve(self, run_id: str | None, *, commands: tuple[str, ...] = RECORDED_COMMANDS) -> str:
        """A full run id from an id or a unique prefix of one; ``None``: the newest run of
        one of ``commands``."""
        with self.store.connect(write=False) as con:
            if run_id is None:
                marks = ",".join("?" for _ in commands)
                rows = con.execute(f"SELECT run_id FROM runs WHERE command IN ({marks}) "
                                   "ORDER BY started_at DESC, run_id DESC LIMIT 1", list(commands)).fetchall()
                if not rows:
                    raise UsageError("no run is recorded yet", hint="run `medallion run all` first")
                return rows[0][0]
            rows = con.execute("SELECT run_id FROM runs WHERE run_id = ? OR starts_with(run_id, ?) ORDER BY run_id",
                               [run_id, run_id]).fetchall()
        ids = [r[0] for r in rows]
        if run_id in ids:
            return run_id
        if not ids:
            raise UsageError(f"no run {run_id!r} is recorded", hint="`medallion runs` lists the recorded runs")
        if len(ids) > 1:
            raise UsageError(f"run id {run_id!r} is ambiguous ({len(ids)} runs start with it)", hint="give more of the id")
        return ids[0]

    def show(self, run_id: str | None) -> dict[str, Any]:
        """The document of one run (the newest when ``run_id`` is None)."""
        self.reconcile()
        run_id = self.resolve(run_id)
        with self.store.connect(write=False) as con:
            run = con.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", [run_id]).fetchall()[0]
            tables = con.execute("SELECT table_name, status, detail FROM run_tables WHERE run_id = ? ORDER BY position",
                                 [run_id]).fetchall()
        return document(_run_dict(run), tables)

    def documents(self, *, limit: int | None = 50, commands: tuple[str, ...] = RECORDED_COMMANDS) -> list[dict[str, Any]]:
        """The documents of the newest runs of ``commands``, newest first, read over one
        connection (``show`` per run opens the state file three times)."""
        if not self.store.path.exists():
            return []
        self.reconcile()
        marks = ",".join("?" for _ in commands)
        query = f"SELECT {_RUN_COLUMNS} FROM runs WHERE command IN ({marks}) ORDER BY started_at DESC, run_id DESC"
        params: list[Any] = list(commands)
        if limit is not None:
            query += " LIMIT ?"
            params.append(int(limit))
        with self.store.connect(write=False) as con:
            runs = con.execute(query, params).fetchall()
            tables: dict[str, list[tuple]] = {r[0]: [] for r in runs}
            if runs:
                marks = ",".join("?" for _ in runs)
                for run_id, *row in con.execute(
                        f"SELECT run_id, table_name, status, detail FROM run_tables WHERE run_id IN ({marks}) "
                        "ORDER BY run_id, position", [r[0] for r in runs]).fetchall():
                    tables[run_id].append(tuple(row))
        return [document(_run_dict(r), tables[r[0]]) for r in runs]

    def succeeded_in_retries(self, run_id: str) -> set[str]:
        """Tables that succeeded in retries of ``run_id`` (and retries of those)."""
        done: set[str] = set()
        chain, seen = [run_id], {run_id}
        with self.store.connect(write=False) as con:
            while chain:
                marks = ",".join("?" for _ in chain)
                retries = [r[0] for r in con.execute(f"SELECT run_id FROM runs WHERE retry_of IN ({marks})", chain).fetchall()
                           if r[0] not in seen]
                if retries:
                    marks = ",".join("?" for _ in retries)
                    done.update(r[0] for r in con.execute(
                        f"SELECT table_name FROM run_tables WHERE run_id IN ({marks}) AND status IN ('written', 'unchanged')",
                        retries).fetchall())
                seen.update(retries)
                chain = retries
        return done

    # -- writing ------------------------------------------------------------------------
    def prune(self, retention: Retention | None = None) -> list[str]:
        """Delete finished records past the retention and their artifacts; return their ids."""
        retention = retention or Retention.from_project(self.project)
        cutoff = datetime.now(timezone.utc) - timedelta(days=retention.keep_days)
        with self.store.connect() as con:
            rows = con.execute("SELECT run_id, started_at, status FROM runs ORDER BY started_at DESC, run_id DESC").fetchall()
            old = [run_id for i, (run_id, started, status) in enumerate(rows)
                   if status != "running" and (i >= retention.keep_runs or started < cutoff)]
            if old:
                marks = ",".join("?" for _ in old)
                con.execute(f"DELETE FROM run_tables WHERE run_id IN ({marks})", old)
                con.execute(f"DELETE FROM runs WHERE run_id IN ({marks})", old)
        for run_id in old:
            (self.artifact_dir / f"{run_id}.json").unlink(missing_ok=True)
        return old


_RUN_COLUMNS = ("run_id, command, command_line, options, user_name, host, pid, medallion_version, project, started_at, "
                "ended_at, duration_s, status, exit_code, error, storage_retries, retry_of")


def _run_dict(row: tuple) -> dict[str, Any]:
    keys = [k.strip() for k in _RUN_COLUMNS.split(",")]
    data = dict(zip(keys, row))
    data["options"] = json.loads(data["options"]) if data["options"] else {}
    data["error"] = json.loads(data["error"]) if data["error"] else None
    return data


def _summary(run: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    return {
        "run_id": run["run_id"],
        "command": run["command"],
        "status": run["status"],
        "started_at": iso_utc(run["started_at"]),
        "ended_at": iso_utc(run["ended_at"]) if run["ended_at"] else None,
        "duration_s": run["duration_s"],
        "table_counts": {s: counts.get(s, 0) for s in TABLE_STATUSES},
        "error": run["error"]["message"] if run["error"] else None,
        "user": run["user_name"],
        "host": run["host"],
        "command_line": run["command_line"],
        "retry_of": run["retry_of"],
    }


def document(run: dict[str, Any], tables: list[tuple]) -> dict[str, Any]:
    """The run document (``schema_version`` 1): the keys ``medallion run --json`` always had
    (run_id, project, started_at, status, duration_s, medallion_version, storage_retries,
    layers, succeeded, failed, skipped), plus the record's."""
    layers = [json.loads(detail) for _, _, detail in tables]
    by_status = {s: [name for name, st, _ in tables if st == s] for s in TABLE_STATUSES}
    planned = run["options"].get("tables") or []
    done = {name for name, _, _ in tables}
    return {
        "schema_version": DOCUMENT_SCHEMA_VERSION,
        "run_id": run["run_id"],
        "command": run["command"],
        "command_line": run["command_line"],
        "project": run["project"],
        "status": run["status"],
        "exit_code": run["exit_code"],
        "started_at": iso_utc(run["started_at"]),
        "ended_at": iso_utc(run["ended_at"]) if run["ended_at"] else None,
        "duration_s": run["duration_s"],
        "user": run["user_name"],
        "host": run["host"],
        "pid": run["pid"],
        "medallion_version": run["medallion_version"],
        "storage_retries": run["storage_retries"] or 0,
        "retry_of": run["retry_of"],
        "selection": {k: v for k, v in run["options"].items() if k != "tables"},
        "tables": planned,
        "layers": layers,
        "succeeded": [layer["table"] for layer in layers if layer["status"] in ("written", "unchanged")],  # run order
        "failed": by_status["failed"],
        "skipped": by_status["skipped"],
        "not_finished": [t for t in planned if t not in done],
        "error": run["error"],
    }


class Interrupted(MedallionError):
    """What a record says of a command stopped by Ctrl-C."""

    exit_code = ExitCode.INTERRUPTED


class Recorder:
    """Records one command as it runs. Create it, then :meth:`start`, :meth:`table` for each
    finished table, :meth:`finish` (or use :func:`recording`)."""

    def __init__(self, project: Any, command: str, argv: list[str] | None = None, *, store: Any = None,
                 retry_of: str | None = None) -> None:
        if command not in RECORDED_COMMANDS:
            raise ValueError(f"not a recorded command: {command}")
        self.records = RunRecords(project, store)
        self.project = project
        self.command = command
        self.argv = list(argv or [])
        self.retry_of = retry_of
        self.run_id: str | None = None
        self.started_at: datetime | None = None
        self._t0 = 0.0
        self._fd: int | None = None
        self._position = 0
        self._order: dict[str, int] = {}

    def use_store(self, store: Any) -> None:
        """Write through ``store`` (the run's, whose connections its threads share)."""
        self.records.store = store

    def start(self, run_id: str | None = None, started_at: datetime | None = None, *, tables: list[str] | tuple = (),
              options: dict[str, Any] | None = None) -> str:
        """Insert the ``running`` record (after marking dead runs interrupted and pruning)."""
        from medallion_cli.runner import new_run_id

        retention = Retention.from_project(self.project)
        self.started_at = started_at or datetime.now(timezone.utc)
        self.run_id = run_id or new_run_id(self.started_at)
        self._t0 = time.perf_counter()
        self.records.reconcile()
        self.records.lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.records.lock_dir / f"{self.run_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
        self._fd = fd
        self._order = {name: i for i, name in enumerate(tables)}
        with self.records.store.connect() as con:
            con.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, 'running', NULL, NULL, 0, ?)",
                [self.run_id, self.command, masked_command_line(self.argv),
                 json.dumps({**(options or {}), "tables": list(tables)}, default=str), _user(), socket.gethostname(),
                 os.getpid(), __version__, self.project.name, self.started_at, self.retry_of],
            )
        self.records.prune(retention)  # this record counts in keep_runs
        return self.run_id

    def table(self, result: Any) -> None:
        """Record one finished table (a :class:`runner.LayerResult`)."""
        from medallion_cli.storage import scrub

        detail = scrub(json.dumps(result.to_dict(), default=_json_default))
        quality = result.quality
        with self.records.store.connect() as con:
            con.execute(
                """INSERT OR REPLACE INTO run_tables VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                # position: the table's place in run order (tables finish in any order)
                [self.run_id, self._order.get(result.table, len(self._order) + self._position), result.table, result.layer, result.status, result.rows_in, result.rows_out,
                 quality.rows_invalid if quality else None, quality.rows_quarantined if quality else None,
                 quality.rows_dropped if quality else None, result.version, result.kind, result.window,
                 result.watermark_before, result.watermark_after, result.duration_s,
                 scrub(result.error) if result.error else None, detail],
            )
        self._position += 1

    def finish(self, status: str, *, error: MedallionError | None = None, storage_retries: int = 0,
               exit_code: int | None = None) -> dict[str, Any]:
        """End the record; write ``.medallion/runs/RUN_ID.json``; return the run document."""
        from medallion_cli.storage import scrub

        if status not in RUN_STATUSES or status == "running":
            raise ValueError(status)
        if exit_code is None:
            exit_code = int(error.exit_code) if error is not None else (0 if status == "succeeded" else None)
        err = None
        if error is not None:
            err = {**error.to_dict(), "message": scrub(error.message), "hint": scrub(error.hint) if error.hint else error.hint}
        ended = datetime.now(timezone.utc)
        with self.records.store.connect() as con:
            con.execute(
                "UPDATE runs SET ended_at = ?, duration_s = ?, status = ?, exit_code = ?, error = ?, storage_retries = ? "
                "WHERE run_id = ?",
                [ended, round(time.perf_counter() - self._t0, 3), status, exit_code, json.dumps(err) if err else None,
                 storage_retries, self.run_id],
            )
        doc = self.records.show(self.run_id)
        self.write_artifact(doc)
        self._release()
        return doc

    def write_artifact(self, doc: dict[str, Any], path: Path | None = None) -> Path:
        """Write the document to ``path`` (default ``.medallion/runs/RUN_ID.json``), atomically."""
        path = path or self.records.artifact_dir / f"{doc['run_id']}.json"
        return write_document(doc, path)

    def _release(self) -> None:
        if self._fd is not None:
            (self.records.lock_dir / f"{self.run_id}.lock").unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    def abandon(self, exc: BaseException) -> dict[str, Any] | None:
        """End the record after an exception escaped the command: ``failed`` for a medallion
        error or a bug, ``interrupted`` for Ctrl-C. Never raises (the original error wins)."""
        if self.run_id is None or self._fd is None:
            return None
        try:
            if isinstance(exc, MedallionError):
                return self.finish("failed", error=exc)
            if isinstance(exc, Exception):
                return self.finish("failed", error=MedallionError(f"unexpected {type(exc).__name__}: {exc}"))
            return self.finish("interrupted", error=Interrupted("interrupted (Ctrl-C)"))
        except BaseException:  # noqa: BLE001 - the state file may be what failed
            self._release()
            return None


def write_document(doc: dict[str, Any], path: Path) -> Path:
    """Write a run document as JSON (via a temporary file, so readers never see half of it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


class recording:  # noqa: N801 - used as a context manager, like contextlib's
    """``with recording(project, "vacuum", argv, tables=[...]):`` records a command at run
    level: ``succeeded`` when the block ends, ``failed``/``interrupted`` when it raises."""

    def __init__(self, project: Any, command: str, argv: list[str] | None = None, *, tables: list[str] | tuple = (),
                 options: dict[str, Any] | None = None) -> None:
        self.recorder = Recorder(project, command, argv)
        self.tables, self.options = list(tables), options

    def __enter__(self) -> Recorder:
        self.recorder.start(tables=self.tables, options=self.options)
        return self.recorder

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.recorder.finish("succeeded")
        else:
            self.recorder.abandon(exc)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True)
class RetryPlan:
    """What ``medallion retry`` runs again: the tables of a run that did not succeed
    (failed, skipped, or never finished), with the run's recorded options."""

    run_id: str
    status: str
    tables: tuple[str, ...]  # in the run's order
    succeeded: tuple[str, ...]
    options: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"retry_of": self.run_id, "status": self.status, "tables": list(self.tables),
                "succeeded": list(self.succeeded), "options": self.options}


def plan_retry(project: Any, run_id: str | None = None) -> RetryPlan:
    """The tables of run ``run_id`` (default: the newest ``run`` or ``retry``) to run again."""
    from medallion_cli.errors import ConflictError

    records = RunRecords(project)
    doc = records.show(records.resolve(run_id, commands=("run", "retry")))
    if doc["command"] not in ("run", "retry"):
        raise UsageError(f"{doc['run_id']} is a `{doc['command']}`, not a run: only runs can be retried",
                         hint="`medallion runs --json` lists runs with their command")
    if doc["status"] == "running":
        raise ConflictError(f"run {doc['run_id']} is still running (pid {doc['pid']} on {doc['host']})",
                            hint="wait for it to finish, then retry")
    done = set(doc["succeeded"]) | records.succeeded_in_retries(doc["run_id"])
    return RetryPlan(
        run_id=doc["run_id"], status=doc["status"],
        tables=tuple(t for t in doc["tables"] if t not in done),
        succeeded=tuple(t for t in doc["tables"] if t in done),
        options=doc["selection"],
    )


def retry_options(project: Any, plan: RetryPlan, *, wait: float | None = None, threads: int | None = None) -> Any:
    """The :class:`runner.RunOptions` of the original run, its overrides narrowed to the
    tables retried (a key only the succeeded tables declared is dropped)."""
    from medallion_cli.incremental import Window
    from medallion_cli.runner import WRITE_OVERRIDES, RunOptions, select_layers, split_override_key

    recorded = plan.options
    layers = select_layers(project, list(plan.tables))
    known = set(WRITE_OVERRIDES).union(*(layer.inputs for layer in layers))
    overrides = {}
    for key, value in (recorded.get("overrides") or {}).items():
        scope, name = split_override_key(key)
        wanted = name in known if scope is None else any(scope in (l.name, l.target.table) for l in layers)
        if not wanted:
            continue
        if value == "***":
            raise UsageError(f"run {plan.run_id} set {key}, whose value was not recorded (its name looks secret)",
                             hint=f"run the tables again with `medallion run {' '.join(plan.tables)} --set {key}=...`")
        overrides[key] = value
    since, until = recorded.get("since"), recorded.get("until")
    return RunOptions(
        overrides=overrides,
        executor=recorded.get("executor"),
        window=Window(since=datetime.fromisoformat(since) if since else None,
                      until=datetime.fromisoformat(until) if until else None),
        full_refresh=bool(recorded.get("full_refresh")),
        wait=wait,
        quality_policy=recorded.get("quality_policy"),
        threads=threads if threads is not None else recorded.get("threads"),
        fail_fast=bool(recorded.get("fail_fast")),
    )
