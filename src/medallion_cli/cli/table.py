"""Table commands: tables, history, describe, show, diff, restore, vacuum, optimize."""

from __future__ import annotations

from typing import Annotated

import typer

from medallion_cli.cli.runs import recorded
from medallion_cli.cli.options import (DebugOpt, DryRunOpt, JsonOpt, ProjectOpt, QuietOpt, StorageOpt, WaitOpt, YesOpt, confirm,
                                       setup)

TableArg = Annotated[str, typer.Argument(help="Project table or layer (silver_events, silver), or a path/URI of any Delta table.", show_default=False)]
VersionOpt = Annotated[int | None, typer.Option("--version", "-v", min=0, help="Table version (time travel).", show_default=False)]
AsOfOpt = Annotated[str | None, typer.Option("--as-of", help="Time travel to this time (ISO timestamp, '2 days ago').", show_default=False)]


def _ref(name: str, project_dir, storage_option: list[str] | None = None):
    """Resolve a table; the project is optional for paths and URIs."""
    from medallion_cli.cli.options import load, project_dir_or_default
    from medallion_cli.delta import resolve
    from medallion_cli.errors import ProjectNotFoundError
    from medallion_cli.storage import Storage

    project_dir = project_dir_or_default(project_dir)
    try:
        project = load(project_dir, storage_option)
    except ProjectNotFoundError:
        if project_dir is not None:
            raise
        project = None
    return resolve(name, project, None if project else Storage.resolve(None, storage_option or [])), project


def _changed_ref(name: str, project_dir, storage_option: list[str] | None = None):
    """A table a command changes: a path or URI of a project table counts as that table."""
    from medallion_cli.maintenance import as_project_table

    ref, project = _ref(name, project_dir, storage_option)
    return as_project_table(ref, project, storage_option or [])


def _as_of(text: str | None):
    from medallion_cli.timeparse import parse_time

    return parse_time(text, what="--as-of") if text else None


def tables(storage_option: StorageOpt = None, project_dir: ProjectOpt = None, json_mode: JsonOpt = False,
           quiet: QuietOpt = False, debug: DebugOpt = False) -> None:
    """List the project's tables: layer, URI, version, rows, files, size, last commit and run.

    Example: medallion tables --json
    """
    from medallion_cli.cli.options import load
    from medallion_cli.delta import list_tables
    from medallion_cli.output import tables_table

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    found = list_tables(load(project_dir, storage_option))
    out.report({"tables": [t.to_dict() for t in found]}, [tables_table(found)])


def history(
    table: TableArg,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="Newest N commits.")] = None,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None, json_mode: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Commits of a table, newest first: operation, rows and files changed, medallion's run.

    Example: medallion history silver --limit 10 · medallion history ./some/delta/table --json
    """
    from medallion_cli import delta
    from medallion_cli.output import history_table

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    ref, _ = _ref(table, project_dir, storage_option)
    entries = delta.history(ref, limit=limit)
    out.report({"table": ref.name, "uri": ref.uri, "history": [e.to_dict() for e in entries]}, [history_table(ref.name, entries)])


def describe(
    table: TableArg, version: VersionOpt = None,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None, json_mode: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Schema (with nullability), partitioning, properties, protocol, files and size.

    Example: medallion describe gold_daily_sales --version 3
    """
    from medallion_cli import delta
    from medallion_cli.output import describe_tables

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    ref, _ = _ref(table, project_dir, storage_option)
    info = delta.describe(ref, version=version)
    out.report(info.to_dict(), describe_tables(info))


def show(
    table: TableArg, version: VersionOpt = None, as_of: AsOfOpt = None,
    where: Annotated[str | None, typer.Option("--where", help="SQL filter, e.g. \"region = 'north' AND amount > 10\".", show_default=False)] = None,
    columns: Annotated[str | None, typer.Option("--columns", help="Comma-separated columns to show.", show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=0, help="Rows to show.")] = 20,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV on stdout.")] = False,
    vertical: Annotated[bool | None, typer.Option("--vertical/--no-vertical", "-x/-X", help="One block per row, one line per column (default: when the table is wider than the terminal).", show_default=False)] = None,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None, json_mode: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Preview rows, optionally at an earlier version or time.

    Example: medallion show silver --where "region = 'north'" --columns event_id,amount --limit 5 · medallion show gold -x
    """
    from medallion_cli import delta
    from medallion_cli.errors import UsageError

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    if version is not None and as_of is not None:
        raise UsageError("pass --version or --as-of, not both")
    if json_mode and csv:
        raise UsageError("pass --json or --csv, not both")
    ref, _ = _ref(table, project_dir, storage_option)
    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    frame = delta.show(ref, version=version, as_of=_as_of(as_of), where=where, columns=cols, limit=limit)
    if json_mode:
        out.json({"table": ref.name, "rows": frame.to_dicts()})
    elif csv:
        out.out.file.write(frame.write_csv())
    else:
        out.rows(frame, vertical=vertical)


def diff(
    table: TableArg,
    from_version: Annotated[int, typer.Argument(help="Older version.", min=0)],
    to_version: Annotated[int | None, typer.Argument(help="Newer version (default: latest).", min=0)] = None,
    rows: Annotated[bool, typer.Option("--rows", help="Also list rows added and removed.")] = False,
    key: Annotated[str | None, typer.Option("--key", "-k", help="Comma-separated key columns: a row whose key is in both versions is shown as a change, with the columns that changed (implies --rows).", show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many rows each way.")] = 20,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None, json_mode: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """What changed between two versions: columns added, dropped, retyped; row count; rows.

    Example: medallion diff silver 3 5 --rows --limit 10 · medallion diff silver 3 --key event_id
    """
    from medallion_cli import delta
    from medallion_cli.output import diff_tables

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    ref, _ = _ref(table, project_dir, storage_option)
    keys = [c.strip() for c in key.split(",") if c.strip()] if key else None
    result = delta.diff(ref, from_version, to_version, rows=rows, limit=limit, key=keys)
    out.report(result.to_dict(), diff_tables(result))


def restore(
    table: TableArg, version: VersionOpt = None, as_of: AsOfOpt = None, yes: YesOpt = False, dry_run: DryRunOpt = False,
    wait: WaitOpt = False, storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None, json_mode: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Restore a table to an earlier version (its watermark goes back with it).

    Example: medallion restore silver --version 4 --dry-run
    """
    from medallion_cli import maintenance

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    ref, project = _changed_ref(table, project_dir, storage_option)
    layers = [] if dry_run else maintenance.layers_writing(project, ref, downstream=True)
    with recorded(project, "restore", [ref.name]), \
            maintenance.serialized(project, layers, command=f"medallion restore {ref.name}", wait=float("inf") if wait else None):
        _restore(out, project, ref, version=version, as_of=as_of, yes=yes, dry_run=dry_run, json_mode=json_mode)


def _restore(out, project, ref, *, version, as_of, yes: bool, dry_run: bool, json_mode: bool) -> None:
    from medallion_cli import maintenance

    plan = maintenance.plan_restore(project, ref, version=version, as_of=_as_of(as_of))
    out.info(f"restore {plan.table} from version {plan.current_version} ({plan.rows_now:,} rows) "
             f"to version {plan.target_version} ({plan.rows_then:,} rows)")
    if plan.watermark_column:
        out.info(f"watermark ({plan.watermark_column}): {plan.watermark_now or '(none)'} -> {plan.watermark_then or '(none)'}"
                 " (recorded in the restore commit; delta-rs does not roll app transactions back by itself)")
    if plan.files_then is not None:
        out.info(f"ingested files go back to the {len(plan.files_then)} of that version; later files are ingested again by the next run")
    for other in plan.downstream_resets:
        out.info(f"{other} was built from later versions: its watermark is reset, the next run rebuilds it")
    if dry_run:
        out.unapplied(plan)
        return
    confirm(f"Restore {plan.table} to version {plan.target_version}?", yes=yes)
    new_version = maintenance.apply_restore(project, ref, plan)
    out.status("restored", f"{plan.table} (new version {new_version})")
    if json_mode:
        out.json({"plan": plan.to_dict(), "applied": True, "new_version": new_version})


def vacuum(
    table: TableArg,
    retention_hours: Annotated[int | None, typer.Option("--retention-hours", help="Keep files needed by versions newer than this (default 168).", show_default=False)] = None,
    allow_short: Annotated[bool, typer.Option("--allow-short-retention", help="Allow a retention below 168 hours.")] = False,
    full: Annotated[bool, typer.Option("--full", help="Also delete orphan files no version ever referenced (e.g. from killed writes).")] = False,
    yes: YesOpt = False, dry_run: DryRunOpt = False, wait: WaitOpt = False,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None, json_mode: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Delete data files no longer needed. A dry run unless --yes.

    Example: medallion vacuum bronze --retention-hours 336 --yes
    """
    from medallion_cli import maintenance

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    ref, project = _changed_ref(table, project_dir, storage_option)
    layers = maintenance.layers_writing(project, ref) if yes and not dry_run else []
    with recorded(project, "vacuum", [ref.name]), \
            maintenance.serialized(project, layers, command=f"medallion vacuum {ref.name}", wait=float("inf") if wait else None):
        _vacuum(out, ref, retention_hours=retention_hours, allow_short=allow_short, full=full, yes=yes,
                dry_run=dry_run, json_mode=json_mode)


def _vacuum(out, ref, *, retention_hours, allow_short: bool, full: bool, yes: bool, dry_run: bool,
            json_mode: bool) -> None:
    from medallion_cli import maintenance

    plan = maintenance.plan_vacuum(ref, retention_hours=retention_hours, allow_short=allow_short, full=full)
    out.info(f"vacuum {plan.table}: {len(plan.files)} file(s) to delete (retention {plan.retention_hours} h)")
    if plan.versions_losing_time_travel:
        v = plan.versions_losing_time_travel
        out.info(f"time travel to versions {v[0]}..{v[-1]} (before {plan.cutoff:%Y-%m-%d %H:%M} UTC) will stop working")
    if dry_run or not yes or not plan.files:
        if not plan.files:
            out.info("nothing to delete")
        elif not dry_run:
            out.info("dry run: pass --yes to delete")
        if json_mode:
            out.json({"plan": plan.to_dict(), "applied": False})
        return
    deleted = maintenance.apply_vacuum(ref, plan, allow_short=allow_short)
    out.status("vacuumed", f"{plan.table}: {len(deleted)} file(s) deleted")
    if json_mode:
        out.json({"plan": plan.to_dict(), "applied": True, "deleted": len(deleted)})


def optimize(
    table: TableArg,
    z_order: Annotated[str | None, typer.Option("--z-order", help="Comma-separated columns to cluster by.", show_default=False)] = None,
    target_size_mb: Annotated[int, typer.Option("--target-size-mb", min=1, help="Size of the rewritten files.")] = 128,
    yes: YesOpt = False, dry_run: DryRunOpt = False, wait: WaitOpt = False,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None, json_mode: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Compact small files (or z-order by columns) into fewer, larger ones.

    Example: medallion optimize silver --z-order event_id --yes
    """
    from medallion_cli import maintenance

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    ref, project = _changed_ref(table, project_dir, storage_option)
    cols = [c.strip() for c in z_order.split(",") if c.strip()] if z_order else None
    layers = [] if dry_run else maintenance.layers_writing(project, ref)
    with recorded(project, "optimize", [ref.name]), \
            maintenance.serialized(project, layers, command=f"medallion optimize {ref.name}", wait=float("inf") if wait else None):
        _optimize(out, ref, cols=cols, target_size_mb=target_size_mb, yes=yes, dry_run=dry_run, json_mode=json_mode)


def _optimize(out, ref, *, cols, target_size_mb: int, yes: bool, dry_run: bool, json_mode: bool) -> None:
    from medallion_cli import maintenance

    plan = maintenance.plan_optimize(ref, z_order=cols, target_size_mb=target_size_mb)
    how = f"z-order by {', '.join(plan.z_order)}" if plan.z_order else "compact"
    out.info(f"optimize {plan.table} ({how}): {plan.files} file(s), {plan.small_files} small, target {plan.target_size_mb} MB")
    if dry_run:
        out.unapplied(plan)
        return
    confirm(f"Optimize {plan.table}?", yes=yes)
    metrics = maintenance.apply_optimize(ref, plan)
    out.status("optimized", f"{plan.table}: {metrics.get('numFilesRemoved', '?')} file(s) rewritten into {metrics.get('numFilesAdded', '?')}")
    if json_mode:
        out.json({"plan": plan.to_dict(), "applied": True, "metrics": metrics})
