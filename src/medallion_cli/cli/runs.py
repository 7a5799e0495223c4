"""``medallion runs`` (list, show) and ``medallion retry``: the run records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medallion_cli.cli.options import DebugOpt, JsonOpt, ProjectOpt, QuietOpt, StorageOpt, YesOpt, confirm, load, setup

app = typer.Typer(
    help="Recorded runs (and verify, restore, vacuum, optimize), newest first.\n\n"
    "Example: medallion runs --status failed --since '7 days ago' · medallion runs show 20261128T063400Z-3f9a1c --json",
    no_args_is_help=False,
    invoke_without_command=True,
    rich_markup_mode=None,
)


@app.callback()
def runs(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most this many runs.")] = 20,
    status: Annotated[str | None, typer.Option("--status", help="Only runs with this status: running, succeeded, failed, "
                                               "interrupted.", show_default=False)] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only runs started at or after this time (ISO, or e.g. "
                                              "'7 days ago').", show_default=False)] = None,
    project_dir: ProjectOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List recorded runs, newest first (`runs show RUN_ID` shows one, per table).

    Example: medallion runs --limit 5 · medallion runs --status failed --json
    """
    if ctx.invoked_subcommand is not None:
        return
    from medallion_cli.output import runs_table
    from medallion_cli.runrecords import RunRecords
    from medallion_cli.timeparse import parse_time

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    found = RunRecords(load(project_dir)).list(limit=limit, status=status,
                                                since=parse_time(since, what="--since") if since else None)
    out.report({"runs": found}, [runs_table(found)])


@app.command("show")
def show(
    run_id: Annotated[str | None, typer.Argument(help="The run id, or a unique beginning of it (default: the newest run).",
                                                 show_default=False)] = None,
    project_dir: ProjectOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show one recorded run, per table (the document `run --json` prints).

    Example: medallion runs show 20261128T063400Z-3f9a1c --json
    """
    from medallion_cli.output import run_record_tables
    from medallion_cli.runrecords import RunRecords

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    doc = RunRecords(load(project_dir)).show(run_id)
    out.report(doc, run_record_tables(doc))


def retry(
    run_id: Annotated[str | None, typer.Argument(help="The run to retry, or a unique beginning of its id (default: the "
                                                 "last run).", show_default=False)] = None,
    threads: Annotated[int | None, typer.Option("--threads", "-j", min=1, help="Tables run at once (default: as the run "
                                                "did).", show_default=False, metavar="N")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="If another run holds a layer, wait for it instead of failing.")] = False,
    output_json: Annotated[Path | None, typer.Option("--output-json", help="Also write the retry's run document to this "
                                                     "file.", show_default=False, metavar="PATH")] = None,
    yes: YesOpt = False,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run again only the tables that failed, were skipped or never finished in a run, with
    its selection and overrides. Tables that succeeded are not touched.

    Exit 0 with a message when nothing is left to retry.

    Example: medallion retry · medallion retry 20261128T063400Z-3f9a1c --json
    """
    from medallion_cli.cli.run import execute
    from medallion_cli.runrecords import plan_retry, retry_options
    from medallion_cli.selection import parse_selection

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    project = load(project_dir, storage_option)
    plan = plan_retry(project, run_id)
    if not plan.tables:
        out.status("nothing", f"run {plan.run_id} {plan.status}: no table to retry")
        if json_mode:
            out.json({**plan.to_dict(), "retried": False})
        return
    options = retry_options(project, plan, wait=float("inf") if wait else None, threads=threads)
    out.info(f"retrying {len(plan.tables)} table(s) of run {plan.run_id} ({plan.status}): {', '.join(plan.tables)}")
    if options.full_refresh:
        confirm("Reprocess everything for " + ", ".join(plan.tables) + " (tables are overwritten)?", yes=yes)
    execute(out, project, parse_selection(list(plan.tables)), options, json_mode=json_mode, quiet=quiet,
            output_json=output_json, command="retry", retry_of=plan.run_id)


def recorded(project, command: str, tables: list[str] | tuple = (), options: dict | None = None):
    """Record a command at run level (a no-op for a table outside any project)."""
    import contextlib

    from medallion_cli.cli.options import State
    from medallion_cli.runrecords import recording

    if project is None:
        return contextlib.nullcontext()
    return recording(project, command, State.argv, tables=list(tables), options=options)
