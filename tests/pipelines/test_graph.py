"""The run graph's rules, without a database or a process: milliseconds each."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.pipelines.graph import RunGraph, iteration_of
from modelyard.pipelines.spec import (
    ArtifactSource,
    ArtifactSpec,
    Condition,
    Loop,
    ParamSpec,
    PipelineSpec,
    StepSpec,
    TaskSpec,
    Value,
)
from modelyard.pipelines.states import STEP_DONE, StepState


def _step(name: str, **fields: Any) -> StepSpec:
    return StepSpec(name=name, function=name, source="", source_digest="", **fields)


OUT = [ArtifactSpec(name="out", type="Artifact")]
STEPS = {
    "emit": _step(
        "emit",
        params=[ParamSpec(name="n", type="int", default=7, required=False)],
        outputs=OUT,
        returns="int",
    ),
    "items": _step("items", returns="list"),
    "use": _step("use", inputs=[ArtifactSpec(name="data", type="Artifact")], outputs=OUT),
    "gather": _step("gather", inputs=[ArtifactSpec(name="all", type="Artifact", collected=True)]),
}
PARAMS = [ParamSpec(name="limit", type="int", default=0, required=False)]


def graph(*tasks: TaskSpec, **params: Any) -> RunGraph:
    spec = PipelineSpec(
        name="p", params=PARAMS, steps=STEPS, tasks=list(tasks), module="m", module_source=""
    )
    return RunGraph.of(spec, params)


def emit(id: str, **fields: Any) -> TaskSpec:
    return TaskSpec(id=id, step="emit", **fields)


def use(id: str, source: str, **fields: Any) -> TaskSpec:
    return TaskSpec(
        id=id, step="use", inputs={"data": ArtifactSource(task=source, output="out")}, **fields
    )


def finish(g: RunGraph, node_id: str, state: str = "succeeded", result: Any = None) -> None:
    for task_id in g.order:  # the nodes known so far exist
        g.expand(g.spec.task(task_id))
    node = g.nodes[node_id]
    node.state = StepState(state)
    node.outputs = {"result": result, "artifacts": {"out": {"digest": f"sha-{node_id}"}}}


def ready(g: RunGraph, now: float = 0.0) -> list[str]:
    return [n.id for n in g.candidates(now) if g.readiness(n) == "ready"]


def settle_pass(g: RunGraph) -> dict[str, tuple[str, str]]:
    """What one executor pass records: every verdict that is neither ready nor wait."""
    settled: dict[str, tuple[str, str]] = {}
    for node in g.candidates(0.0):
        verdict = g.readiness(node)
        if isinstance(verdict, tuple):
            node.state = verdict[0]
            settled[node.id] = verdict
    return settled


LOOP = Loop(id="each", items=Value(task="list"))


def fan_out(**params: Any) -> RunGraph:
    return graph(
        TaskSpec(id="list", step="items"),
        emit("per", loop=LOOP, params={"n": Value(loop="each")}),
        use("after", "per", loop=LOOP),
        TaskSpec(
            id="gather",
            step="gather",
            inputs={"all": ArtifactSource(task="after", output="out", collect=True)},
        ),
        **params,
    )


# --- readiness ------------------------------------------------------------------------------------


def test_a_task_is_ready_once_everything_upstream_succeeded() -> None:
    g = graph(emit("a"), use("b", "a"), emit("c", after=["b"]))
    assert ready(g) == ["a"]
    assert g.readiness(g.nodes["b"]) == "wait"
    finish(g, "a")
    assert ready(g) == ["b"]
    finish(g, "b", "cached")
    assert ready(g) == ["c"]


def test_a_failure_marks_everything_downstream_in_one_pass() -> None:
    g = graph(emit("a"), use("b", "a"), emit("c", after=["b"]), emit("free"))
    finish(g, "a", "failed")
    assert settle_pass(g) == {
        "b": ("upstream_failed", "upstream a failed"),
        "c": ("upstream_failed", "upstream b upstream_failed"),
    }
    assert ready(g) == ["free"]


def test_a_false_condition_skips_the_task_and_what_follows_it() -> None:
    g = graph(
        emit("a"),
        emit(
            "big",
            conditions=[Condition(left=Value(task="a"), op=">", right=Value(param="limit"))],
        ),
        emit("then", after=["big"]),
        limit=5,
    )
    finish(g, "a", result=3)
    assert settle_pass(g) == {
        "big": ("skipped", "condition 3 > 5 is false"),
        "then": ("skipped", "upstream big was skipped"),
    }


def test_a_true_condition_lets_the_task_run() -> None:
    condition = Condition(left=Value(task="a"), op="==", right=Value(const=3))
    g = graph(emit("a"), emit("b", conditions=[condition]))
    finish(g, "a", result=3)
    assert ready(g) == ["b"]


def test_a_condition_that_cannot_be_compared_fails_the_task() -> None:
    condition = Condition(left=Value(task="a"), op="<", right=Value(const="x"))
    g = graph(emit("a"), emit("b", conditions=[condition]))
    finish(g, "a", result=3)
    state, reason = settle_pass(g)["b"]
    assert state == "failed" and reason.startswith("condition 3 < 'x': ")


def test_a_retrying_node_waits_for_its_backoff() -> None:
    g = graph(emit("a"))
    node = g.expand(g.spec.task("a"))[0]
    node.state, node.ready_at = StepState.RETRYING, 10.0
    assert ready(g, now=9.9) == []
    assert ready(g, now=10.0) == ["a"]


def test_running_and_finished_nodes_are_no_candidates() -> None:
    g = graph(emit("a"), emit("b"), emit("c"))
    g.expand(g.spec.task("a"))[0].state = StepState.RUNNING
    g.expand(g.spec.task("b"))[0].state = StepState.SUCCEEDED
    assert [n.id for n in g.candidates(0.0)] == ["c"]


# --- fan-out --------------------------------------------------------------------------------------


def test_a_fan_out_expands_once_its_items_are_known() -> None:
    g = fan_out()
    assert ready(g) == ["list"]
    assert g.expand(g.spec.task("per")) == []
    assert not g.expanded() and not g.settled()
    finish(g, "list", result=[10, 20, 30])
    assert g.expanded()
    assert ready(g) == ["per[0]", "per[1]", "per[2]"]
    assert [g.params_for(g.nodes[f"per[{i}]"]) for i in range(3)] == [
        {"n": 10},
        {"n": 20},
        {"n": 30},
    ]


def test_an_iteration_waits_only_for_its_own_iteration_upstream() -> None:
    g = fan_out()
    finish(g, "list", result=["x", "y"])
    finish(g, "per[1]")
    assert ready(g) == ["per[0]", "after[1]"]
    assert g.readiness(g.nodes["after[0]"]) == "wait"


def test_collected_outputs_come_in_iteration_order_once_all_are_done() -> None:
    g = fan_out()
    finish(g, "list", result=["x", "y"])
    for node_id in ("per[1]", "per[0]", "after[1]"):
        finish(g, node_id)
    assert g.readiness(g.nodes["gather"]) == "wait"
    finish(g, "after[0]")
    assert ready(g) == ["gather"]
    gather = g.nodes["gather"]
    source = gather.task.inputs["all"]
    assert g.upstream_artifacts(gather, source) == [
        {"digest": "sha-after[0]"},
        {"digest": "sha-after[1]"},
    ]


def test_a_fan_out_whose_items_never_come_settles_with_no_iteration() -> None:
    g = fan_out()
    finish(g, "list", "failed")
    assert g.expand(g.spec.task("per")) == []
    assert g.expanded()
    assert settle_pass(g) == {"gather": (StepState.UPSTREAM_FAILED, "upstream list failed")}
    assert g.settled()


def test_a_fan_out_whose_lister_was_skipped_skips_its_collector() -> None:
    g = fan_out()
    finish(g, "list", "skipped")
    assert settle_pass(g) == {"gather": (StepState.SKIPPED, "upstream list was skipped")}


def test_an_empty_fan_out_lets_its_collector_run_on_nothing() -> None:
    g = fan_out()
    finish(g, "list", result=[])
    assert ready(g) == ["gather"]
    gather = g.nodes["gather"]
    assert g.upstream_artifacts(gather, gather.task.inputs["all"]) == []


# --- values, parameters, ancestry -----------------------------------------------------------------


def test_values_resolve_parameters_constants_and_results_of_succeeded_tasks_only() -> None:
    g = graph(emit("a"), emit("b"), limit=4)
    assert g.value(Value(param="limit"), None) == 4
    assert g.value(Value(const=[1]), None) == [1]
    assert g.value(Value(task="a"), None) is None
    finish(g, "a", "failed", result=9)
    assert g.value(Value(task="a"), None) is None
    finish(g, "a", "cached", result=9)
    assert g.value(Value(task="a"), None) == 9


def test_a_step_parameter_the_task_does_not_set_takes_its_default() -> None:
    g = graph(emit("a"), emit("b", params={"n": Value(param="limit")}), limit=2)
    assert g.params_for(g.expand(g.spec.task("a"))[0]) == {"n": 7}
    assert g.params_for(g.expand(g.spec.task("b"))[0]) == {"n": 2}


def test_ancestors_are_every_node_upstream_once() -> None:
    g = graph(emit("a"), use("b", "a"), use("c", "b", after=["a"]), emit("other"))
    c = g.expand(g.spec.task("c"))[0]
    assert sorted(n.id for n in g.ancestors(c)) == ["a", "b"]


def test_a_run_is_settled_when_every_node_is_done() -> None:
    g = graph(emit("a"), use("b", "a"))
    assert not g.settled()
    finish(g, "a")
    assert not g.settled()
    finish(g, "b", "skipped")
    assert g.settled()
    assert {"succeeded", "skipped"} <= STEP_DONE


def test_restored_nodes_keep_their_record_and_iteration() -> None:
    g = fan_out()
    node = g.restore("per[3]", "per", "retrying", 2, 41, {"imports": []})
    assert (node.iteration, node.state, node.attempt, node.step_run_id) == (3, "retrying", 2, 41)
    assert g.nodes["per[3]"] is node


@pytest.mark.parametrize(("node_id", "iteration"), [("a", None), ("a[0]", 0), ("x-2[12]", 12)])
def test_a_node_id_names_its_iteration(node_id: str, iteration: int | None) -> None:
    assert iteration_of(node_id) == iteration
