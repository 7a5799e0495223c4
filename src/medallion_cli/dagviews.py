"""``medallion dag``: the table graph as text, Mermaid, Graphviz dot and JSON.

:func:`dag_view` gathers what is shown (the selected tables, the incremental contract of
each input, and, when asked, each table's newest Delta commit); the ``render_*`` functions
are pure: they turn a :class:`DagView` into a string and never print or read anything.
Mermaid ids and dot ids are generated (``T0``, ``S0``), names only ever appear in escaped
labels, so a landing path with spaces or quotes cannot break the diagram.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from medallion_cli.errors import MedallionError
from medallion_cli.timeparse import iso_utc

if TYPE_CHECKING:
    from medallion_cli.graph import Edge, Node, TableGraph
    from medallion_cli.project import Project

FORMATS = ("text", "mermaid", "dot", "json")


@dataclass(frozen=True)
class LastCommit:
    """A table's newest Delta commit, with medallion's metadata when a run made it."""

    version: int
    operation: str | None
    time: datetime | None
    run_id: str | None  # None: not written by a medallion run (OPTIMIZE, another engine, ...)
    layer: str | None = None
    mode: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "operation": self.operation,
                "time": iso_utc(self.time) if self.time else None, "run_id": self.run_id,
                "layer": self.layer, "mode": self.mode}


@dataclass(frozen=True)
class DagEdge:
    """One input of a selected table, with its incremental contract spelled out."""

    target: str  # the table that reads it
    edge: Edge
    column: str | None = None  # watermark / partitions column
    window_days: int | str | None = None  # partitions: an int or a run input's name
    lookback: str | None = None  # watermark: late-row lookback

    @property
    def source(self) -> str:
        return self.edge.source

    @property
    def kind(self) -> str:
        return self.edge.kind

    @property
    def contract(self) -> str:
        return self.edge.contract

    @property
    def label(self) -> str:
        """``files``, ``watermark on _ingested_at``, ``partitions on event_date, window rolling_window_days``."""
        text = self.contract
        if self.column:
            text += f" on {self.column}"
        if self.lookback:
            text += f", lookback {self.lookback}"
        if self.window_days is not None:
            text += f", window {self.window_days}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {**self.edge.to_dict(), "target": self.target, "column": self.column,
                "window_days": self.window_days, "lookback": self.lookback}


@dataclass(frozen=True)
class DagView:
    """What ``medallion dag`` shows: the selected tables in run order, grouped by layer."""

    project: str
    nodes: tuple[Node, ...]  # selected, in run order
    edges: tuple[DagEdge, ...]  # the inputs of the selected tables
    last_commits: dict[str, LastCommit | None] | None = None  # None: not read (mermaid, dot)
    last_runs: dict[str, dict[str, Any]] | None = None  # table -> its newest recorded run (run records)

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(n.table for n in self.nodes)

    @property
    def layers(self) -> dict[str, tuple[str, ...]]:
        from medallion_cli.graph import by_layer

        return by_layer(self.nodes)

    def inputs(self, table: str) -> tuple[DagEdge, ...]:
        return tuple(e for e in self.edges if e.target == table)

    def sources(self) -> list[DagEdge]:
        """Inputs that are not selected tables (landing folders, unselected or external
        tables), each source once, in order of first use."""
        seen: dict[tuple[str, str], DagEdge] = {}
        for e in self.edges:
            if not (e.kind == "table" and e.source in self.tables):
                seen.setdefault((e.kind, e.source), e)
        return list(seen.values())

    def to_dict(self) -> dict[str, Any]:
        tables = []
        for n in self.nodes:
            doc: dict[str, Any] = {"table": n.table, "pipeline": n.pipeline, "layer": n.layer,
                                   "write_mode": n.write_mode, "inputs": [e.to_dict() for e in self.inputs(n.table)]}
            if self.last_commits is not None:
                last = self.last_commits.get(n.table)
                doc["exists"] = last is not None
                doc["last_commit"] = last.to_dict() if last else None
            if self.last_runs is not None:
                doc["last_run"] = self.last_runs.get(n.table)
            tables.append(doc)
        return {"project": self.project,
                "layers": [{"layer": k, "tables": list(v)} for k, v in self.layers.items()], "tables": tables,
                "edges": [{"from": e.source, "to": e.target, "kind": e.kind, "contract": e.contract, "label": e.label}
                          for e in self.edges]}


# -- gathering ------------------------------------------------------------------------
def dag_view(project: Project, graph: TableGraph, tables: list[str], *, with_status: bool) -> DagView:
    """The view of ``tables`` (in run order), with each one's newest commit if ``with_status``."""
    nodes = tuple(graph.node(t) for t in graph.ordered(tables))
    edges = tuple(_dag_edge(project, n, e) for n in nodes for e in n.inputs)
    commits = {n.table: last_commit(project, n.table) for n in nodes} if with_status else None
    runs = None
    if with_status:
        from medallion_cli.runrecords import RunRecords

        runs = RunRecords(project).last_table_runs([n.table for n in nodes])
    return DagView(project.name, nodes, edges, commits, runs)


def _dag_edge(project: Project, node: Node, edge: Edge) -> DagEdge:
    # One input per pipeline today: the pipeline's incremental settings are the edge's.
    inc = project.layer(node.pipeline).incremental
    if inc is None or inc.strategy != edge.contract:
        return DagEdge(node.table, edge)
    return DagEdge(node.table, edge, column=inc.column,
                   window_days=inc.window_days if inc.strategy == "partitions" else None,
                   lookback=inc.lookback if inc.strategy == "watermark" else None)


def last_commit(project: Project, table: str) -> LastCommit | None:
    """The newest commit of a project table, or None when it does not exist yet.

    Reads the log only (no data file) and asks it for the last history entry alone.
    """
    from medallion_cli.commits import commits_since
    from medallion_cli.delta import TableRef, open_table

    uri, store = project.table_uri(table), project.storage
    if not store.is_table(uri):
        return None
    ref = TableRef(table, uri, None, store)
    dt = open_table(ref)  # delta-rs errors (a corrupt log) become one clear line
    try:
        commits = store.call(lambda: commits_since(dt, dt.version() - 1), what=f"reading the log of {uri}", uri=uri)
    except MedallionError:
        raise
    except Exception as exc:  # delta-rs raises several types for an unreadable commit
        from medallion_cli.delta import TableError
        from medallion_cli.storage import first_line

        raise TableError(f"cannot read the last commit of {table}: {first_line(exc)}",
                         hint="the table's _delta_log may be corrupt; `medallion history TABLE` shows what is readable") from None
    if not commits:
        return None
    c = commits[-1]
    when = datetime.fromtimestamp(c.timestamp_ms / 1000, tz=timezone.utc) if c.timestamp_ms is not None else None
    return LastCommit(c.version, c.operation, when, c.run_id, c.layer, c.mode)


# -- text -----------------------------------------------------------------------------
def status_text(last: LastCommit | None) -> str:
    if last is None:
        return "never run"
    when = f" at {iso_utc(last.time.replace(microsecond=0))}" if last.time else ""
    if last.run_id:
        who = f", run {last.run_id}"
    else:  # `medallion optimize` marks its commits with a mode and no run; other engines with nothing
        who = f", medallion {last.mode}" if last.mode else " (not written by medallion)"
    return f"v{last.version} {last.operation or '?'}{when}{who}"


def render_text(view: DagView) -> str:
    """Tables grouped by layer; under each, its inputs with their contract and its last commit."""
    n_layers = len(view.layers)
    lines = [f"{view.project}: {len(view.nodes)} table(s) in {n_layers} layer(s), in run order"]
    width = max((len(t) for t in view.tables), default=0)
    # The pipeline is named only where it differs from its table.
    about = {n.table: n.write_mode if n.pipeline == n.table else f"pipeline {n.pipeline}, {n.write_mode}"
             for n in view.nodes}
    about_width = max((len(a) for a in about.values()), default=0)
    for layer, tables in view.layers.items():
        lines.append("")
        lines.append(layer)
        for table in tables:
            head = f"  {table.ljust(width)}  {about[table]}"
            if view.last_commits is not None:
                status = status_text(view.last_commits.get(table))
                run = (view.last_runs or {}).get(table)
                if run and run["status"] in ("failed", "skipped"):  # a failure commits nothing: say so first
                    why = f": {run['error']}" if run.get("error") else ""
                    status = f"{run['status'].upper()} at {run['started_at']}, run {run['run_id']}{why}; last commit {status}"
                head = f"{head.ljust(width + about_width + 4)}  last run: {status}"
            lines.append(head)
            for e in view.inputs(table):
                source = "landing " + e.source if e.kind == "landing" else e.source
                lines.append(f"    {source} → {table} [{e.label}]")
    return "\n".join(lines) + "\n"


# -- Mermaid --------------------------------------------------------------------------
_MERMAID_ESCAPES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;", "|": "#124;",
                    "\n": " ", "\r": " ", "`": "#96;"}


def mermaid_label(text: str) -> str:
    """A quoted Mermaid label: entity codes for the characters the parser or the renderer
    would take as syntax or HTML."""
    return '"' + "".join(_MERMAID_ESCAPES.get(ch, ch) for ch in text) + '"'


def render_mermaid(view: DagView) -> str:
    """``flowchart LR`` with a subgraph per layer; renders as-is in GitHub Markdown."""
    ids = {t: f"T{i}" for i, t in enumerate(view.tables)}
    lines = ["flowchart LR"]
    for i, (layer, tables) in enumerate(view.layers.items()):
        lines.append(f"  subgraph L{i}[{mermaid_label(layer)}]")
        lines.extend(f"    {ids[t]}[({mermaid_label(t)})]" for t in tables)
        lines.append("  end")
    outside = []
    for i, e in enumerate(view.sources()):
        ids[(e.kind, e.source)] = sid = f"S{i}"
        shape = f"[/{mermaid_label(e.source)}/]" if e.kind == "landing" else f"[({mermaid_label(e.source)})]"
        lines.append(f"  {sid}{shape}")
        outside.append(sid)
    for e in view.edges:
        src = ids[e.source] if e.kind == "table" and e.source in view.tables else ids[(e.kind, e.source)]
        lines.append(f"  {src} -->|{mermaid_label(e.label)}| {ids[e.target]}")
    if outside:
        lines.append("  classDef outside stroke-dasharray: 5 5")
        lines.append(f"  class {','.join(outside)} outside")
    return "\n".join(lines) + "\n"


# -- Graphviz dot ---------------------------------------------------------------------
def dot_quote(text: str) -> str:
    """A DOT quoted string: backslashes doubled (``\\N`` and ``\\G`` would expand in a label),
    quotes escaped, line breaks as ``\\n``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "\\n") + '"'


def render_dot(view: DagView) -> str:
    """A ``digraph`` with a ``cluster`` per layer; ``dot -Tsvg`` renders it as-is."""
    ids = {t: f"t{i}" for i, t in enumerate(view.tables)}
    lines = [f"digraph {dot_quote(view.project)} {{", "  rankdir=LR;",
             '  node [shape=cylinder, fontname="Helvetica"];', '  edge [fontname="Helvetica", fontsize=10];']
    for i, (layer, tables) in enumerate(view.layers.items()):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f"    label={dot_quote(layer)};")
        lines.extend(f"    {ids[t]} [label={dot_quote(t)}];" for t in tables)
        lines.append("  }")
    for i, e in enumerate(view.sources()):
        ids[(e.kind, e.source)] = sid = f"s{i}"
        shape = "folder" if e.kind == "landing" else "cylinder"
        lines.append(f"  {sid} [label={dot_quote(e.source)}, shape={shape}, style=dashed];")
    for e in view.edges:
        src = ids[e.source] if e.kind == "table" and e.source in view.tables else ids[(e.kind, e.source)]
        lines.append(f"  {src} -> {ids[e.target]} [label={dot_quote(e.label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(view: DagView, fmt: str) -> str | dict[str, Any]:
    """The view in ``fmt`` (one of :data:`FORMATS`): a string, or a dict for ``json``."""
    if fmt == "json":
        return view.to_dict()
    return {"text": render_text, "mermaid": render_mermaid, "dot": render_dot}[fmt](view)
