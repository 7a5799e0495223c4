"""``medallion run``: run layers through FlowerPower and write them to Delta."""

from __future__ import annotations

from typing import Annotated

import typer

from medallion_cli.cli.options import DebugOpt, JsonOpt, ProjectOpt, QuietOpt, setup


def run(
    layers: Annotated[list[str], typer.Argument(help="Layers to run (e.g. bronze silver), or `all`.", show_default=False, metavar="LAYER...")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override a pipeline input for this run: KEY=VALUE (YAML-typed). Repeatable.", show_default=False),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option("--executor", "-e", help="Hamilton executor: synchronous, threadpool or processpool.", show_default=False),
    ] = None,
    project_dir: ProjectOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run layers in dependency order, writing each to its Delta table.

    Example: medallion run all · medallion run gold --set rolling_window_days=14
    """
    from medallion_cli.output import run_table
    from medallion_cli.project import find_project_root, load_project
    from medallion_cli.runner import parse_overrides, run_project

    out = setup(json_mode=json_mode, quiet=quiet, debug=debug)
    project = load_project(find_project_root(project_dir))
    overrides = parse_overrides(set_ or [])

    def started(layer) -> None:
        out.status("run", f"{layer.name} → {layer.target.table} ({layer.target.mode})")

    def finished(layer) -> None:
        for warning in layer.warnings:
            out.warn(f"{layer.layer}: {warning}")
        if layer.status != "failed":
            rows = "-" if layer.rows_out is None else f"{layer.rows_out:,}"
            version = "no new version" if layer.version is None else f"version {layer.version}"
            out.status(layer.status, f"{layer.layer}: {rows} rows, {version}, {layer.duration_s:.2f}s")

    result = run_project(
        project,
        layers,
        overrides=overrides,
        executor=executor,
        on_layer_start=started,
        on_layer_done=finished,
    )
    if json_mode:
        out.json(result.to_dict())
    elif not quiet:
        out.err.print()
        out.err.print(run_table(result))
