"""``medallion dag``: the project's tables, their inputs and incremental contracts."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer

from medallion_cli.cli.options import DebugOpt, JsonOpt, ProjectOpt, QuietOpt, StorageOpt, load, setup

if TYPE_CHECKING:
    from medallion_cli.graph import TableGraph


class DagFormat(str, Enum):
    text = "text"
    mermaid = "mermaid"
    dot = "dot"
    json = "json"


def select_tables(graph: TableGraph, names: list[str]) -> list[str]:
    """Table names, layer names or ``all`` (the default) to the tables they mean, in run order.

    Stand-in until the selection grammar (``name+``, ``+name``, ...) lands: swap this
    function for it.
    """
    from medallion_cli.errors import UsageError

    if not names or "all" in names:
        return list(graph.tables)
    layers = graph.layers
    chosen: set[str] = set()
    for name in names:
        if name in graph.tables:
            chosen.add(name)
        elif name in layers:
            chosen.update(layers[name])
        else:
            raise UsageError(f"unknown table or layer {name!r}",
                             hint=f"tables: {', '.join(graph.tables)}; layers: {', '.join(layers)}; or all")
    return graph.ordered(chosen)


def dag(
    selection: Annotated[
        list[str] | None,
        typer.Argument(help="Tables or layers to show (default: all).", show_default=False, metavar="SELECTION"),
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

    if json_mode and fmt not in (DagFormat.json, DagFormat.text):
        raise UsageError(f"--json and --format {fmt.value} ask for two formats", hint="pass one of them")
    fmt = DagFormat.json if json_mode else fmt
    out = setup(json_mode=fmt is DagFormat.json, quiet=quiet, debug=debug)
    project = load(project_dir, storage_option)
    graph = project_graph(project)
    tables = select_tables(graph, selection or [])
    view = dag_view(project, graph, tables, with_status=fmt in (DagFormat.text, DagFormat.json))
    rendered = render(view, fmt.value)
    if isinstance(rendered, dict):
        out.json(rendered)
    else:
        out.text(rendered)
