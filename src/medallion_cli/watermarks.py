"""Inspect and change incremental watermarks: show, history, set, reset, repair.

Changes follow plan, show, confirm, apply: :func:`plan_set` / :func:`plan_reset` return a
:class:`WatermarkPlan` the CLI shows, and :func:`apply` carries it out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from medallion_cli.errors import UsageError
from medallion_cli.incremental import from_micros, micros
from medallion_cli.project import LayerConfig, Project
from medallion_cli.state import StateStore, Watermark, WatermarkChange
from medallion_cli.sync import SyncReport, sync_layer
from medallion_cli.timeparse import iso_utc


@dataclass(frozen=True)
class WatermarkPlan:
    """A change to one watermark, before it is applied."""

    table: str
    layer: str
    action: str  # set | reset
    column: str
    old_value: str | None
    new_value: str | None
    new_value_int: int | None
    effect: str

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def incremental_layers(project: Project) -> list[LayerConfig]:
    return [layer for layer in project.layers if layer.incremental is not None]


def resolve(project: Project, name: str) -> LayerConfig:
    """A layer by its name or its target table's name; only incremental layers have watermarks."""
    for layer in project.layers:
        if name in (layer.name, layer.target.table):
            if layer.incremental is None:
                raise UsageError(f"{name!r} is not incremental and has no watermark",
                                 hint="add a medallion.incremental section to its layer's YAML")
            return layer
    known = ", ".join(layer.target.table for layer in incremental_layers(project))
    raise UsageError(f"unknown table {name!r}", hint=f"tables with watermarks: {known}")


def synced_store(project: Project, layers: list[LayerConfig]) -> StateStore:
    """The state store after bringing the given layers' entries in line with Delta."""
    store = StateStore(project.state_path)
    for layer in layers:
        sync_layer(project, layer, store)
    return store


def show(project: Project, name: str | None = None) -> list[Watermark]:
    layers = [resolve(project, name)] if name else incremental_layers(project)
    store = synced_store(project, layers)
    by_files = {layer.target.table for layer in layers if layer.incremental.strategy == "files"}
    tables = {layer.target.table for layer in layers}
    primary = {layer.target.table: layer.source.input_name for layer in layers}
    found = [replace(w, input=primary[w.table],
                     files_ingested=len(store.ingested_files(w.table)) if w.table in by_files else None)
             for w in store.watermarks() if w.table in tables]
    return found + [w for layer in layers for w in snapshot_marks(project, layer)]


def snapshot_marks(project: Project, layer: LayerConfig) -> list[Watermark]:
    """One line per snapshot input: the version of it the table's last commit read.

    Read from the table's own Delta log (an app transaction per input), not the state file.
    """
    from datetime import timezone

    from medallion_cli.incremental import snapshot_app_id

    uri = project.table_uri(layer.target.table)
    if not layer.snapshots or not project.storage.is_table(uri):
        return []
    dt = project.storage.table(uri)
    when = datetime.fromtimestamp(dt.history(1)[0]["timestamp"] / 1000, tz=timezone.utc)
    marks = []
    for snap in layer.snapshots:
        version = dt.transaction_version(snapshot_app_id(layer, snap.name))
        marks.append(Watermark(layer.target.table, f"{snap.table} version (snapshot)", None if version is None else str(version),
                               version, dt.version(), when, None, input=snap.name))
    return marks


def history(project: Project, name: str, limit: int | None = None) -> list[WatermarkChange]:
    layer = resolve(project, name)
    return StateStore(project.state_path).history(layer.target.table, limit=limit)


def plan_set(project: Project, name: str, value: str) -> WatermarkPlan:
    """Parse ``value`` for the layer's watermark column and describe the change."""
    from medallion_cli.timeparse import parse_time

    layer = resolve(project, name)
    inc = layer.incremental
    store = synced_store(project, [layer])
    current = store.watermark(layer.target.table)
    if inc.strategy == "files":
        raise UsageError(
            f"{layer.target.table} tracks ingested files, not a value",
            hint=f"use `medallion watermark reset {layer.target.table}` to ingest every landing file again",
        )
    if inc.strategy == "partitions":
        try:
            number = int(value)
        except ValueError:
            raise UsageError(f"the watermark of {layer.target.table} is a version of {layer.source.table}: "
                             f"{value!r} is not an integer") from None
        if number < -1:
            raise UsageError("a version is -1 or more")
        latest = _source_version(project, layer)
        if number > latest:
            raise UsageError(f"{layer.source.table} is at version {latest}: {number} is beyond it",
                             hint=f"use a version from -1 (recompute everything) to {latest}")
        text, as_int, column = str(number), number, f"{layer.source.table} version"
        effect = f"the next run recomputes the dates changed in {layer.source.table} after version {number}"
    else:
        when: datetime = parse_time(value, what="VALUE")
        as_int = micros(when)
        text = iso_utc(from_micros(as_int))
        column = str(inc.column)
        highest = _source_max(project, layer, column)
        if highest is not None and when > highest:
            # Later rows would be skipped for good: ingestion times only move forward.
            raise UsageError(f"{text} is past the newest {column} in {layer.source.table} ({iso_utc(highest)})",
                             hint=f"use a time up to {iso_utc(highest)}; to skip nothing, `medallion watermark reset {layer.target.table}`")
        effect = f"the next run reads {layer.source.table} rows with {column} after {text}"
    return WatermarkPlan(layer.target.table, layer.name, "set", column, current.value if current else None,
                         text, as_int, effect)


def _source_version(project: Project, layer: LayerConfig) -> int:
    uri = project.table_uri(str(layer.source.table))
    if not project.storage.is_table(uri):
        raise UsageError(f"source table {layer.source.table} does not exist yet", hint="run the layers first")
    return project.storage.table(uri).version()


def _source_max(project: Project, layer: LayerConfig, column: str) -> datetime | None:
    import polars as pl

    uri = project.table_uri(str(layer.source.table))
    if not project.storage.is_table(uri):
        return None
    return project.storage.scan_delta(uri).select(pl.col(column).max()).collect().item()


def plan_reset(project: Project, name: str) -> WatermarkPlan:
    layer = resolve(project, name)
    store = synced_store(project, [layer])
    current = store.watermark(layer.target.table)
    strategy = layer.incremental.strategy
    if strategy == "files":
        count = len(store.ingested_files(layer.target.table))
        effect = (f"the next run ingests every landing file again ({count} recorded as ingested); "
                  f"{layer.target.table} then holds their rows twice, which the merge downstream absorbs")
    elif strategy == "watermark":
        effect = f"the next run reads all of {layer.source.table} and merges it into {layer.target.table}"
    else:
        effect = f"the next run rebuilds all of {layer.target.table}"
    return WatermarkPlan(layer.target.table, layer.name, "reset", current.column if current else "-",
                         current.value if current else None, None, None, effect)


def apply(project: Project, plan: WatermarkPlan) -> None:
    store = StateStore(project.state_path)
    uri = project.table_uri(plan.table)
    version = project.storage.table(uri).version() if project.storage.is_table(uri) else None
    with store.connect() as con:
        if plan.action == "reset":
            con.execute("DELETE FROM ingested_files WHERE table_name = ?", [plan.table])
            # The table's current version stays recorded as seen, so a sync does not bring the value back.
            store.record(con, table=plan.table, column=plan.column, value=None, value_int=None,
                         delta_version=version, run_id=None, action="reset", note="medallion watermark reset")
        else:
            store.record(con, table=plan.table, column=plan.column, value=plan.new_value, value_int=plan.new_value_int,
                         delta_version=version, run_id=None, action="set", note="medallion watermark set")


def repair(project: Project, *, dry_run: bool = False) -> list[SyncReport]:
    """Rebuild every watermark and ingested-file list from the Delta logs; report differences.

    A manual ``set`` or ``reset`` made since the table's last commit is kept: it is a
    decision about the next run that the log cannot know about yet.
    """
    reports = []
    for layer in incremental_layers(project):
        table, uri = layer.target.table, project.table_uri(layer.target.table)
        store = StateStore(project.state_path)
        before = store.watermark(table)
        before_files = store.ingested_files(table)
        last = store.history(table, limit=1)
        version = project.storage.table(uri).version() if project.storage.is_table(uri) else None
        manual = last[0] if last and last[0].action in ("set", "reset") and last[0].delta_version == version else None
        target = StateStore(project.state_path.with_suffix(".repair-preview.duckdb")) if dry_run else store
        try:
            report = sync_layer(project, layer, store, rebuild=True, target=target)
            if manual is not None:
                _reapply(target, manual, version)
            after = target.watermark(table)
            after_files = target.ingested_files(table)
        finally:
            if dry_run:
                target.path.unlink(missing_ok=True)
        old_value, new_value = (before.value if before else None), (after.value if after else None)
        if old_value == new_value and after_files == before_files:
            action = "unchanged"
        else:
            action = "would change" if dry_run else "repaired"
        if manual is not None:
            action += f" (kept manual {manual.action})"
        reports.append(
            SyncReport(
                table=table,
                from_version=before.delta_version if before else None,
                to_version=report.to_version,
                watermark_before=old_value,
                watermark_after=new_value,
                files_added=len(set(after_files.items()) - set(before_files.items())),
                action=action,
            )
        )
    return reports


def _reapply(store: StateStore, manual: WatermarkChange, version: int | None) -> None:
    with store.connect() as con:
        if manual.action == "reset":
            con.execute("DELETE FROM ingested_files WHERE table_name = ?", [manual.table])
            store.record(con, table=manual.table, column=manual.column or "-", value=None, value_int=None,
                         delta_version=version, run_id=None, action="reset", note="kept by repair")
        else:
            value_int = _value_int(manual.new_value)
            store.record(con, table=manual.table, column=manual.column or "-", value=manual.new_value,
                         value_int=value_int, delta_version=version, run_id=None, action="set", note="kept by repair")


def _value_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        from medallion_cli.timeparse import parse_time

        return micros(parse_time(text))
