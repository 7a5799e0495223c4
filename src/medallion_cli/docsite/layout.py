"""A layered left-to-right layout of the lineage graph, computed in Python.

Each node gets a column (its longest path from a source: landing folders in column 0) and
a row within the column; rows are ordered by the barycenter heuristic (a few sweeps left to
right and back), which removes most edge crossings of a layered DAG. Boxes have one size
and columns one pitch, so boxes never overlap, whatever the number of tables.
"""

from __future__ import annotations

from dataclasses import dataclass

NODE_W = 184
NODE_H = 54
COL_GAP = 164  # room for a two-line edge label between columns
ROW_GAP = 22
MARGIN = 14
SWEEPS = 6


@dataclass(frozen=True)
class Box:
    id: str  # a table name, or "source:<name>"
    column: int
    row: int
    x: float
    y: float
    w: float = NODE_W
    h: float = NODE_H


@dataclass(frozen=True)
class Layout:
    boxes: dict[str, Box]
    width: float
    height: float


def layout(nodes: list[str], edges: list[tuple[str, str]]) -> Layout:
    """Place ``nodes`` (ids, in a topological order) given ``edges`` (source id, target id)."""
    parents: dict[str, list[str]] = {n: [] for n in nodes}
    children: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a in parents and b in parents:
            parents[b].append(a)
            children[a].append(b)
    column: dict[str, int] = {}
    for n in nodes:  # topological order: parents are placed first
        column[n] = 1 + max((column[p] for p in parents[n] if p in column), default=-1)
    n_cols = 1 + max(column.values(), default=0)
    cols: list[list[str]] = [[n for n in nodes if column[n] == c] for c in range(n_cols)]

    def order_by(neighbours: dict[str, list[str]], fixed: list[str], moving: list[str]) -> list[str]:
        pos = {n: i for i, n in enumerate(fixed)}
        keyed = []
        for i, n in enumerate(moving):
            near = [pos[m] for m in neighbours[n] if m in pos]
            keyed.append((sum(near) / len(near) if near else float(i), i, n))
        return [n for _, _, n in sorted(keyed)]

    for sweep in range(SWEEPS):
        if sweep % 2 == 0:
            for c in range(1, n_cols):
                cols[c] = order_by(parents, cols[c - 1], cols[c])
        else:
            for c in range(n_cols - 2, -1, -1):
                cols[c] = order_by(children, cols[c + 1], cols[c])
    tallest = max((len(c) for c in cols), default=0)
    boxes = {}
    for c, members in enumerate(cols):
        # centre short columns against the tallest one
        offset = (tallest - len(members)) * (NODE_H + ROW_GAP) / 2
        for r, n in enumerate(members):
            boxes[n] = Box(n, c, r, MARGIN + c * (NODE_W + COL_GAP), MARGIN + offset + r * (NODE_H + ROW_GAP))
    width = 2 * MARGIN + n_cols * NODE_W + max(n_cols - 1, 0) * COL_GAP
    height = 2 * MARGIN + tallest * NODE_H + max(tallest - 1, 0) * ROW_GAP
    return Layout(boxes, width, height)


def crossings(lay: Layout, edges: list[tuple[str, str]]) -> int:
    """Edge crossings between adjacent columns (for tests and tuning)."""
    spans = [(lay.boxes[a], lay.boxes[b]) for a, b in edges if a in lay.boxes and b in lay.boxes]
    count = 0
    for i, (a1, b1) in enumerate(spans):
        for a2, b2 in spans[i + 1:]:
            if a1.column == a2.column and b1.column == b2.column and (a1.row - a2.row) * (b1.row - b2.row) < 0:
                count += 1
    return count
