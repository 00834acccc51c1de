"""Export a compiled pipeline as Kubeflow Pipelines v2 IR: the YAML that ``kfp.compiler`` writes.

    yaml_text = to_kfp_yaml(nightly.compile())   # upload it to KFP, or load it with kfp

The result mirrors what the kfp SDK emits for the same pipeline written with ``kfp.dsl``: one
component and executor per step (a lightweight Python component run by ``kfp``'s executor),
``condition-N`` sub-DAGs with CEL trigger conditions for ``If``, ``for-loop-N`` sub-DAGs with a
parameter iterator for ``ParallelFor`` (their outputs gathered as artifact lists for
``Collected``), and KFP importer nodes for registry imports.

Each step runs the pipeline module's whole source, so helper functions come along; stand-ins
prepended to it map ``modelyard.pipelines.dsl`` and ``.artifacts`` onto ``kfp.dsl``
(:mod:`~modelyard.pipelines.kfp_container`); the IR's pieces (types, values, sub-DAGs, channels)
are in :mod:`~modelyard.pipelines.kfp_ir`, and this module decides what goes where. What KFP's
pipeline IR cannot say (timeouts, cache TTLs, publishing to the model repository) is listed in the
YAML's header comment instead of being dropped silently.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

import yaml

from modelyard.errors import InvalidInput
from modelyard.pipelines import kfp_container
from modelyard.pipelines import kfp_ir as ir
from modelyard.pipelines.kfp_container import KFP_VERSION
from modelyard.pipelines.kfp_ir import PARAMETER_TYPES, PREFIX, Channel, Group
from modelyard.pipelines.spec import (
    ArtifactSource,
    Condition,
    Loop,
    PipelineSpec,
    StepSpec,
    TaskSpec,
    Value,
)
from modelyard.pipelines.validate import validate
from modelyard.types import ModelRef

SCHEMA_VERSION = "2.1.0"
DEFAULT_IMAGE = "python:3.11"
_COMMENT_TYPES = {kind: python for python, kind in PARAMETER_TYPES.items()}
__all__ = ["DEFAULT_IMAGE", "KFP_VERSION", "SCHEMA_VERSION", "registry_uri", "to_kfp_yaml"]


def to_kfp_yaml(
    spec: PipelineSpec, *, image: str = DEFAULT_IMAGE, packages: Sequence[str] = ()
) -> str:
    """The pipeline as KFP v2 pipeline IR YAML; ``packages`` are pip-installed before each step."""
    validate(spec)
    builtin = sorted(name for name, step in spec.steps.items() if ":" in step.function)
    if builtin:
        # sql_import and the like call back into the control plane, which KFP does not run.
        raise InvalidInput(
            f"step {builtin[0]!r} is one of modelyard's own (sql_import) and runs only on "
            "modelyard's executor: a KFP export cannot hold it"
        )
    exporter = _Exporter(spec, image, list(packages))
    document = exporter.build()
    return exporter.header(document) + yaml.dump(document, sort_keys=True)


def registry_uri(kind: str, ref: str) -> str:
    """``modelyard://datasets/ns/name@3``: the artifact URI of a registry version."""
    return f"modelyard://{kind}s/{ModelRef.parse(ref)}"


# the exporter ----------------------------------------------------------------------------------
class _Exporter:
    def __init__(self, spec: PipelineSpec, image: str, packages: list[str]) -> None:
        self.spec = spec
        self.image = image
        self.packages = packages
        self.root = Group("root")
        self.groups: list[Group] = []
        self.numbers = 0
        self.where: dict[str, Group] = {}  # DAG node -> the DAG it is in
        self.dag_names = {t.id for t in spec.tasks}
        self.component_names = set(spec.steps)
        self.components: dict[str, Any] = {}
        self.executors: dict[str, Any] = {}
        self.step_components: dict[tuple[str, str], str] = {}
        self.importers: dict[tuple[int, str, str], Channel] = {}
        self.items: dict[str, Channel] = {}
        self.uri_component: str | None = None
        self.program: str | None = None
        self.notes: list[str] = []

    def build(self) -> dict[str, Any]:
        for task in self.spec.tasks:
            self.where[task.id] = self._place(task)
        for group in self.groups:
            self._wire_group(group)
        for task in self.spec.tasks:
            self._wire_task(task)
        for task in self.spec.tasks:
            for other in task.after:
                self._order(task.id, other)
        for group in self.groups:
            self.components[f"comp-{group.name}"] = ir.without_empty(
                {
                    "dag": ir.without_empty({"tasks": group.tasks, "outputs": group.selectors}),
                    "inputDefinitions": group.inputs,
                    "outputDefinitions": group.outputs,
                }
            )
        for group in [self.root, *self.groups]:
            for spec in group.tasks.values():
                if "dependentTasks" in spec:
                    spec["dependentTasks"].sort()
        pipeline_info = {"name": self.spec.name}
        if self.spec.description:
            pipeline_info["description"] = self.spec.description
        return {
            "components": self.components,
            "deploymentSpec": {"executors": self.executors},
            "pipelineInfo": pipeline_info,
            "root": ir.without_empty(
                {
                    "dag": {"tasks": self.root.tasks},
                    "inputDefinitions": {
                        "parameters": {p.name: ir.parameter(p) for p in self.spec.params}
                    },
                }
            ),
            "schemaVersion": SCHEMA_VERSION,
            "sdkVersion": f"kfp-{KFP_VERSION}",
        }

    def header(self, document: dict[str, Any]) -> str:
        """The comment kfp writes above the YAML, plus what the IR could not carry."""
        lines = ["# PIPELINE DEFINITION", f"# Name: {self.spec.name}"]
        if self.spec.description:
            description = "\n#              ".join(self.spec.description.splitlines())
            lines.append(f"# Description: {description}")
        parameters = document["root"].get("inputDefinitions", {}).get("parameters", {})
        if parameters:
            lines.append("# Inputs:")
            for name, definition in sorted(parameters.items()):
                line = f"#    {name}: {_COMMENT_TYPES[definition['parameterType']]}"
                if "defaultValue" in definition:
                    default = definition["defaultValue"]
                    shown = f"'{default}'" if isinstance(default, str) else str(default)
                    line += f" [Default: {shown}]"
                lines.append(line)
        lines.append(f"# Exported by modelyard from pipeline spec {self.spec.digest()}")
        if self.notes:
            lines.append("# Not exported (KFP's pipeline IR has no place for them):")
            lines.extend(f"#    {note}" for note in self.notes)
        return "\n".join(lines) + "\n"

    # names ---------------------------------------------------------------------------------
    def _fresh(
        self, base: str, *, numbered: bool = False, dag: bool = True, component: bool = True
    ) -> str:
        """A name unused among DAG nodes and components: ``base``, ``base-2``, ..."""
        for n in itertools.count(1):
            if numbered:
                self.numbers += 1
            name = f"{base}-{self.numbers}" if numbered else base if n == 1 else f"{base}-{n}"
            clash = (component and name in self.component_names) or (dag and name in self.dag_names)
            if not clash:
                self.component_names.update([name] if component else [])
                self.dag_names.update([name] if dag else [])
                return name
        raise AssertionError("unreachable")

    # placing tasks into sub-DAGs -----------------------------------------------------------
    def _place(self, task: TaskSpec) -> Group:
        """The DAG a task runs in: its fan-out's, then one sub-DAG per enclosing If."""
        group = self.root
        if task.loop is not None:
            group = self._child(group, f"loop {task.loop.id}", loop=task.loop)
        for condition in task.conditions:
            group = self._child(group, condition.model_dump_json(), condition=condition)
        return group

    def _child(
        self,
        parent: Group,
        key: str,
        *,
        condition: Condition | None = None,
        loop: Loop | None = None,
    ) -> Group:
        if key not in parent.children:
            number = 0
            if loop is not None and ir.is_constant(loop.items):
                # kfp numbers the item of a loop over a constant list before the loop itself
                self.numbers += 1
                number = self.numbers
            name = self._fresh("condition" if condition else "for-loop", numbered=True)
            group = Group(name, parent, condition, loop, item_number=number)
            parent.children[key] = group
            parent.tasks[name] = {
                "componentRef": {"name": f"comp-{name}"},
                "taskInfo": {"name": name},
            }
            self.where[name] = parent
            self.groups.append(group)
        return parent.children[key]

    def _wire_group(self, group: Group) -> None:
        if group.condition is not None:
            group.spec["triggerPolicy"] = {"condition": self._cel(group.condition, group)}
            return
        assert group.loop is not None
        loop, items = group.loop, group.loop.items
        if not ir.is_constant(items):
            source = self._channel(items)
            self._resolve(source, group)
            item, item_type = f"{source.name}-loop-item", "STRING"
            iterate: dict[str, Any] = {"inputParameter": PREFIX + source.name}
        else:
            if not isinstance(items.const, list):
                raise InvalidInput(
                    f"fan-out {loop.id!r} iterates over {items.const!r}: give a list"
                )
            item, item_type = f"loop-item-param-{group.item_number}", ir.item_type(items.const)
            iterate = {"raw": json.dumps(items.const, sort_keys=True)}
        group.spec["parameterIterator"] = {"itemInput": PREFIX + item, "items": iterate}
        group.inputs["parameters"][PREFIX + item] = {"parameterType": item_type}
        self.items[loop.id] = Channel(item, False, item_type, group, None, PREFIX + item)

    # wiring values -------------------------------------------------------------------------
    def _channel(self, value: Value) -> Channel:
        if value.param is not None:
            param = next(p for p in self.spec.params if p.name == value.param)
            return Channel(
                value.param, False, PARAMETER_TYPES[param.type], self.root, None, value.param
            )
        if value.task is not None:
            returns = self.spec.steps[self.spec.task(value.task).step].returns
            assert returns is not None  # validate() checked it
            return Channel(
                f"{value.task}-Output",
                False,
                PARAMETER_TYPES[returns],
                self.where[value.task],
                value.task,
                "Output",
            )
        assert value.loop is not None
        return self.items[value.loop]

    def _resolve(self, channel: Channel, target: Group) -> dict[str, Any]:
        """How a node in ``target`` reads ``channel``: outputs up out of the producer's sub-DAGs
        to the nearest DAG both share, then inputs down into ``target``."""
        common = ir.common_group(channel.origin, target)
        producer, key = channel.producer, channel.key
        name = PREFIX + channel.name
        crossed_loop = False
        group = channel.origin
        while group is not common:
            assert group.parent is not None and producer is not None
            crossed_loop = crossed_loop or group.loop is not None
            if channel.artifact:
                selector = {"outputArtifactKey": key, "producerSubtask": producer}
                group.selectors["artifacts"][name] = {"artifactSelectors": [selector]}
            else:
                selector = {"outputParameterKey": key, "producerSubtask": producer}
                group.selectors["parameters"][name] = {"valueFromParameter": selector}
            group.outputs[channel.kind][name] = channel.definition()
            producer, key, group = group.name, name, group.parent
        if crossed_loop != channel.collect:
            raise InvalidInput(
                f"{channel.name!r}: only Collected(...) outputs leave a fan-out, and a "
                "Collected input must be outside it"
            )
        reference = ir.reference(channel.artifact, producer, key)
        for group in target.path()[len(common.path()) :]:
            group.inputs[channel.kind][name] = channel.definition()
            ir.set_input(group.spec, channel.kind, name, reference)
            reference = ir.reference(channel.artifact, None, name)
        return reference

    def _value(self, value: Value, target: Group) -> dict[str, Any]:
        if ir.is_constant(value):
            return {"runtimeValue": {"constant": ir.proto_value(value.const)}}
        return self._resolve(self._channel(value), target)

    def _wire_task(self, task: TaskSpec) -> None:
        step = self.spec.steps[task.step]
        group = self.where[task.id]
        cache = step.cache if task.cache is None else task.cache
        spec: dict[str, Any] = {
            "cachingOptions": {"enableCache": True} if cache else {},
            "componentRef": {"name": f"comp-{self._step_component(step, task)}"},
            "taskInfo": {"name": task.id},
        }
        group.tasks[task.id] = spec
        for name, value in task.params.items():
            ir.set_input(spec, "parameters", name, self._value(value, group))
        for name, source in task.inputs.items():
            if source.registry_kind is not None:
                channel = self._importer(source, group)
            else:
                assert source.task is not None and source.output is not None
                outputs = {
                    o.name: o for o in self.spec.steps[self.spec.task(source.task).step].outputs
                }
                channel = Channel(
                    f"{source.task}-{source.output}",
                    True,
                    outputs[source.output].type,
                    self.where[source.task],
                    source.task,
                    source.output,
                    collect=source.collect,
                )
            ir.set_input(spec, "artifacts", name, self._resolve(channel, group))
        retry = task.retry if task.retry is not None else step.retry
        if retry.count > 0:
            spec["retryPolicy"] = {
                "backoffDuration": ir.duration(retry.backoff_seconds),
                "backoffFactor": float(retry.backoff_factor),
                "backoffMaxDuration": ir.duration(retry.max_backoff_seconds),
                "maxRetryCount": retry.count,
            }
        timeout = task.timeout_seconds if task.timeout_seconds is not None else step.timeout_seconds
        if timeout is not None:
            self.notes.append(f"{task.id}: timeout of {timeout:g} s")
        if cache and step.cache_ttl_seconds is not None:
            self.notes.append(f"{task.id}: cache entries expire after {step.cache_ttl_seconds:g} s")
        for publish in task.publish:
            alias = f" as {publish.alias!r}" if publish.alias else ""
            self.notes.append(f"{task.id}: publish {publish.output!r} to {publish.model}{alias}")

    def _order(self, task: str, after: str) -> None:
        """``task.after(other)``: the nodes that hold them in their nearest shared DAG."""
        a, b = self.where[task], self.where[after]
        common = ir.common_group(a, b)
        depth = len(common.path())
        node = task if a is common else a.path()[depth].name
        other = after if b is common else b.path()[depth].name
        ir.depend(common.tasks[node], other)

    # conditions ------------------------------------------------------------------------------
    def _cel(self, condition: Condition, group: Group) -> str:
        """The CEL string kfp writes for a comparison (see kfp's pipeline_spec_builder): both
        sides cast to one type, str over bool over float over int."""
        operands: list[tuple[str, str, bool]] = []  # (text, parameter type, is a channel)
        for value in (condition.left, condition.right):
            if ir.is_constant(value):
                operands.append((*ir.cel_constant(value.const), False))
                continue
            channel = self._channel(value)
            if channel.type in ("LIST", "STRUCT"):
                raise InvalidInput(
                    f"If() compares {value.source()}, a {channel.type.lower()}: KFP conditions "
                    "compare only str, int, float and bool values"
                )
            self._resolve(channel, group)
            text = f"inputs.parameter_values['{PREFIX}{channel.name}']"
            if channel.type == "NUMBER_INTEGER":
                text = f"int({text})"
            operands.append((text, channel.type, True))
        types = {kind for _, kind, _ in operands}
        if len(types) == 1:
            canonical = types.pop()
        elif "STRING" in types:
            canonical = "STRING"
        elif "BOOLEAN" in types:
            left, right = condition.left.source(), condition.right.source()
            raise InvalidInput(f"If() compares a bool with a number: {left} {condition.op} {right}")
        else:
            canonical = "NUMBER_DOUBLE"
        texts = []
        for text, kind, is_channel in operands:
            if kind != canonical and canonical == "STRING":
                text = f"string({text})" if is_channel else f"'{text}'"
            elif kind != canonical:
                text = f"double({text})"
            texts.append(text)
        return f"{texts[0]} {condition.op} {texts[1]}"

    # components ------------------------------------------------------------------------------
    def _step_component(self, step: StepSpec, task: TaskSpec) -> str:
        """``comp-<step>``; a task that sets its own environment gets a component of its own."""
        key = (step.name, json.dumps(task.env, sort_keys=True))
        if key in self.step_components:
            return self.step_components[key]
        taken = any(name == step.name for name in self.step_components.values())
        name = step.name if not task.env and not taken else self._fresh(task.id, dag=False)
        self.step_components[key] = name
        outputs: dict[str, Any] = {"artifacts": {o.name: ir.artifact(o.type) for o in step.outputs}}
        if step.returns is not None:
            outputs["parameters"] = {"Output": {"parameterType": PARAMETER_TYPES[step.returns]}}
        self.components[f"comp-{name}"] = ir.without_empty(
            {
                "executorLabel": f"exec-{name}",
                "inputDefinitions": {
                    "artifacts": {i.name: ir.artifact(i.type, i.collected) for i in step.inputs},
                    "parameters": {p.name: ir.parameter(p) for p in step.params},
                },
                "outputDefinitions": outputs,
            }
        )
        container: dict[str, Any] = {
            "args": ["--executor_input", "{{$}}", "--function_to_execute", step.function],
            "command": self._command(self._program()),
            "image": step.image or self.image,  # a step's own image, as on modelyard's Kubernetes
        }
        env = {**step.env, **task.env}
        if env:
            container["env"] = [{"name": k, "value": v} for k, v in env.items()]
        resources: dict[str, Any] = {}
        if step.resources.cpu is not None:
            resources["cpuLimit"] = step.resources.cpu
            resources["resourceCpuLimit"] = ir.cpu(step.resources.cpu)
        if step.resources.memory_mb is not None:
            resources["memoryLimit"] = step.resources.memory_mb * 2**20 / 1e9
            resources["resourceMemoryLimit"] = f"{step.resources.memory_mb}Mi"
        if resources:
            container["resources"] = resources
        self.executors[f"exec-{name}"] = {"container": container}
        return name

    def _command(self, program: str) -> list[str]:
        return kfp_container.command(program, self.packages)

    def _program(self) -> str:
        if self.program is None:
            self.program = kfp_container.step_program(self.spec)
        return self.program

    def _importer(self, source: ArtifactSource, group: Group) -> Channel:
        """A KFP importer node in the consumer's DAG, one per distinct reference there."""
        assert source.registry_kind is not None and source.registry_ref is not None
        kind, ref = source.registry_kind, source.registry_ref
        key = (id(group), kind, ref.model_dump_json())
        if key in self.importers:
            return self.importers[key]
        name = self._fresh("importer")
        artifact_type = "Model" if kind == "model" else "Dataset"
        self.components[f"comp-{name}"] = {
            "executorLabel": f"exec-{name}",
            "inputDefinitions": {"parameters": {"uri": {"parameterType": "STRING"}}},
            "outputDefinitions": {"artifacts": {"artifact": ir.artifact(artifact_type)}},
        }
        spec: dict[str, Any] = {
            "cachingOptions": {"enableCache": True},
            "componentRef": {"name": f"comp-{name}"},
            "taskInfo": {"name": name},
        }
        group.tasks[name] = spec
        self.where[name] = group
        if ir.is_constant(ref):
            uri = registry_uri(kind, str(ref.const))
            artifact_uri: dict[str, Any] = {"constant": uri}
            ir.set_input(spec, "parameters", "uri", {"runtimeValue": {"constant": uri}})
        else:
            # The URI is known only at run time: a small step turns the reference into it.
            helper = self._uri_helper(f"{name}-uri", kind, ref, group)
            artifact_uri = {"runtimeParameter": "uri"}
            ir.set_input(spec, "parameters", "uri", ir.reference(False, helper, "Output"))
        self.executors[f"exec-{name}"] = {
            "importer": {"artifactUri": artifact_uri, "typeSchema": ir.artifact_type(artifact_type)}
        }
        channel = Channel(f"{name}-artifact", True, artifact_type, group, name, "artifact")
        self.importers[key] = channel
        return channel

    def _uri_helper(self, base: str, kind: str, ref: Value, group: Group) -> str:
        if self.uri_component is None:
            self.uri_component = component = self._fresh("registry-uri", dag=False)
            self.components[f"comp-{component}"] = {
                "executorLabel": f"exec-{component}",
                "inputDefinitions": {
                    "parameters": {
                        "kind": {"parameterType": "STRING"},
                        "ref": {"parameterType": "STRING"},
                    }
                },
                "outputDefinitions": {"parameters": {"Output": {"parameterType": "STRING"}}},
            }
            self.executors[f"exec-{component}"] = {
                "container": {
                    "args": ["--executor_input", "{{$}}", "--function_to_execute", "registry_uri"],
                    "command": self._command(kfp_container.URI_PROGRAM),
                    "image": self.image,
                }
            }
        name = self._fresh(base, component=False)
        spec: dict[str, Any] = {
            "cachingOptions": {"enableCache": True},
            "componentRef": {"name": f"comp-{self.uri_component}"},
            "taskInfo": {"name": name},
        }
        group.tasks[name] = spec
        self.where[name] = group
        ir.set_input(spec, "parameters", "kind", {"runtimeValue": {"constant": kind}})
        ir.set_input(spec, "parameters", "ref", self._value(ref, group))
        return name
