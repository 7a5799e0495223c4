"""Which tables a command works on: dbt's selector grammar over the table graph.

Two steps, kept apart as dbt-core's ``dbt/graph/`` does: :func:`parse_selection` turns the
command line's selectors into a :class:`SelectionSpec` (pure syntax, no project needed), and
:func:`select_tables` applies a spec to a :class:`~medallion_cli.graph.TableGraph`.

Grammar of one selector::

    all                    every table
    NAME                   a table, a layer tag (every table tagged so) or a pipeline
    table:NAME             only a table; also layer:NAME, pipeline:NAME
    NAME+                  NAME and everything downstream of it
    +NAME                  NAME and everything upstream of it
    +NAME+                 both

Several selectors are a union; the ``--exclude`` selectors (same grammar) are removed after.
An unqualified NAME matches every table it names as a table, a layer tag or a pipeline.
Cheap: no heavy imports.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medallion_cli.errors import UsageError

if TYPE_CHECKING:
    from medallion_cli.graph import TableGraph

ALL = "all"
METHODS = ("table", "layer", "pipeline")


@dataclass(frozen=True)
class Selector:
    """One selector: what it names and whether it grows up- or downstream."""

    value: str
    method: str | None = None  # table | layer | pipeline; None matches any of them
    parents: bool = False  # +NAME: and everything upstream
    children: bool = False  # NAME+: and everything downstream
    raw: str = ""

    def __str__(self) -> str:
        return self.raw or (("+" if self.parents else "") + (f"{self.method}:" if self.method else "") + self.value
                            + ("+" if self.children else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "method": self.method, "parents": self.parents, "children": self.children}


@dataclass(frozen=True)
class SelectionSpec:
    """Selectors to take (a union) and selectors to remove from them afterwards."""

    include: tuple[Selector, ...]
    exclude: tuple[Selector, ...] = ()

    def __str__(self) -> str:
        text = " ".join(map(str, self.include))
        return text + (" --exclude " + " ".join(map(str, self.exclude)) if self.exclude else "")

    def to_dict(self) -> dict[str, Any]:
        return {"include": [s.to_dict() for s in self.include], "exclude": [s.to_dict() for s in self.exclude]}


# -- parsing ----------------------------------------------------------------------------
def parse_selector(text: str) -> Selector:
    """One selector (``+silver_events+``, ``gold``, ``table:bronze_events``) to a :class:`Selector`."""
    raw = text.strip()
    body = raw
    parents = body.startswith("+")
    body = body[1:] if parents else body
    children = body.endswith("+")
    body = body[:-1] if children else body
    if "," in body:
        raise UsageError(f"selector {raw!r}: intersections (a,b) are not supported",
                         hint="give several selectors for a union, and --exclude SELECTOR to remove tables")
    if not body or "+" in body or "@" in body or any(c.isspace() for c in body):
        raise UsageError(f"invalid selector {raw!r}",
                         hint="use NAME, NAME+ (and downstream), +NAME (and upstream), +NAME+ or `all`")
    method = None
    prefix, sep, rest = body.partition(":")
    if sep and prefix in METHODS:
        if not rest:
            raise UsageError(f"invalid selector {raw!r}: {prefix}: names nothing", hint=f"e.g. {prefix}:NAME")
        method, body = prefix, rest
    return Selector(body, method, parents, children, raw)


def parse_selection(selectors: Iterable[str], exclude: Iterable[str] = ()) -> SelectionSpec:
    """Command-line selectors (each may hold several, separated by spaces) to a spec.

    Raises :class:`UsageError` for an invalid selector or when nothing is selected.
    """
    include = tuple(parse_selector(s) for arg in selectors for s in arg.split())
    removed = tuple(parse_selector(s) for arg in exclude for s in arg.split())
    if not include:
        raise UsageError("no tables selected", hint="name tables or layers, e.g. `all`, `silver`, `silver_events+`")
    return SelectionSpec(include, removed)


# -- selection --------------------------------------------------------------------------
def resolve(graph: TableGraph, selector: Selector) -> set[str]:
    """The tables one selector stands for (its ``+`` included).

    Raises :class:`UsageError` naming the known tables and layers if it names none.
    """
    if selector.value == ALL and selector.method is None:
        return set(graph.tables)
    method, value = selector.method, selector.value
    matched: set[str] = set()
    for node in graph.nodes:
        if ((method in (None, "table") and node.table == value)
                or (method in (None, "layer") and node.layer == value)
                or (method in (None, "pipeline") and node.pipeline == value)):
            matched.add(node.table)
    if not matched:
        raise _unknown(graph, selector)
    found = set(matched)
    for table in matched:
        if selector.parents:
            found |= graph.upstream(table)
        if selector.children:
            found |= graph.downstream(table)
    return found


def select_tables(graph: TableGraph, spec: SelectionSpec) -> list[str]:
    """The tables ``spec`` selects, in run order (producers first).

    Every selector, excluded ones too, must name something; an empty result is an error.
    """
    chosen: set[str] = set()
    for selector in spec.include:
        chosen |= resolve(graph, selector)
    removed: set[str] = set()
    for selector in spec.exclude:
        removed |= resolve(graph, selector)
    result = graph.ordered(chosen - removed)
    if not result:
        if not graph.tables:
            raise UsageError("the project has no tables", hint="add a pipeline under conf/pipelines/")
        excluded = " ".join(map(str, spec.exclude))
        included = " ".join(map(str, spec.include))
        raise UsageError(f"the selection is empty: --exclude {excluded} removes every table that {included} selects",
                         hint="exclude fewer tables, or select more")
    return result


def known_names(graph: TableGraph) -> tuple[list[str], list[str]]:
    """What a selector may name: layer tags then tables, and the pipelines not named so."""
    names = list(graph.layers)
    names += [t for t in graph.tables if t not in names]
    pipelines = [n.pipeline for n in graph.nodes if n.pipeline not in names]
    return names, pipelines


def _unknown(graph: TableGraph, selector: Selector) -> UsageError:
    what = selector.method or "table or layer"
    names, pipelines = known_names(graph)
    hint = f"known layers and tables: {', '.join(names)} (or `all`)"
    if pipelines:
        hint += f"; pipelines: {', '.join(pipelines)}"
    candidates = {"table": list(graph.tables), "layer": list(graph.layers),
                  "pipeline": [n.pipeline for n in graph.nodes]}.get(selector.method or "", names + pipelines)
    close = difflib.get_close_matches(selector.value, candidates, n=1)
    if close:
        hint = f"did you mean {close[0]!r}? " + hint
    return UsageError(f"unknown {what} {selector.value!r}", hint=hint)


def select(graph: TableGraph, selectors: Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
    """Parse and apply in one call: the tables, in run order."""
    return select_tables(graph, parse_selection(selectors, exclude))
