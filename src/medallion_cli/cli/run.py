"""``medallion run``: run layers through FlowerPower and write them to Delta."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medallion_cli.cli.options import DebugOpt, JsonOpt, ProjectOpt, QuietOpt, StorageOpt, YesOpt, confirm, load, setup


def run(
    layers: Annotated[
        list[str],
        typer.Argument(help="What to run: `all`, a layer (silver), a table (silver_events), a pipeline; NAME+ adds "
                       "everything downstream, +NAME everything upstream.", show_default=False, metavar="SELECTOR..."),
    ],
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", help="Leave out what this selector names (same grammar). Repeatable.",
                     show_default=False, metavar="SELECTOR"),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override a pipeline input for this run: KEY=VALUE (YAML-typed), every selected "
                     "pipeline that declares KEY; TABLE.KEY=VALUE for one pipeline (or its table). Repeatable.",
                     show_default=False),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option("--executor", "-e", help="Hamilton executor: synchronous, threadpool or processpool.", show_default=False),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option("--engine", help="Where work units (medallion.partition) run: local (default) or ray (Ray tasks; needs "
                     "`pip install 'medallion-cli[ray]'`). Overrides medallion.engine.", show_default=False),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Backfill from this time (inclusive): ISO date/timestamp (UTC) or e.g. '7 days ago'.", show_default=False),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Backfill up to this time (exclusive). The stored watermark does not move.", show_default=False),
    ] = None,
    full_refresh: Annotated[bool, typer.Option("--full-refresh", help="Reprocess everything for the selected layers (asks first).")] = False,
    plan_only: Annotated[bool, typer.Option("--plan", "--dry-run", help="Print what each layer would read and write; change nothing.")] = False,
    quality_policy: Annotated[
        str | None,
        typer.Option("--quality-policy", help="Override every quality gate's policy for this run: fail, drop or quarantine "
                     "(e.g. to set aside rows a `fail` gate stopped on).", show_default=False),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="If another run holds a layer, wait for it instead of failing.")] = False,
    threads: Annotated[
        int | None,
        typer.Option("--threads", "-j", min=1, help="Tables run at once (default: the number of cores, at most 4); "
                     "a table starts when the tables it reads have succeeded. 1 runs them one after another.",
                     show_default=False, metavar="N"),
    ] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Start no table after the first failure (running ones "
                                            "finish). Without it only the tables downstream of a failure are skipped.")] = False,
    output_json: Annotated[
        Path | None,
        typer.Option("--output-json", help="Also write the run document (as `runs show --json` prints it) to this file, "
                     "for CI artifacts. Always written to .medallion/runs/RUN_ID.json as well.",
                     show_default=False, metavar="PATH"),
    ] = None,
    yes: YesOpt = False,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run the selected tables in dependency order, each processing only what is new.

    Independent tables run at the same time (--threads). A failed table skips the tables
    downstream of it; the others still run and commit (--fail-fast stops at the first).

    Selectors (dbt's grammar): `all`, a layer tag (`silver`: every table tagged silver), a
    table (`silver_events`) or pipeline name, `NAME+` (and everything downstream), `+NAME`
    (and everything upstream), `+NAME+`; several are a union, `--exclude` removes after.

    Example: medallion run all · medallion run all --threads 1 --fail-fast ·
    medallion run silver_events+ --exclude gold ·
    medallion run gold --set gold_daily_sales.rolling_window_days=14 ·
    medallion run silver --since 2024-01-01 --until 2024-02-01
    """
    from medallion_cli.incremental import Window
    from medallion_cli.output import plan_table
    from medallion_cli.runner import RunOptions, count_rows, parse_overrides, plan_project
    from medallion_cli.selection import parse_selection

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    project = load(project_dir, storage_option)
    selection = parse_selection(layers, exclude or [])
    window = Window.parse(since, until)
    options = RunOptions(
        overrides=parse_overrides(set_ or []),
        executor=executor,
        window=window,
        full_refresh=full_refresh,
        wait=float("inf") if wait else None,
        quality_policy=quality_policy,
        threads=threads,
        fail_fast=fail_fast,
        engine=engine,
    )
    if window:
        out.info(f"backfill window {window.describe()} (UTC)")

    if plan_only or full_refresh:
        plans = plan_project(project, selection, options=options)
        rows = {p.layer.name: count_rows(project, p) for p in plans}
        if json_mode and plan_only:
            out.json({"plan": [{**p.to_dict(), "source_rows": rows[p.layer.name]} for p in plans]})
        elif not quiet or plan_only:
            out.table(plan_table(plans, rows), to_stderr=not plan_only)
        if plan_only:
            return
        confirm(
            "Reprocess everything for " + ", ".join(p.layer.name for p in plans) + " (tables are overwritten)?",
            yes=yes,
        )

    execute(out, project, selection, options, json_mode=json_mode, quiet=quiet, output_json=output_json)


def execute(out, project, selection, options, *, json_mode: bool, quiet: bool, output_json: Path | None,
            command: str = "run", retry_of: str | None = None) -> None:
    """Run and record the selection, render it, write the run document (shared by retry)."""
    from medallion_cli.cli.options import State
    from medallion_cli.output import run_table
    from medallion_cli.runner import RunFailedError, run_project
    from medallion_cli.runrecords import Recorder, write_document

    from medallion_cli.hooks import fire, load_hooks

    hooks = load_hooks(project)  # a bad hook configuration stops the run before it starts
    recorder = Recorder(project, command, State.argv, retry_of=retry_of)

    def notify(doc: dict) -> None:
        for outcome in fire(project, doc, hooks):
            if not outcome.ok:
                out.warn(f"hook {outcome.hook.name} failed: {outcome.error} (the run's outcome is unchanged)")

    progress = out.run_progress()  # live per-table lines on a terminal; nothing otherwise

    def started(layer) -> None:
        out.status("run", layer.name if layer.name == layer.target.table else f"{layer.name} → {layer.target.table}")
        progress.start(layer.target.table)

    def finished(layer) -> None:
        for warning in layer.warnings:
            out.warn(f"{layer.layer}: {warning}")
        if layer.quality:
            out.status("checked", f"{layer.layer}: {layer.quality.summary()}")
            for c in layer.quality.checks:
                samples = ", ".join("null" if v is None else str(v) for v in c.samples)
                out.info(f"           {c.schema}: {c.column} {c.check}: {c.rows:,} row(s), e.g. {samples}")
        if layer.status in ("failed", "skipped"):
            out.status(layer.status, f"{layer.layer}: {layer.error}")
        else:
            rows = "-" if layer.rows_out is None else f"{layer.rows_out:,}"
            version = "no new version" if layer.version is None else f"version {layer.version}"
            out.status(layer.status, f"{layer.layer}: {layer.window}: {rows} rows, {version}, {layer.duration_s:.2f}s")
        progress.done(layer.table, layer.status, "" if layer.rows_out is None else f"{layer.rows_out:,} rows")

    try:
        with progress:
            result = run_project(project, selection, options=options, on_layer_start=started, on_layer_done=finished,
                                 on_plan=lambda layers: progress.plan([(x.name, x.target.table) for x in layers]),
                                 recorder=recorder)
    except RunFailedError as exc:  # the summary of what ran, then the error (and --json) from cli.app.main
        if output_json is not None:
            write_document(exc.result.to_dict(), output_json)
        if not json_mode and not quiet:
            out.err.print()
            out.err.print(run_table(exc.result))
        notify(exc.result.to_dict())
        raise
    if output_json is not None:
        write_document(result.to_dict(), output_json)
    notify(result.to_dict())
    if result.storage_retries:
        out.warn(f"{result.storage_retries} transient object-store fault(s) were retried")
    if json_mode:
        out.json(result.to_dict())
    elif not quiet:
        out.err.print()
        out.err.print(run_table(result))
