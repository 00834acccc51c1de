"""A pipeline's DAG laid out for SVG: columns by depth (longest path from a root), rows in
order, and wide fan-outs collapsed so a 200-step graph stays readable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from modelyard.pipelines.states import RunState, StepState

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 150.0, 34.0, 50.0, 14.0, 10.0
MAX_ROWS = 12
"""Columns taller than this show their first rows and one node for the rest."""


@dataclass(frozen=True)
class Node:
    id: str
    label: str
    state: str
    x: float
    y: float
    hidden: int = 0
    """How many steps this node stands for beyond itself (a collapsed fan-out)."""


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[float, float, float, float]] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0
    w: float = NODE_W
    h: float = NODE_H


def layout(nodes: Sequence[str], edges: Sequence[tuple[str, str]], states: dict[str, str]) -> Graph:
    known = set(nodes)
    parents: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a in known and b in known:
            parents[b].append(a)
    depth: dict[str, int] = {}

    def depth_of(node: str, seen: frozenset[str] = frozenset()) -> int:
        if node not in depth:
            if node in seen:  # a cycle never validates; draw it flat rather than recurse
                return 0
            depth[node] = 1 + max((depth_of(p, seen | {node}) for p in parents[node]), default=-1)
        return depth[node]

    columns: dict[int, list[str]] = {}
    for node in nodes:
        columns.setdefault(depth_of(node), []).append(node)
    graph = Graph()
    where: dict[str, tuple[float, float]] = {}
    for col, members in sorted(columns.items()):
        x = PAD + col * (NODE_W + GAP_X)
        shown, rest = members[:MAX_ROWS], members[MAX_ROWS:]
        for row, node in enumerate(shown):
            y = PAD + row * (NODE_H + GAP_Y)
            where[node] = (x, y)
            graph.nodes.append(Node(node, node, states.get(node, StepState.PENDING), x, y))
        if rest:
            y = PAD + len(shown) * (NODE_H + GAP_Y)
            shown_state = summary([states.get(n, StepState.PENDING) for n in rest])
            graph.nodes.append(
                Node(f"+{len(rest)}", f"+{len(rest)} more", shown_state, x, y, hidden=len(rest))
            )
            for node in rest:
                where[node] = (x, y)
        graph.height = max(graph.height, PAD * 2 + (len(shown) + bool(rest)) * (NODE_H + GAP_Y))
        graph.width = max(graph.width, x + NODE_W + PAD)
    drawn = set()
    for a, b in edges:
        if a in where and b in where and (where[a], where[b]) not in drawn:
            drawn.add((where[a], where[b]))
            (ax, ay), (bx, by) = where[a], where[b]
            graph.edges.append((ax + NODE_W, ay + NODE_H / 2, bx, by + NODE_H / 2))
    return graph


def summary(states: list[str]) -> str:
    """The state a group shows (a collapsed fan-out, a loop's iterations): the most urgent of
    its members', so it reads succeeded only when all did."""
    urgent = (
        StepState.FAILED,
        StepState.RUNNING,
        StepState.RETRYING,
        StepState.PENDING,
        RunState.QUEUED,
    )
    for state in urgent:
        if state in states:
            return state
    return states[0] if states else StepState.PENDING
