"""``medallion dag``: the project's tables, their inputs and incremental contracts."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from medallion_cli.cli.options import DebugOpt, JsonOpt, ProjectOpt, QuietOpt, StorageOpt, load, setup


class DagFormat(str, Enum):
    text = "text"
    mermaid = "mermaid"
    dot = "dot"
    json = "json"


def dag(
    selection: Annotated[
        list[str] | None,
        typer.Argument(help="Selectors as for `run`: tables, layers, NAME+, +NAME (default: all).", show_default=False,
                       metavar="SELECTOR..."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", help="Leave out what this selector selects. Repeatable.", show_default=False),
    ] = None,
    fmt: Annotated[
        DagFormat,
        typer.Option("--format", "-f", help="text (with each table's last run), mermaid, dot (Graphviz) or json.",
                     case_sensitive=False),
    ] = DagFormat.text,
    storage_option: StorageOpt = None,
    project_dir: ProjectOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show the table graph: tables by layer, each input with its incremental contract, and
    (text, json) each table's last run, read from its newest Delta commit.

    Example: medallion dag · medallion dag silver gold --format mermaid · medallion dag --format dot | dot -Tsvg > dag.svg
    """
    from medallion_cli.dagviews import dag_view, render
    from medallion_cli.errors import UsageError
    from medallion_cli.graph import project_graph
    from medallion_cli.selection import select

    if json_mode and fmt not in (DagFormat.json, DagFormat.text):
        raise UsageError(f"--json and --format {fmt.value} ask for two formats", hint="pass one of them")
    fmt = DagFormat.json if json_mode else fmt
    out = setup(json_mode=fmt is DagFormat.json, quiet=quiet, debug=debug)
    project = load(project_dir, storage_option)
    graph = project_graph(project)
    tables = select(graph, selection or ["all"], exclude or [])
    view = dag_view(project, graph, tables, with_status=fmt in (DagFormat.text, DagFormat.json))
    rendered = render(view, fmt.value)
    if isinstance(rendered, dict):
        out.json(rendered)
    else:
        out.text(rendered)
