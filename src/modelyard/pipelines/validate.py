"""Checks a compiled spec, whether it came from the DSL or from a client as JSON.

The API runs these on registration, so a spec that is stored is one the executor can run.
"""

from __future__ import annotations

from collections.abc import Mapping
from graphlib import CycleError, TopologicalSorter

from modelyard.errors import InvalidInput
from modelyard.pipelines.spec import PipelineSpec, TaskSpec, Value
from modelyard.types import check_name


def validate(spec: PipelineSpec) -> list[str]:
    """Raise InvalidInput naming the first problem; return the task ids in a runnable order."""
    check_name(spec.name, "pipeline name")
    tasks = {t.id: t for t in spec.tasks}
    if len(tasks) != len(spec.tasks):
        raise InvalidInput(f"pipeline {spec.name!r} has two tasks with one id")
    if not tasks:
        raise InvalidInput(f"pipeline {spec.name!r} has no task")
    params = {p.name: p for p in spec.params}
    for task in spec.tasks:
        _check_task(spec, task, tasks, params)
    graph = {task.id: spec.upstream(task) for task in spec.tasks}
    try:
        return list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise InvalidInput(f"pipeline {spec.name!r} has a cycle: {cycle}") from exc


def _check_value(
    spec: PipelineSpec,
    task: TaskSpec,
    value: Value,
    where: str,
    tasks: dict[str, TaskSpec],
    params: set[str],
) -> None:
    if value.param is not None and value.param not in params:
        raise InvalidInput(
            f"task {task.id!r} {where} names pipeline parameter {value.param!r}, "
            "which the pipeline does not declare"
        )
    if value.task is not None:
        upstream = tasks.get(value.task)
        if upstream is None:
            raise InvalidInput(f"task {task.id!r} {where} names a missing task {value.task!r}")
        if spec.steps[upstream.step].returns is None:
            raise InvalidInput(
                f"task {task.id!r} {where} uses the result of {value.task!r}, "
                "whose step returns nothing"
            )
        if upstream.loop is not None and upstream.loop != task.loop:
            raise InvalidInput(f"task {task.id!r} {where} uses a result from inside a fan-out")
    if value.loop is not None and (task.loop is None or task.loop.id != value.loop):
        raise InvalidInput(
            f"task {task.id!r} {where} uses the item of fan-out {value.loop!r} outside it"
        )


def _check_task(
    spec: PipelineSpec, task: TaskSpec, tasks: dict[str, TaskSpec], params: Mapping[str, object]
) -> None:
    step = spec.steps.get(task.step)
    if step is None:
        raise InvalidInput(f"task {task.id!r} runs a missing step {task.step!r}")
    names = set(params)
    declared = {p.name: p for p in step.params}
    for name, value in task.params.items():
        if name not in declared:
            raise InvalidInput(f"task {task.id!r}: step {step.name!r} has no parameter {name!r}")
        _check_value(spec, task, value, f"parameter {name!r}", tasks, names)
    for p in step.params:
        if p.required and p.name not in task.params:
            raise InvalidInput(f"task {task.id!r} misses parameter {p.name!r} of {step.name!r}")
    inputs = {i.name: i for i in step.inputs}
    if set(task.inputs) != set(inputs):
        missing = sorted(set(inputs) ^ set(task.inputs))
        raise InvalidInput(
            f"task {task.id!r}: input artifact {missing[0]!r} is missing or "
            f"unknown to step {step.name!r}"
        )
    for name, source in task.inputs.items():
        wanted = inputs[name]
        if source.registry_kind is not None:
            if source.registry_ref is None:
                raise InvalidInput(f"task {task.id!r} input {name!r} imports no reference")
            _check_value(spec, task, source.registry_ref, f"input {name!r}", tasks, names)
            produced = "Model" if source.registry_kind == "model" else "Dataset"
        else:
            upstream = tasks.get(source.task or "")
            if upstream is None:
                raise InvalidInput(
                    f"task {task.id!r} input {name!r} names a missing task {source.task!r}"
                )
            outputs = {o.name: o for o in spec.steps[upstream.step].outputs}
            if source.output not in outputs:
                raise InvalidInput(
                    f"task {task.id!r} input {name!r}: task {upstream.id!r} has "
                    f"no output {source.output!r}"
                )
            produced = outputs[source.output].type
            if source.collect != wanted.collected or (source.collect and upstream.loop is None):
                raise InvalidInput(
                    f"task {task.id!r} input {name!r}: a list input takes "
                    "Collected(...) of a task inside a fan-out, and only that"
                )
            if not source.collect and upstream.loop is not None and upstream.loop != task.loop:
                raise InvalidInput(
                    f"task {task.id!r} input {name!r} comes from inside a fan-out:"
                    " use Collected(...)"
                )
        if wanted.type != "Artifact" and produced not in (wanted.type, "Artifact"):
            raise InvalidInput(
                f"task {task.id!r} input {name!r} takes {wanted.type}, but it is "
                f"wired to a {produced}"
            )
    for other in task.after:
        if other not in tasks:
            raise InvalidInput(f"task {task.id!r} runs after a missing task {other!r}")
    for condition in task.conditions:
        for value in (condition.left, condition.right):
            _check_value(spec, task, value, "condition", tasks, names)
    if task.loop is not None:
        _check_value(
            spec,
            task,
            task.loop.items,
            "fan-out items",
            {k: v for k, v in tasks.items() if v.loop is None},
            names,
        )
    outputs = {o.name: o for o in step.outputs}
    for publish in task.publish:
        if publish.output not in outputs or outputs[publish.output].type != "Model":
            raise InvalidInput(
                f"task {task.id!r} publishes {publish.output!r}, which is not an "
                "Output[Model] of its step"
            )
