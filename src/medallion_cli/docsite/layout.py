"""A layered left-to-right layout of the lineage graph, computed in Python.

Each node gets a column (its longest path from a source: landing folders in column 0) and
a row within the column; rows are ordered by the barycenter heuristic (a few sweeps left to
right and back), which removes most edge crossings of a layered DAG, then each column (one
contiguous block) is shifted towards what it connects to. Boxes have one size, rows and
columns one pitch, so boxes never overlap, whatever the number of tables.
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
    # Rows: each column is one contiguous block (compact at any size), shifted up or down
    # towards the mean height of what its boxes connect to, within the tallest column.
    pitch = NODE_H + ROW_GAP
    tallest = max((len(c) for c in cols), default=0)
    y = {n: r * pitch for members in cols for r, n in enumerate(members)}

    def shift(members: list[str], neighbours: dict[str, list[str]]) -> None:
        pulls = [sum(y[m] for m in neighbours[n]) / len(neighbours[n]) - r * pitch
                 for r, n in enumerate(members) if neighbours[n]]
        if not pulls:
            return
        offset = min(max(sum(pulls) / len(pulls), 0.0), (tallest - len(members)) * pitch)
        for r, n in enumerate(members):
            y[n] = offset + r * pitch

    for _ in range(SWEEPS // 2):
        for c in range(1, n_cols):
            shift(cols[c], parents)
        for c in range(n_cols - 2, -1, -1):
            shift(cols[c], children)
    top = min(y.values(), default=0)
    boxes = {n: Box(n, c, r, MARGIN + c * (NODE_W + COL_GAP), MARGIN + y[n] - top)
             for c, members in enumerate(cols) for r, n in enumerate(members)}
    width = 2 * MARGIN + n_cols * NODE_W + max(n_cols - 1, 0) * COL_GAP
    height = 2 * MARGIN + max((b.y - MARGIN + NODE_H for b in boxes.values()), default=0)
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
