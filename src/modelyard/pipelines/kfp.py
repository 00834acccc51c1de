"""Export a compiled pipeline as Kubeflow Pipelines v2 IR: the YAML that ``kfp.compiler`` writes.

    yaml_text = to_kfp_yaml(nightly.compile())   # upload it to KFP, or load it with kfp

The result mirrors what the kfp SDK emits for the same pipeline written with ``kfp.dsl``: one
component and executor per step (a lightweight Python component run by ``kfp``'s executor),
``condition-N`` sub-DAGs with CEL trigger conditions for ``If``, ``for-loop-N`` sub-DAGs with a
parameter iterator for ``ParallelFor`` (their outputs gathered as artifact lists for
``Collected``), and KFP importer nodes for registry imports.

Each step runs the pipeline module's whole source, so helper functions come along; stand-ins
prepended to it map ``modelyard.pipelines.dsl`` and ``.artifacts`` onto ``kfp.dsl``. What KFP's
pipeline IR cannot say (timeouts, cache TTLs, publishing to the model repository) is listed in the
YAML's header comment instead of being dropped silently.
"""

from __future__ import annotations

import ast
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from modelyard.errors import InvalidInput
from modelyard.pipelines.spec import (
    ArtifactSource,
    Condition,
    Loop,
    ParamSpec,
    ParamType,
    PipelineSpec,
    StepSpec,
    TaskSpec,
    Value,
)
from modelyard.pipelines.validate import validate
from modelyard.types import ModelRef

KFP_VERSION = "2.17.3"
SCHEMA_VERSION = "2.1.0"
DEFAULT_IMAGE = "python:3.11"
PREFIX = "pipelinechannel--"

PARAMETER_TYPES: dict[ParamType, str] = {
    "str": "STRING",
    "int": "NUMBER_INTEGER",
    "float": "NUMBER_DOUBLE",
    "bool": "BOOLEAN",
    "list": "LIST",
    "dict": "STRUCT",
}
_COMMENT_TYPES = {ir: python for python, ir in PARAMETER_TYPES.items()}

_INSTALL_SCRIPT = """
if ! [ -x "$(command -v pip)" ]; then
    python3 -m ensurepip || python3 -m ensurepip --user || apt-get install python3-pip
fi

PIP_DISABLE_PIP_VERSION_CHECK=1 {commands} && "$0" "$@"
"""
_RUN_SCRIPT = """\
program_path=$(mktemp -d)

printf "%s" "$0" > "$program_path/ephemeral_component.py"
_KFP_RUNTIME=true python3 -m kfp.dsl.executor_main \
                        --component_module_path \
                        "$program_path/ephemeral_component.py" \
                        "$@"
"""
# The user's module imports modelyard, which the step's image does not have: these stand-ins
# give it kfp's artifact types, and turn @step and @pipeline into plain functions.
_SHIMS = """
import sys as _modelyard_sys
import types as _modelyard_types
import typing as _modelyard_typing

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

_modelyard_steps = []


def _modelyard_step(func=None, **options):
    def wrap(f):
        _modelyard_steps.append(f)
        return f

    return wrap(func) if func is not None else wrap


def _modelyard_pipeline(func=None, **options):
    return func if func is not None else (lambda f: f)


def _modelyard_pipeline_only(*args, **kwargs):
    raise RuntimeError("this belongs in a @pipeline function, which a step never runs")


def _modelyard_module(name, **attributes):
    module = _modelyard_types.ModuleType(name)
    module.__path__ = []
    module.__dict__.update(attributes)
    _modelyard_sys.modules[name] = module
    return module


_modelyard_artifact_names = dict(
    Artifact=Artifact, Dataset=Dataset, Input=Input, Metrics=Metrics, Model=Model, Output=Output
)
_modelyard_module(
    "modelyard.pipelines",
    artifacts=_modelyard_module(
        "modelyard.pipelines.artifacts",
        ARTIFACT_TYPES={cls.__name__: cls for cls in (Artifact, Dataset, Metrics, Model)},
        **_modelyard_artifact_names,
    ),
    dsl=_modelyard_module(
        "modelyard.pipelines.dsl",
        step=_modelyard_step,
        pipeline=_modelyard_pipeline,
        If=_modelyard_pipeline_only,
        ParallelFor=_modelyard_pipeline_only,
        Collected=_modelyard_pipeline_only,
        importer=_modelyard_pipeline_only,
        **_modelyard_artifact_names,
    ),
)
_modelyard_sys.modules["modelyard"] = _modelyard_types.ModuleType("modelyard")
_modelyard_sys.modules["modelyard"].__path__ = []
_modelyard_sys.modules["modelyard"].pipelines = _modelyard_sys.modules["modelyard.pipelines"]

"""
# kfp's executor reads annotations as objects: resolve the postponed ones (PEP 563).
_EPILOGUE = """

for _modelyard_func in _modelyard_steps:
    _modelyard_hints = _modelyard_typing.get_type_hints(_modelyard_func, include_extras=True)
    if _modelyard_hints.get("return") is type(None):
        _modelyard_hints["return"] = None
    _modelyard_func.__annotations__ = _modelyard_hints
"""
_URI_PROGRAM = """
import kfp
from kfp import dsl
from kfp.dsl import *
from typing import *

def registry_uri(kind: str, ref: str) -> str:
    body, _, version = ref.partition("@")
    return f"modelyard://{kind}s/{body}@{version or 'latest'}"

"""


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


# the DAG tree ----------------------------------------------------------------------------------
def _io() -> dict[str, dict[str, Any]]:
    return {"parameters": {}, "artifacts": {}}


@dataclass(eq=False)
class _Group:
    """The root DAG, or a ``condition-N`` / ``for-loop-N`` sub-DAG and its task in the parent."""

    name: str
    parent: _Group | None = None
    condition: Condition | None = None
    loop: Loop | None = None
    item_number: int = 0  # names the item of a loop over a constant list
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = field(default_factory=_io)
    outputs: dict[str, dict[str, Any]] = field(default_factory=_io)
    selectors: dict[str, dict[str, Any]] = field(default_factory=_io)
    children: dict[str, _Group] = field(default_factory=dict)

    def path(self) -> list[_Group]:
        """From the root down to this group."""
        return [*self.parent.path(), self] if self.parent is not None else [self]

    @property
    def spec(self) -> dict[str, Any]:
        """This group's task in its parent's DAG."""
        assert self.parent is not None
        return self.parent.tasks[self.name]


def _common(a: _Group, b: _Group) -> _Group:
    found = a.path()[0]
    for x, y in zip(a.path(), b.path(), strict=False):
        if x is not y:
            break
        found = x
    return found


@dataclass(frozen=True)
class _Channel:
    """A value flowing between DAG nodes: what kfp calls a pipeline channel."""

    name: str  # kfp's full name: "rows", "train-Output", "make-out", "sizes-loop-item"
    artifact: bool
    type: str  # a parameter type, or an artifact type name
    origin: _Group  # the DAG where it is first available
    producer: str | None  # the node in origin that makes it; None: an input of origin
    key: str  # the producer's output key, or origin's input name
    collect: bool = False

    @property
    def kind(self) -> str:
        return "artifacts" if self.artifact else "parameters"

    def definition(self) -> dict[str, Any]:
        if not self.artifact:
            return {"parameterType": self.type}
        return _artifact(self.type, self.collect)


def _reference(artifact: bool, producer: str | None, key: str) -> dict[str, Any]:
    if producer is None:
        return {"componentInputArtifact" if artifact else "componentInputParameter": key}
    if artifact:
        return {"taskOutputArtifact": {"outputArtifactKey": key, "producerTask": producer}}
    return {"taskOutputParameter": {"outputParameterKey": key, "producerTask": producer}}


def _set_input(task: dict[str, Any], kind: str, name: str, reference: dict[str, Any]) -> None:
    task.setdefault("inputs", {}).setdefault(kind, {})[name] = reference
    for source in ("taskOutputParameter", "taskOutputArtifact"):
        if source in reference:
            _depend(task, reference[source]["producerTask"])


def _depend(task: dict[str, Any], on: str) -> None:
    found = task.setdefault("dependentTasks", [])
    if on not in found:
        found.append(on)


# the exporter ----------------------------------------------------------------------------------
class _Exporter:
    def __init__(self, spec: PipelineSpec, image: str, packages: list[str]) -> None:
        self.spec = spec
        self.image = image
        self.packages = packages
        self.root = _Group("root")
        self.groups: list[_Group] = []
        self.numbers = 0
        self.where: dict[str, _Group] = {}  # DAG node -> the DAG it is in
        self.dag_names = {t.id for t in spec.tasks}
        self.component_names = set(spec.steps)
        self.components: dict[str, Any] = {}
        self.executors: dict[str, Any] = {}
        self.step_components: dict[tuple[str, str], str] = {}
        self.importers: dict[tuple[int, str, str], _Channel] = {}
        self.items: dict[str, _Channel] = {}
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
            self.components[f"comp-{group.name}"] = _without_empty(
                {
                    "dag": _without_empty({"tasks": group.tasks, "outputs": group.selectors}),
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
            "root": _without_empty(
                {
                    "dag": {"tasks": self.root.tasks},
                    "inputDefinitions": {
                        "parameters": {p.name: _parameter(p) for p in self.spec.params}
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
    def _place(self, task: TaskSpec) -> _Group:
        """The DAG a task runs in: its fan-out's, then one sub-DAG per enclosing If."""
        group = self.root
        if task.loop is not None:
            group = self._child(group, f"loop {task.loop.id}", loop=task.loop)
        for condition in task.conditions:
            group = self._child(group, condition.model_dump_json(), condition=condition)
        return group

    def _child(
        self,
        parent: _Group,
        key: str,
        *,
        condition: Condition | None = None,
        loop: Loop | None = None,
    ) -> _Group:
        if key not in parent.children:
            number = 0
            if loop is not None and _constant(loop.items):
                # kfp numbers the item of a loop over a constant list before the loop itself
                self.numbers += 1
                number = self.numbers
            name = self._fresh("condition" if condition else "for-loop", numbered=True)
            group = _Group(name, parent, condition, loop, item_number=number)
            parent.children[key] = group
            parent.tasks[name] = {
                "componentRef": {"name": f"comp-{name}"},
                "taskInfo": {"name": name},
            }
            self.where[name] = parent
            self.groups.append(group)
        return parent.children[key]

    def _wire_group(self, group: _Group) -> None:
        if group.condition is not None:
            group.spec["triggerPolicy"] = {"condition": self._cel(group.condition, group)}
            return
        assert group.loop is not None
        loop, items = group.loop, group.loop.items
        if not _constant(items):
            source = self._channel(items)
            self._resolve(source, group)
            item, item_type = f"{source.name}-loop-item", "STRING"
            iterate: dict[str, Any] = {"inputParameter": PREFIX + source.name}
        else:
            if not isinstance(items.const, list):
                raise InvalidInput(
                    f"fan-out {loop.id!r} iterates over {items.const!r}: give a list"
                )
            item, item_type = f"loop-item-param-{group.item_number}", _item_type(items.const)
            iterate = {"raw": json.dumps(items.const, sort_keys=True)}
        group.spec["parameterIterator"] = {"itemInput": PREFIX + item, "items": iterate}
        group.inputs["parameters"][PREFIX + item] = {"parameterType": item_type}
        self.items[loop.id] = _Channel(item, False, item_type, group, None, PREFIX + item)

    # wiring values -------------------------------------------------------------------------
    def _channel(self, value: Value) -> _Channel:
        if value.param is not None:
            param = next(p for p in self.spec.params if p.name == value.param)
            return _Channel(
                value.param, False, PARAMETER_TYPES[param.type], self.root, None, value.param
            )
        if value.task is not None:
            returns = self.spec.steps[self.spec.task(value.task).step].returns
            assert returns is not None  # validate() checked it
            return _Channel(
                f"{value.task}-Output",
                False,
                PARAMETER_TYPES[returns],
                self.where[value.task],
                value.task,
                "Output",
            )
        assert value.loop is not None
        return self.items[value.loop]

    def _resolve(self, channel: _Channel, target: _Group) -> dict[str, Any]:
        """How a node in ``target`` reads ``channel``: outputs up out of the producer's sub-DAGs
        to the nearest DAG both share, then inputs down into ``target``."""
        common = _common(channel.origin, target)
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
        reference = _reference(channel.artifact, producer, key)
        for group in target.path()[len(common.path()) :]:
            group.inputs[channel.kind][name] = channel.definition()
            _set_input(group.spec, channel.kind, name, reference)
            reference = _reference(channel.artifact, None, name)
        return reference

    def _value(self, value: Value, target: _Group) -> dict[str, Any]:
        if _constant(value):
            return {"runtimeValue": {"constant": _proto_value(value.const)}}
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
            _set_input(spec, "parameters", name, self._value(value, group))
        for name, source in task.inputs.items():
            if source.registry_kind is not None:
                channel = self._importer(source, group)
            else:
                assert source.task is not None and source.output is not None
                outputs = {
                    o.name: o for o in self.spec.steps[self.spec.task(source.task).step].outputs
                }
                channel = _Channel(
                    f"{source.task}-{source.output}",
                    True,
                    outputs[source.output].type,
                    self.where[source.task],
                    source.task,
                    source.output,
                    collect=source.collect,
                )
            _set_input(spec, "artifacts", name, self._resolve(channel, group))
        retry = task.retry if task.retry is not None else step.retry
        if retry.count > 0:
            spec["retryPolicy"] = {
                "backoffDuration": _duration(retry.backoff_seconds),
                "backoffFactor": float(retry.backoff_factor),
                "backoffMaxDuration": _duration(retry.max_backoff_seconds),
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
        common = _common(a, b)
        depth = len(common.path())
        node = task if a is common else a.path()[depth].name
        other = after if b is common else b.path()[depth].name
        _depend(common.tasks[node], other)

    # conditions ------------------------------------------------------------------------------
    def _cel(self, condition: Condition, group: _Group) -> str:
        """The CEL string kfp writes for a comparison (see kfp's pipeline_spec_builder): both
        sides cast to one type, str over bool over float over int."""
        operands: list[tuple[str, str, bool]] = []  # (text, parameter type, is a channel)
        for value in (condition.left, condition.right):
            if _constant(value):
                operands.append((*_cel_constant(value.const), False))
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
        outputs: dict[str, Any] = {"artifacts": {o.name: _artifact(o.type) for o in step.outputs}}
        if step.returns is not None:
            outputs["parameters"] = {"Output": {"parameterType": PARAMETER_TYPES[step.returns]}}
        self.components[f"comp-{name}"] = _without_empty(
            {
                "executorLabel": f"exec-{name}",
                "inputDefinitions": {
                    "artifacts": {i.name: _artifact(i.type, i.collected) for i in step.inputs},
                    "parameters": {p.name: _parameter(p) for p in step.params},
                },
                "outputDefinitions": outputs,
            }
        )
        container: dict[str, Any] = {
            "args": ["--executor_input", "{{$}}", "--function_to_execute", step.function],
            "command": self._command(self._program()),
            "image": self.image,
        }
        env = {**step.env, **task.env}
        if env:
            container["env"] = [{"name": k, "value": v} for k, v in env.items()]
        resources: dict[str, Any] = {}
        if step.resources.cpu is not None:
            resources["cpuLimit"] = step.resources.cpu
            resources["resourceCpuLimit"] = _cpu(step.resources.cpu)
        if step.resources.memory_mb is not None:
            resources["memoryLimit"] = step.resources.memory_mb * 2**20 / 1e9
            resources["resourceMemoryLimit"] = f"{step.resources.memory_mb}Mi"
        if resources:
            container["resources"] = resources
        self.executors[f"exec-{name}"] = {"container": container}
        return name

    def _command(self, program: str) -> list[str]:
        installs = []
        if self.packages:
            installs.append(_pip_install(self.packages))
        if not any(p.startswith("kfp") for p in self.packages):
            typing_extensions = 'typing-extensions>=3.7.4,<5; python_version<"3.9"'
            installs.append(_pip_install([f"kfp=={KFP_VERSION}", "--no-deps", typing_extensions]))
        install = _INSTALL_SCRIPT.format(commands=" && ".join(installs))
        return ["sh", "-c", install, "sh", "-ec", _RUN_SCRIPT, program]

    def _program(self) -> str:
        """The module's source behind the stand-ins; ``from __future__`` must stay first."""
        if self.program is None:
            try:
                tree = ast.parse(self.spec.module_source)
            except SyntaxError as exc:
                raise InvalidInput(f"module {self.spec.module!r} does not parse: {exc}") from exc
            lines = self.spec.module_source.splitlines(keepends=True)
            future: list[str] = []
            for node in tree.body:
                if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                    end = node.end_lineno or node.lineno
                    future.extend(lines[node.lineno - 1 : end])
                    lines[node.lineno - 1 : end] = [""] * (end - node.lineno + 1)
            self.program = "\n" + "".join(future) + _SHIMS + "".join(lines) + _EPILOGUE
        return self.program

    def _importer(self, source: ArtifactSource, group: _Group) -> _Channel:
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
            "outputDefinitions": {"artifacts": {"artifact": _artifact(artifact_type)}},
        }
        spec: dict[str, Any] = {
            "cachingOptions": {"enableCache": True},
            "componentRef": {"name": f"comp-{name}"},
            "taskInfo": {"name": name},
        }
        group.tasks[name] = spec
        self.where[name] = group
        if _constant(ref):
            uri = registry_uri(kind, str(ref.const))
            artifact_uri: dict[str, Any] = {"constant": uri}
            _set_input(spec, "parameters", "uri", {"runtimeValue": {"constant": uri}})
        else:
            # The URI is known only at run time: a small step turns the reference into it.
            helper = self._uri_helper(f"{name}-uri", kind, ref, group)
            artifact_uri = {"runtimeParameter": "uri"}
            _set_input(spec, "parameters", "uri", _reference(False, helper, "Output"))
        self.executors[f"exec-{name}"] = {
            "importer": {"artifactUri": artifact_uri, "typeSchema": _artifact_type(artifact_type)}
        }
        channel = _Channel(f"{name}-artifact", True, artifact_type, group, name, "artifact")
        self.importers[key] = channel
        return channel

    def _uri_helper(self, base: str, kind: str, ref: Value, group: _Group) -> str:
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
                    "command": self._command(_URI_PROGRAM),
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
        _set_input(spec, "parameters", "kind", {"runtimeValue": {"constant": kind}})
        _set_input(spec, "parameters", "ref", self._value(ref, group))
        return name


# small conversions -----------------------------------------------------------------------------
def _constant(value: Value) -> bool:
    return value.param is None and value.task is None and value.loop is None


def _artifact_type(name: str) -> dict[str, str]:
    return {"schemaTitle": f"system.{name}", "schemaVersion": "0.0.1"}


def _artifact(type: str, is_list: bool = False) -> dict[str, Any]:
    found: dict[str, Any] = {"artifactType": _artifact_type(type)}
    if is_list:
        found["isArtifactList"] = True
    return found


def _parameter(spec: ParamSpec) -> dict[str, Any]:
    found: dict[str, Any] = {"parameterType": PARAMETER_TYPES[spec.type]}
    if not spec.required:
        if spec.default is not None:
            found["defaultValue"] = _proto_value(spec.default)
        found["isOptional"] = True
    return found


def _proto_value(value: Any) -> Any:
    """As protobuf's Value holds it, and so as kfp writes it: every number a double."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _proto_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_proto_value(v) for v in value]
    raise InvalidInput(f"{value!r} is not a JSON value")


def _item_type(items: list[Any]) -> str:
    """kfp types a loop over a constant list by its first item."""
    if not items:
        return "STRING"
    first = items[0]
    for python, ir in PARAMETER_TYPES.items():
        if type(first).__name__ == python:
            return ir
    return "STRING"


def _cel_constant(value: Any) -> tuple[str, str]:
    if isinstance(value, bool):
        return ("true" if value else "false"), "BOOLEAN"
    if isinstance(value, int):
        return str(value), "NUMBER_INTEGER"
    if isinstance(value, float):
        return str(value), "NUMBER_DOUBLE"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'", "STRING"
    raise InvalidInput(f"If() compares with {value!r}: KFP conditions take str, int, float, bool")


def _duration(seconds: float) -> str:
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.9f}".rstrip("0") + "s"


def _cpu(cores: float) -> str:
    if cores == int(cores):
        return str(int(cores))
    return f"{max(1, round(cores * 1000))}m"


def _pip_install(packages: Iterable[str]) -> str:
    quoted = " ".join("'" + p.replace("'", "'\"'\"'") + "'" for p in packages)
    return f"python3 -m pip install --quiet --no-warn-script-location {quoted}"


def _without_empty(mapping: dict[str, Any]) -> dict[str, Any]:
    """Drop empty sections, as protobuf's JSON form does."""
    found: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and set(value) <= {"parameters", "artifacts"}:
            value = {k: v for k, v in value.items() if v}
        if value or not isinstance(value, dict | list):
            found[key] = value
    return found
