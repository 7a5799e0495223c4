"""The project as a graph of tables: who writes each table, what it reads, in what order.

Each pipeline (``conf/pipelines/NAME.yml``) writes one table; its input is landing files or
another project table. The graph is derived from those inputs, so the run order is a
topological order and never depends on how the pipelines are listed. Cheap: no heavy imports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medallion_cli.errors import ConfigError

if TYPE_CHECKING:
    from medallion_cli.project import LayerConfig, Project


@dataclass(frozen=True)
class Edge:
    """One input of a table: landing files or an upstream table, with its incremental contract."""

    name: str  # the DAG input that receives it
    source: str  # a table name, or the landing path
    kind: str  # table | landing
    contract: str  # files | watermark | partitions | full | snapshot

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "kind": self.kind, "contract": self.contract}


@dataclass(frozen=True)
class Node:
    """A table, the pipeline that writes it and the layer it is tagged with."""

    table: str
    pipeline: str
    layer: str
    inputs: tuple[Edge, ...]
    write_mode: str

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "pipeline": self.pipeline, "layer": self.layer, "write_mode": self.write_mode,
                "inputs": [e.to_dict() for e in self.inputs]}


@dataclass(frozen=True)
class TableGraph:
    """Tables in a topological order (producers first), with their edges."""

    nodes: tuple[Node, ...]

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(n.table for n in self.nodes)

    def node(self, table: str) -> Node:
        for n in self.nodes:
            if n.table == table:
                return n
        raise KeyError(table)

    @property
    def layers(self) -> dict[str, tuple[str, ...]]:
        """Layer tag to its tables, tags in the order their first table runs."""
        return by_layer(self.nodes)

    def parents(self, table: str) -> tuple[str, ...]:
        return tuple(e.source for e in self.node(table).inputs if e.kind == "table" and e.source in self.tables)

    def children(self, table: str) -> tuple[str, ...]:
        return tuple(n.table for n in self.nodes if table in self.parents(n.table))

    def upstream(self, table: str) -> set[str]:
        """Every table ``table`` reads from, directly or not."""
        return _closure(table, self.parents)

    def downstream(self, table: str) -> set[str]:
        """Every table that reads ``table``, directly or not."""
        return _closure(table, self.children)

    def ordered(self, tables: Iterable[str]) -> list[str]:
        """``tables`` in run order."""
        wanted = set(tables)
        return [t for t in self.tables if t in wanted]

    def to_dict(self) -> dict[str, Any]:
        return {"tables": [n.to_dict() for n in self.nodes], "layers": {k: list(v) for k, v in self.layers.items()}}


def by_layer(nodes: Iterable[Node]) -> dict[str, tuple[str, ...]]:
    """Layer tag to its tables, in the nodes' order."""
    found: dict[str, list[str]] = {}
    for n in nodes:
        found.setdefault(n.layer, []).append(n.table)
    return {k: tuple(v) for k, v in found.items()}


def _closure(start: str, step) -> set[str]:
    seen: set[str] = set()
    todo = list(step(start))
    while todo:
        table = todo.pop()
        if table not in seen:
            seen.add(table)
            todo.extend(step(table))
    return seen


def node_of(layer: LayerConfig) -> Node:
    inc = layer.incremental
    contract = inc.strategy if inc is not None else "full"
    if layer.source.landing is not None:
        edge = Edge(layer.source.input_name, str(layer.source.landing), "landing", contract)
    else:
        edge = Edge(layer.source.input_name, str(layer.source.table), "table", contract)
    snapshots = tuple(Edge(x.name, x.table, "table", "snapshot" if x.on_change == "recompute" else "snapshot, changes ignored")
                      for x in layer.snapshots)
    return Node(layer.target.table, layer.name, layer.tag, (edge, *snapshots), layer.target.mode)


def build_graph(layers: Iterable[LayerConfig], *, where: str = "conf/pipelines") -> TableGraph:
    """The graph of the given pipelines, topologically ordered.

    Refused, naming the pipelines involved: two pipelines writing one table, a table named
    like a layer (selection could not tell them apart), and a cycle. A table input that no
    pipeline writes is allowed (an external Delta table) and is simply not a node.
    """
    layers = list(layers)
    writers: dict[str, list[str]] = {}
    for layer in layers:
        writers.setdefault(layer.target.table, []).append(layer.name)
    for table, names in writers.items():
        if len(names) > 1:
            raise ConfigError(f"{where}: pipelines {', '.join(map(repr, names))} all write table {table!r}",
                              hint="each table has exactly one pipeline that writes it")
    tagged: dict[str, set[str]] = {}
    for layer in layers:
        tagged.setdefault(layer.tag, set()).add(layer.target.table)
    clash = sorted(t for t in writers if t in tagged and tagged[t] != {t})
    if clash:
        raise ConfigError(f"{where}: table {clash[0]!r} has the name of a layer",
                          hint="rename the table or the layer tag: a selector must mean one thing")
    nodes = {layer.target.table: node_of(layer) for layer in layers}
    position = {layer.target.table: i for i, layer in enumerate(layers)}
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(table: str, path: list[str]) -> None:
        if state.get(table) == 2:
            return
        if state.get(table) == 1:
            cycle = path[path.index(table):] + [table]
            raise ConfigError(
                f"{where}: the tables form a cycle: " + " → ".join(t if nodes[t].pipeline == t else f"{t} (pipeline {nodes[t].pipeline})"
                                                         for t in cycle),
                hint="a table cannot read itself, directly or through others",
            )
        state[table] = 1
        parents = sorted((e.source for e in nodes[table].inputs if e.kind == "table" and e.source in nodes),
                         key=lambda t: position[t])
        for parent in parents:
            visit(parent, path + [table])
        state[table] = 2
        order.append(table)

    for table in sorted(nodes, key=lambda t: position[t]):
        visit(table, [])
    # Shallowest first (all feeds' bronze, then silver...), the listing breaking ties.
    depth: dict[str, int] = {}
    for table in order:  # parents come before children here
        parents = [e.source for e in nodes[table].inputs if e.kind == "table" and e.source in nodes]
        depth[table] = 1 + max((depth[p] for p in parents), default=-1)
    return TableGraph(tuple(nodes[t] for t in sorted(order, key=lambda t: (depth[t], position[t]))))


def project_graph(project: Project) -> TableGraph:
    return build_graph(project.layers)
