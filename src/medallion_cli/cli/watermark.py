"""``medallion watermark``: show and change incremental-load watermarks."""

from __future__ import annotations

from typing import Annotated

import typer

from medallion_cli.cli.options import (DebugOpt, DryRunOpt, JsonOpt, ProjectOpt, QuietOpt, StorageOpt, WaitOpt, YesOpt, confirm,
                                       load, setup)

app = typer.Typer(
    help="Show and change the watermarks of incremental tables (kept in .medallion/state.duckdb).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

TableArg = Annotated[str, typer.Argument(help="Table (e.g. silver_events) or its layer (e.g. silver).", show_default=False)]


def _project(project_dir, storage_option=None):
    return load(project_dir, storage_option)


@app.command("show")
def show(
    table: Annotated[str | None, typer.Argument(help="Only this table (or layer).", show_default=False)] = None,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show watermarks: table, column, value, when and by which run they were set.

    Example: medallion watermark show · medallion watermark show silver --json
    """
    from medallion_cli import watermarks
    from medallion_cli.output import watermark_table

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    found = watermarks.show(_project(project_dir, storage_option), table)
    out.report({"watermarks": [w.to_dict() for w in found]}, [watermark_table(found)])


@app.command("history")
def history(
    table: TableArg,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="Newest N changes.")] = None,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Every change of a table's watermark, newest first (an audit trail).

    Example: medallion watermark history silver_events --limit 10
    """
    from medallion_cli import watermarks
    from medallion_cli.output import watermark_history_table

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    changes = watermarks.history(_project(project_dir, storage_option), table, limit=limit)
    out.report({"history": [c.to_dict() for c in changes]}, [watermark_history_table(changes)])


def _serialized(project, layers: list[str], command: str, *, wait: bool, dry_run: bool = False):
    """Hold the layers' run locks, so that a run in flight cannot undo the change (not for --dry-run)."""
    from medallion_cli.maintenance import serialized

    return serialized(project, [] if dry_run else layers, command=command, wait=float("inf") if wait else None)


def _apply(project, plan, *, yes: bool, dry_run: bool, json_mode: bool, out) -> None:
    from medallion_cli import watermarks

    out.info(f"{plan.action} watermark of {plan.table} ({plan.column}): {plan.old_value or '(none)'} -> {plan.new_value or '(none)'}")
    out.info(f"effect: {plan.effect}")
    if dry_run:
        out.unapplied(plan)
        return
    confirm(f"{plan.action.capitalize()} the watermark of {plan.table}?", yes=yes)
    watermarks.apply(project, plan)
    out.status("updated", plan.table)
    if json_mode:
        out.json({"plan": plan.to_dict(), "applied": True})


@app.command("set")
def set_(
    table: TableArg,
    value: Annotated[str, typer.Argument(help="New value: a timestamp (ISO or '2 days ago') or, for partition layers, a source version.", show_default=False)],
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    wait: WaitOpt = False,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Set a watermark: the next run reads the source from there on.

    Example: medallion watermark set silver_events 2024-06-01T00:00:00Z --yes
    """
    from medallion_cli import watermarks

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    project = _project(project_dir, storage_option)
    layer = watermarks.resolve(project, table)
    with _serialized(project, [layer.name], f"medallion watermark set {layer.target.table}", wait=wait, dry_run=dry_run):
        _apply(project, watermarks.plan_set(project, table, value), yes=yes, dry_run=dry_run, json_mode=json_mode, out=out)


@app.command("reset")
def reset(
    table: TableArg,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    wait: WaitOpt = False,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Clear a watermark: the next run processes the whole source again.

    Example: medallion watermark reset gold_daily_sales --dry-run
    """
    from medallion_cli import watermarks

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    project = _project(project_dir, storage_option)
    layer = watermarks.resolve(project, table)
    with _serialized(project, [layer.name], f"medallion watermark reset {layer.target.table}", wait=wait, dry_run=dry_run):
        _apply(project, watermarks.plan_reset(project, table), yes=yes, dry_run=dry_run, json_mode=json_mode, out=out)


@app.command("repair")
def repair(
    dry_run: DryRunOpt = False,
    wait: WaitOpt = False,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Rebuild watermarks and ingested-file lists from the Delta logs and report what changed.

    Example: medallion watermark repair --dry-run
    """
    from medallion_cli import watermarks
    from medallion_cli.output import repair_table

    from medallion_cli.state import StateStore

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    project = _project(project_dir, storage_option)
    with _serialized(project, list(project.layer_names), "medallion watermark repair", wait=wait, dry_run=dry_run):
        set_aside = None if dry_run else StateStore(project.state_path).set_aside_if_corrupt()
        if set_aside is not None:
            out.info(f"the state file was corrupt: moved it to {set_aside}; rebuilding it from the Delta logs")
        reports = watermarks.repair(project, dry_run=dry_run)
    out.report({"repair": [r.to_dict() for r in reports], "dry_run": dry_run,
                "corrupt_state_moved_to": str(set_aside) if set_aside else None}, [repair_table(reports)])
