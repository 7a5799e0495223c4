"""The only module that writes to the terminal.

stdout carries data (tables, JSON); stderr carries narration (status verbs, progress,
warnings, errors). ``--quiet`` silences narration; ``--json`` replaces the human table on
stdout with one JSON document.
"""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from medallion_cli.errors import MedallionError

STATUS_STYLES = {
    "create": "green",
    "overwrite": "yellow",
    "identical": "dim",
    "skip": "dim",
    "written": "green",
    "unchanged": "dim",
    "failed": "red",
    "skipped": "yellow",
    "run": "cyan",
}


# Rich lays out every cell (about 1.5 s for 1,000 rows of 11 columns); past this many rows
# tables are printed as plain aligned text instead.
FAST_TABLE_ROWS = 200


def plain_table(table: Table) -> str:
    """A rich Table as plain, aligned text: same columns, no wrapping, no colour."""
    headers = [str(c.header) for c in table.columns]
    columns = [[_plain(cell) for cell in c.cells] for c in table.columns]
    widths = [max([len(h), *(len(v) for v in col)]) for h, col in zip(headers, columns)]
    right = [c.justify == "right" for c in table.columns]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    lines = [str(table.title)] if table.title else []
    lines.append(line(headers))
    lines.extend(line([col[i] for col in columns]) for i in range(table.row_count))
    return "\n".join(lines) + "\n"


def _plain(cell: Any) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


class Output:
    """Terminal writer for one command invocation."""

    def __init__(self, *, quiet: bool = False, json_mode: bool = False) -> None:
        self.quiet = quiet
        self.json_mode = json_mode
        # Piped output gets wide lines (one row per line) instead of rich's 80 columns.
        self.out = Console(file=sys.stdout, highlight=False, soft_wrap=True, width=_width(sys.stdout))
        self.err = Console(file=sys.stderr, highlight=False, soft_wrap=True, width=_width(sys.stderr))

    # narration (stderr)
    def status(self, verb: str, text: str) -> None:
        if self.quiet:
            return
        line = Text()
        line.append(f"{verb:>10} ", style=STATUS_STYLES.get(verb, "bold"))
        line.append(text)
        self.err.print(line)

    def info(self, text: str) -> None:
        if not self.quiet:
            self.err.print(text)

    def warn(self, text: str) -> None:
        if not self.quiet:
            self.err.print(Text("warning: ", style="yellow") + Text(text))

    def error(self, err: MedallionError) -> None:
        """Errors print even with --quiet: they explain the exit code."""
        self.err.print(Text("error: ", style="bold red") + Text(err.message))
        if err.hint:
            self.err.print(Text("  hint: ", style="dim") + Text(err.hint))

    # data (stdout)
    def json(self, data: Any) -> None:
        self.out.file.write(json.dumps(data, indent=2, default=_json_default) + "\n")
        self.out.file.flush()

    def text(self, text: str) -> None:
        """Rendered text (a diagram, a listing) on stdout, as it is."""
        self.out.file.write(text)
        self.out.file.flush()

    def report(self, data: Any, tables: list[Table]) -> None:
        """The one JSON document with ``--json``, else the tables for people."""
        if self.json_mode:
            self.json(data)
        else:
            for table in tables:
                self.table(table)

    def unapplied(self, plan: Any) -> None:
        """A plan that was only shown (``--dry-run``): its JSON with ``applied: false``."""
        if self.json_mode:
            self.json({"plan": plan.to_dict(), "applied": False})

    def rows(self, frame: Any, *, vertical: bool | None = None) -> None:
        """A frame of rows: a table, or one record per block (``vertical``). ``None`` picks
        records when stdout is a terminal too narrow for the table."""
        if vertical is None:
            columns = _width(self.out.file) if self.out.is_terminal else None
            vertical = columns is not None and natural_width(frame) > columns
        # one row per line, never folded into narrow cells (piped output included)
        self.out.file.write(records_text(frame) if vertical else plain_table(frame_table(frame)))
        self.out.file.flush()

    def table(self, table: Table, *, to_stderr: bool = False) -> None:
        console = self.err if to_stderr else self.out
        if table.row_count > FAST_TABLE_ROWS:
            console.file.write(plain_table(table))
            console.file.flush()
        else:
            console.print(table)


    def run_progress(self) -> RunProgress:
        """Live per-table progress of a run on stderr: only when stderr is a terminal and
        narration is on (CI logs and pipes get the plain status lines only)."""
        return RunProgress(self.err if not self.quiet and self.err.is_terminal else None)


class RunProgress:
    """One line per selected table (waiting, running with a spinner, then how it ended) and
    its elapsed time, redrawn below the narration while the run goes; gone when it ends
    (the summary table follows). Does nothing without a console."""

    def __init__(self, console: Console | None) -> None:
        self._console = console
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RunProgress:
        if self._console is not None:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            class Spinner(SpinnerColumn):  # only for running tables
                def render(self, task: Any) -> Any:
                    return Text(" ") if not task.started else super().render(task)

            self._progress = Progress(
                Spinner(finished_text=" "),
                TextColumn("{task.fields[status]:>9}"),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[detail]}", style="dim"),
                console=self._console,
                transient=True,
                refresh_per_second=4,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def plan(self, tables: list[tuple[str, str]]) -> None:
        """The selected tables, in run order: (layer, table) pairs."""
        if self._progress is None:
            return
        for layer, table in tables:
            label = table if layer == table else f"{layer}: {table}"  # the pipeline, where it differs
            self._tasks[table] = self._progress.add_task(label, total=1, start=False,
                                                         status="waiting", detail="")

    def start(self, table: str) -> None:
        if self._progress is not None and table in self._tasks:
            self._progress.start_task(self._tasks[table])
            self._progress.update(self._tasks[table], status="running")
            self._progress.refresh()  # every state shows, even a table quicker than a redraw

    def done(self, table: str, status: str, detail: str = "") -> None:
        if self._progress is not None and table in self._tasks:
            task = self._tasks[table]
            self._progress.update(task, status=status, detail=detail, completed=1)
            self._progress.stop_task(task)
            self._progress.refresh()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        from medallion_cli.timeparse import iso_utc

        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def run_table(result: Any) -> Table:
    """The per-table summary of a run (a RunResult), in run order. A run where a table failed
    counts succeeded / failed / skipped tables in the title and says why in a last column."""
    title = f"run {result.run_id}: {result.status}"
    failed, skipped = result.tables("failed"), result.tables("skipped")
    if failed or skipped:
        title += f" ({len(result.tables('succeeded'))} succeeded, {len(failed)} failed, {len(skipped)} skipped)"
    table = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False, collapse_padding=True)
    # The pipeline has a column only when one is named unlike the table it writes.
    pipelines = any(layer.layer != layer.table for layer in result.layers)
    for col, justify in (
        *([("pipeline", "left")] if pipelines else []), ("table", "left"), ("mode", "left"), ("status", "left"),
        ("rows in", "right"), ("rows out", "right"), ("version", "right"), ("time", "right"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)
    if failed or skipped:
        table.add_column("why", justify="left", no_wrap=True)
    for layer in result.layers:
        why = [layer.error or ""] if failed or skipped else []
        table.add_row(
            *([layer.layer] if pipelines else []),
            layer.table,
            layer.mode,
            Text(layer.status, style=STATUS_STYLES.get(layer.status, "")),
            _num(layer.rows_in),
            _num(layer.rows_out),
            "-" if layer.version is None else str(layer.version),
            "-" if layer.status == "skipped" else f"{layer.duration_s:.2f}s",
            *why,
        )
    return table


def _num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def plan_table(plans: list[Any], rows: dict[str, int | None]) -> Table:
    """What each layer would read and write (LayerPlans)."""
    table = Table(title="plan", title_justify="left", box=None, header_style="bold", pad_edge=False)
    for col, justify in (("layer", "left"), ("kind", "left"), ("window", "left"), ("source rows", "right"),
                         ("target", "left"), ("write", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for plan in plans:
        table.add_row(
            plan.layer.name, plan.kind, plan.window, _num(rows.get(plan.layer.name)), plan.layer.target.table,
            plan.write_mode + (f" where {plan.predicate}" if plan.predicate else ""),
        )
    return table


def _plain_table(title: str, columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    return table


def _when(value: Any) -> str:
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(value, datetime) else str(value)


def watermark_table(watermarks: list[Any]) -> Table:
    table = _plain_table("watermarks", ["table", "input", "column", "value", "files ingested", "delta version",
                                        "updated at", "run id"])
    for w in watermarks:
        table.add_row(w.table, w.input or "-", w.column, w.value or "(none)", _num(w.files_ingested),
                      _num(w.delta_version), _when(w.updated_at), w.run_id or "-")
    return table


def watermark_history_table(changes: list[Any]) -> Table:
    table = _plain_table("watermark history", ["#", "changed at", "action", "old value", "new value", "delta version", "run id"])
    for c in changes:
        table.add_row(str(c.id), _when(c.changed_at), c.action, c.old_value or "-", c.new_value or "-",
                      _num(c.delta_version), c.run_id or "-")
    return table


def repair_table(reports: list[Any]) -> Table:
    table = _plain_table("repair", ["table", "result", "watermark before", "watermark after", "delta version", "files"])
    for r in reports:
        table.add_row(r.table, r.action, r.watermark_before or "-", r.watermark_after or "-", _num(r.to_version),
                      f"+{r.files_added}" if r.files_added else "0")
    return table


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def tables_table(tables: list[Any]) -> Table:
    t = _plain_table("tables", ["layer", "table", "version", "rows", "files", "size", "last commit", "last run", "uri"])
    for x in tables:
        if not x.exists:
            t.add_row(x.layer, x.table, "-", "-", "-", "-", "(not created yet)", "-", x.uri)
        else:
            t.add_row(x.layer, x.table, str(x.version), _num(x.rows), _num(x.files), human_size(x.size_bytes),
                      _when(x.last_commit), x.last_run_id or "-", x.uri)
    return t


def history_table(name: str, entries: list[Any]) -> Table:
    t = _plain_table(f"history of {name} (newest first)", ["version", "timestamp", "operation", "rows +", "rows ~", "rows -",
                                                           "files +", "files -", "duration", "run id", "watermark"])
    for e in entries:
        t.add_row(str(e.version), _when(e.timestamp), e.operation or "-", _num(e.rows_added), _num(e.rows_updated),
                  _num(e.rows_deleted), _num(e.files_added), _num(e.files_removed),
                  "-" if e.duration_ms is None else f"{e.duration_ms / 1000:.2f}s", e.run_id or "-", e.watermark or "-")
    return t


def describe_tables(info: Any) -> list[Table]:
    head = _plain_table(f"{info.name} at version {info.version}", ["property", "value"])
    head.add_row("uri", info.uri)
    if info.table_name:
        head.add_row("name", info.table_name)
    head.add_row("partition columns", ", ".join(info.partition_columns) or "(none)")
    head.add_row("protocol", f"reader {info.min_reader_version}, writer {info.min_writer_version}")
    if info.reader_features or info.writer_features:
        head.add_row("features", f"reader: {', '.join(info.reader_features) or '-'}; writer: {', '.join(info.writer_features) or '-'}")
    head.add_row("files", f"{info.files:,} ({human_size(info.size_bytes)})")
    head.add_row("rows (file stats)", _num(info.rows_from_stats))
    head.add_row("created", _when(info.created))
    for key, value in sorted(info.properties.items()):
        head.add_row(key, value)
    cols = _plain_table("schema", ["column", "type", "nullable"])
    for c in info.columns:
        cols.add_row(c["name"], c["type"], "yes" if c["nullable"] else "no")
    return [head, cols]


def _width(stream: Any) -> int | None:
    """The stream's own terminal width (rich would ask fds 0-2, and fd 2 may be hidden:
    see ``cli.app``); 200 columns when piped; None lets rich decide."""
    import os

    try:
        if not stream.isatty():
            return 200
        return os.get_terminal_size(stream.fileno()).columns or None
    except (AttributeError, OSError, ValueError):
        return None


def natural_width(frame: Any) -> int:
    """Characters a one-line-per-row table of ``frame`` needs (two spaces between columns)."""
    widths = [max([len(str(c)), *(len(_cell(v)) for v in frame[c].to_list())]) for c in frame.columns]
    return sum(widths) + 2 * max(len(widths) - 1, 0)


def records_text(frame: Any) -> str:
    """One block per row, one line per column (like psql's ``\\x``): wide tables stay readable."""
    names = [str(c) for c in frame.columns]
    pad = max((len(n) for n in names), default=0)
    lines = [f"{frame.height} row(s)"]
    for i, row in enumerate(frame.iter_rows(), start=1):
        lines.append(f"-[ row {i} ]" + "-" * max(pad - 6, 4))
        lines.extend(f"{n.ljust(pad)} | {_cell(v)}" for n, v in zip(names, row))
    return "\n".join(lines) + "\n"


def frame_table(frame: Any) -> Table:
    t = _plain_table(f"{frame.height} row(s)", [str(c) for c in frame.columns])
    for row in frame.iter_rows():
        t.add_row(*("null" if v is None else str(v) for v in row))
    return t


def diff_tables(d: Any) -> list[Table]:
    head = _plain_table(f"{d.name}: version {d.from_version} -> {d.to_version}", ["change", "detail"])
    head.add_row("rows", f"{d.rows_from:,} -> {d.rows_to:,} ({d.rows_to - d.rows_from:+,})")
    head.add_row("columns added", ", ".join(d.added_columns) or "-")
    head.add_row("columns dropped", ", ".join(d.dropped_columns) or "-")
    head.add_row("columns retyped", ", ".join(f"{r['column']} ({r['from']} -> {r['to']})" for r in d.retyped_columns) or "-")
    out = [head]
    for label, frame in (("rows added", d.rows_added), ("rows removed", d.rows_removed)):
        if frame is not None:
            t = frame_table(frame)
            t.title = f"{label} (at most the limit): {frame.height}"
            out.append(t)
    if d.rows_changed is not None:
        t = _plain_table(f"rows changed (at most the limit): {len(d.rows_changed)}", [*d.key, "column", "from", "to"])
        for change in d.rows_changed:
            key = [_cell(change["key"][k]) for k in d.key]
            for column, values in change["changes"].items() or {"(no column)": {"from": None, "to": None}}.items():
                t.add_row(*key, column, _cell(values["from"]), _cell(values["to"]))
        out.append(t)
    return out


def _cell(value: Any) -> str:
    return "null" if value is None else str(value)


def quality_tables(doc: dict) -> list[Table]:
    checks = _plain_table(f"quarantine of {doc['table']}: {doc['rows']:,} row(s)" + (f" from run {doc['run_id']}" if doc["run_id"] else ""),
                          ["schema", "column", "check", "rows", "samples"])
    for c in doc["checks"]:
        checks.add_row(c["schema"], c["column"] or "-", c["check"], f"{c['rows']:,}",
                       ", ".join("null" if v is None else str(v) for v in c["samples"]))
    runs = _plain_table("runs", ["run id", "rows", "quarantined at"])
    for r in doc["runs"]:
        runs.add_row(r["run_id"], f"{r['rows']:,}", _when(r["at"]))
    return [checks, runs]


def checks_table(results: list[Any]) -> Table:
    t = _plain_table("checks", ["layer", "check", "result", "detail"])
    for r in results:
        t.add_row(r.layer or "-", r.check, Text("ok", style="green") if r.ok else Text("FAILED", style="red"), r.message)
    return t


def verify_tables(result: Any) -> list[Table]:
    """Per table: equal or not, row counts, missing/extra/changed; then the examples (a VerifyResult)."""
    t = _plain_table(f"verify: {'equal' if result.equal else 'DIFFERENT'} (tolerance {result.tolerance:g})",
                     ["table", "result", "rows live", "rows recomputed", "missing", "extra", "changed", "matched on"])
    for c in result.tables:
        verdict = Text("equal", style="green") if c.equal else Text("DIFFERENT", style="red")
        columns = [f"only live: {', '.join(c.columns_only_live)}" if c.columns_only_live else "",
                   f"only recomputed: {', '.join(c.columns_only_recomputed)}" if c.columns_only_recomputed else "",
                   f"retyped: {', '.join(c.columns_retyped)}" if c.columns_retyped else ""]
        if any(columns):
            verdict.append(" (" + "; ".join(x for x in columns if x) + ")")
        key = ", ".join(c.key) if c.key_rule != "multiset" else f"all non-float columns ({len(c.key)})"
        t.add_row(c.table, verdict, _num(c.rows_live) if c.live_exists else "(no table)", _num(c.rows_recomputed),
                  _num(c.missing), _num(c.extra), _num(c.changed), key)
    tables = [t]
    rows = [(c.table, e) for c in result.tables for e in c.examples]
    if rows:
        ex = _plain_table("examples (live vs recomputed)", ["table", "kind", "key", "column", "live", "recomputed"])
        for table, e in rows:
            key = ", ".join(f"{k}={_cell(v)}" for k, v in e["key"].items())
            diffs = e.get("columns") or {"": {"live": "", "recomputed": ""}}
            for column, d in diffs.items():
                ex.add_row(table, e["kind"], key, column or "-", _cell(d["live"]) if column else "-",
                           _cell(d["recomputed"]) if column else "-")
        tables.append(ex)
    return tables


def _cell(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, datetime):
        from medallion_cli.timeparse import iso_utc

        return iso_utc(value)
    return str(value)


RUN_STATUS_STYLES = {"succeeded": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def runs_table(runs: list[dict]) -> Table:
    """Recorded runs (summaries from RunRecords.list), newest first."""
    t = _plain_table("runs", ["run id", "command", "status", "started (UTC)", "time", "written", "unchanged", "failed",
                              "skipped", "error"])
    for r in runs:
        n = r["table_counts"]
        t.add_row(r["run_id"], r["command"], Text(r["status"], style=RUN_STATUS_STYLES.get(r["status"], "")),
                  r["started_at"].replace("T", " ")[:19], _seconds(r["duration_s"]), str(n["written"]),
                  str(n["unchanged"]), str(n["failed"]), str(n["skipped"]), r["error"] or "")
    return t


def run_record_tables(doc: dict) -> list[Table]:
    """One recorded run (its document): who ran what, then one row per table."""
    head = _plain_table(f"run {doc['run_id']}: {doc['status']}", ["field", "value"])
    for key in ("command_line", "started_at", "ended_at", "duration_s", "user", "host", "medallion_version", "retry_of"):
        if doc.get(key) is not None:
            head.add_row(key, str(doc[key]))
    if doc.get("error"):
        head.add_row("error", doc["error"]["message"])
    if doc.get("not_finished"):
        head.add_row("not finished", ", ".join(doc["not_finished"]))
    tables = [head]
    if doc["layers"]:
        # node retries (medallion.retry): a column only when some table's DAG ran more than once
        retried = any((layer.get("attempts") or 0) > 1 for layer in doc["layers"])
        t = _plain_table("tables", ["table", "status", "rows in", "rows out", "invalid", "version", "window",
                                    "watermark after", "time", *(["attempts"] if retried else []), "error"])
        for layer in doc["layers"]:
            q = layer.get("quality") or {}
            attempts = [str(layer.get("attempts") or "-")] if retried else []
            t.add_row(layer["table"], Text(layer["status"], style=STATUS_STYLES.get(layer["status"], "")),
                      _num(layer["rows_in"]), _num(layer["rows_out"]), _num(q.get("rows_invalid")),
                      "-" if layer["version"] is None else str(layer["version"]), layer.get("window") or "-",
                      layer.get("watermark_after") or "-",
                      "-" if layer["status"] == "skipped" else _seconds(layer["duration_s"]), *attempts,
                      layer.get("error") or "")
        tables.append(t)
    return tables
