"""A run's graph as pure logic: which nodes exist, which may start, which never will, and why.

A task becomes one node, or one node per item when it is a fan-out (``task[i]``); a fan-out's
nodes exist once its items are known (the result of the task that lists them). A node is *ready*
when every upstream node is done and succeeded (or came from the cache) and its conditions hold;
it is ``upstream_failed`` when an upstream node failed or was cancelled, ``skipped`` when an
upstream node was skipped or a condition is false, and ``failed`` when a condition cannot be
compared. Inside one fan-out, iteration ``i`` of a task waits only for iteration ``i`` of the
tasks before it. The graph holds no clock and no database: the executor passes the monotonic time
and records what it decides, so every rule here is tested in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from modelyard.pipelines.spec import ArtifactSource, PipelineSpec, StepSpec, TaskSpec, Value
from modelyard.pipelines.states import STEP_DONE, STEP_OK, StepState
from modelyard.pipelines.validate import validate

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}

Verdict = Literal["ready", "wait"] | tuple[StepState, str]
"""What :meth:`RunGraph.readiness` decides: start it, wait, or settle it as (state, reason)."""


@dataclass
class Node:
    """One schedulable unit: a task, or one iteration of a task inside a fan-out."""

    id: str
    task: TaskSpec
    iteration: int | None
    state: StepState = StepState.PENDING
    attempt: int = 0
    step_run_id: int | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    ready_at: float = 0.0
    """The monotonic time a node in ``retrying`` may start again."""


def iteration_of(node_id: str) -> int | None:
    """The fan-out iteration a node id names (``train[2]`` -> 2), None for a plain task."""
    return int(node_id[node_id.rindex("[") + 1 : -1]) if node_id.endswith("]") else None


@dataclass
class RunGraph:
    """The nodes of one run over its spec and parameters; nodes appear as the run unfolds."""

    spec: PipelineSpec
    params: dict[str, Any]
    order: list[str]
    """Task ids in a runnable order (upstream first)."""
    nodes: dict[str, Node] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: PipelineSpec, params: dict[str, Any]) -> RunGraph:
        """A graph with no node yet; raises InvalidInput for a spec that cannot run."""
        return cls(spec, dict(params), validate(spec))

    def restore(
        self,
        node_id: str,
        task_id: str,
        state: str,
        attempt: int,
        step_run_id: int | None,
        outputs: dict[str, Any],
    ) -> Node:
        """Put back a node a previous executor recorded (the last record of a node wins)."""
        node = Node(
            node_id,
            self.spec.task(task_id),
            iteration_of(node_id),
            StepState(state),
            attempt,
            step_run_id,
            dict(outputs),
        )
        self.nodes[node_id] = node
        return node

    def step(self, node: Node) -> StepSpec:
        return self.spec.steps[node.task.step]

    # which nodes exist ----------------------------------------------------------------------------
    def expand(self, task: TaskSpec) -> list[Node]:
        """The task's nodes: one, one per fan-out item, or none while the items are unknown
        (a fan-out whose items can never come has none for good: see :meth:`blocked`)."""
        if task.loop is None:
            return [self.nodes.setdefault(task.id, Node(task.id, task, None))]
        items = self.items(task) if not self.blocked(task.id) else []
        if items is None:
            return []
        return [
            self.nodes.setdefault(f"{task.id}[{i}]", Node(f"{task.id}[{i}]", task, i))
            for i in range(len(items))
        ]

    def items(self, task: TaskSpec) -> list[Any] | None:
        """A fan-out's items, None while its source has not succeeded (or gave no list)."""
        assert task.loop is not None
        value = self.value(task.loop.items, None)
        return value if isinstance(value, list) else None

    def blocked(self, task_id: str) -> bool:
        """A fan-out whose items come from a task that will never succeed never expands."""
        task = self.spec.task(task_id)
        source = task.loop.items.task if task.loop else None
        node = self.nodes.get(source) if source else None
        return node is not None and node.state in STEP_DONE - STEP_OK

    def expanded(self) -> bool:
        """Whether every fan-out that can expand has."""
        return all(
            self.items(self.spec.task(t)) is not None
            for t in self.order
            if self.spec.task(t).loop is not None and not self.blocked(t)
        )

    def upstream(self, node: Node) -> list[Node] | None:
        """The nodes ``node`` waits for; None while a fan-out among them has not expanded."""
        found: list[Node] = []
        for up_id in self.spec.upstream(node.task):
            up = self.spec.task(up_id)
            if (
                up.loop is not None
                and node.task.loop is not None
                and up.loop.id == node.task.loop.id
            ):
                key = f"{up.id}[{node.iteration}]"
                found.append(self.nodes.setdefault(key, Node(key, up, node.iteration)))
            else:
                group = self.expand(up)
                if up.loop is not None and self.blocked(up.id):
                    # No iteration will ever exist: what collects them waits on (and settles
                    # like) the task whose failure or skip left the fan-out without items.
                    assert up.loop.items.task is not None
                    group = [self.nodes[up.loop.items.task]]
                elif up.loop is not None and self.items(up) is None:
                    return None
                found.extend(group)
        return found

    def ancestors(self, node: Node) -> list[Node]:
        """Every node ``node`` depends on, directly or not."""
        seen: dict[str, Node] = {}
        stack = [node]
        while stack:
            for up in self.upstream(stack.pop()) or []:
                if up.id not in seen:
                    seen[up.id] = up
                    stack.append(up)
        return list(seen.values())

    # what may run ---------------------------------------------------------------------------------
    def candidates(self, now: float) -> Iterator[Node]:
        """Nodes that wait to start (pending, or retrying with its backoff over at ``now``), in
        task order. Lazy: a state the caller records for one node is seen by the next."""
        for task_id in self.order:
            for node in self.expand(self.spec.task(task_id)):
                if node.state == StepState.PENDING or (
                    node.state == StepState.RETRYING and node.ready_at <= now
                ):
                    yield node

    def readiness(self, node: Node) -> Verdict:
        """Whether ``node`` may start now, must wait, or is settled without running."""
        upstream = self.upstream(node)
        if upstream is None or any(u.state not in STEP_DONE for u in upstream):
            return "wait"
        bad = [
            u
            for u in upstream
            if u.state in (StepState.FAILED, StepState.UPSTREAM_FAILED, StepState.CANCELLED)
        ]
        if bad:
            return (StepState.UPSTREAM_FAILED, f"upstream {bad[0].id} {bad[0].state}")
        skipped = [u for u in upstream if u.state == StepState.SKIPPED]
        if skipped:
            return (StepState.SKIPPED, f"upstream {skipped[0].id} was skipped")
        for condition in node.task.conditions:
            left = self.value(condition.left, node.iteration)
            right = self.value(condition.right, node.iteration)
            try:
                holds = bool(_OPS[condition.op](left, right))
            except TypeError as exc:
                return (StepState.FAILED, f"condition {left!r} {condition.op} {right!r}: {exc}")
            if not holds:
                return (StepState.SKIPPED, f"condition {left!r} {condition.op} {right!r} is false")
        return "ready"

    def settled(self) -> bool:
        """Whether every node is done and every fan-out expanded: the run may end."""
        groups = [self.expand(self.spec.task(t)) for t in self.order]
        return all(n.state in STEP_DONE for group in groups for n in group) and self.expanded()

    # values ---------------------------------------------------------------------------------------
    def value(self, value: Value, iteration: int | None) -> Any:
        """What ``value`` is now: a run parameter, a task's result (None until it succeeded),
        this iteration's fan-out item, or a constant."""
        if value.param is not None:
            return self.params.get(value.param)
        if value.task is not None:
            up = self.spec.task(value.task)
            key = f"{up.id}[{iteration}]" if up.loop is not None else up.id
            node = self.nodes.get(key)
            return node.outputs.get("result") if node and node.state in STEP_OK else None
        if value.loop is not None:
            task = next(t for t in self.spec.tasks if t.loop and t.loop.id == value.loop)
            items = self.items(task)
            return items[iteration] if items is not None and iteration is not None else None
        return value.const

    def params_for(self, node: Node) -> dict[str, Any]:
        """The step's parameters for ``node``: the task's values, the step's defaults."""
        given = {name: self.value(v, node.iteration) for name, v in node.task.params.items()}
        return {p.name: given.get(p.name, p.default) for p in self.step(node).params}

    def upstream_artifacts(self, node: Node, source: ArtifactSource) -> Any:
        """The stored record of an upstream output ``node`` reads (a list for ``collect``)."""
        assert source.task is not None and source.output is not None
        up = self.spec.task(source.task)
        if source.collect:
            return [n.outputs["artifacts"][source.output] for n in self.expand(up)]
        key = f"{up.id}[{node.iteration}]" if up.loop is not None else up.id
        return self.nodes[key].outputs["artifacts"][source.output]
