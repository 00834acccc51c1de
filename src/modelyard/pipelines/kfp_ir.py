"""The vocabulary of Kubeflow Pipelines v2 IR that the exporter writes with.

Parameter types, values as protobuf holds them, artifact and parameter definitions, and the DAG
tree: a :class:`Group` is the root DAG or a ``condition-N`` / ``for-loop-N`` sub-DAG, a
:class:`Channel` a value flowing between DAG nodes (what kfp calls a pipeline channel), and
:func:`reference` / :func:`set_input` / :func:`depend` the ways a task reads one. Plain data and
pure functions: :mod:`modelyard.pipelines.kfp` decides what goes where.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelyard.errors import InvalidInput
from modelyard.pipelines.spec import Condition, Loop, ParamSpec, ParamType, Value

PREFIX = "pipelinechannel--"
PARAMETER_TYPES: dict[ParamType, str] = {
    "str": "STRING",
    "int": "NUMBER_INTEGER",
    "float": "NUMBER_DOUBLE",
    "bool": "BOOLEAN",
    "list": "LIST",
    "dict": "STRUCT",
}


def _io() -> dict[str, dict[str, Any]]:
    return {"parameters": {}, "artifacts": {}}


@dataclass(eq=False)
class Group:
    """The root DAG, or a ``condition-N`` / ``for-loop-N`` sub-DAG and its task in the parent."""

    name: str
    parent: Group | None = None
    condition: Condition | None = None
    loop: Loop | None = None
    item_number: int = 0  # names the item of a loop over a constant list
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = field(default_factory=_io)
    outputs: dict[str, dict[str, Any]] = field(default_factory=_io)
    selectors: dict[str, dict[str, Any]] = field(default_factory=_io)
    children: dict[str, Group] = field(default_factory=dict)

    def path(self) -> list[Group]:
        """From the root down to this group."""
        return [*self.parent.path(), self] if self.parent is not None else [self]

    @property
    def spec(self) -> dict[str, Any]:
        """This group's task in its parent's DAG."""
        assert self.parent is not None
        return self.parent.tasks[self.name]


def common_group(a: Group, b: Group) -> Group:
    found = a.path()[0]
    for x, y in zip(a.path(), b.path(), strict=False):
        if x is not y:
            break
        found = x
    return found


@dataclass(frozen=True)
class Channel:
    """A value flowing between DAG nodes: what kfp calls a pipeline channel."""

    name: str  # kfp's full name: "rows", "train-Output", "make-out", "sizes-loop-item"
    artifact: bool
    type: str  # a parameter type, or an artifact type name
    origin: Group  # the DAG where it is first available
    producer: str | None  # the node in origin that makes it; None: an input of origin
    key: str  # the producer's output key, or origin's input name
    collect: bool = False

    @property
    def kind(self) -> str:
        return "artifacts" if self.artifact else "parameters"

    def definition(self) -> dict[str, Any]:
        if not self.artifact:
            return {"parameterType": self.type}
        return artifact(self.type, self.collect)


def reference(artifact: bool, producer: str | None, key: str) -> dict[str, Any]:
    if producer is None:
        return {"componentInputArtifact" if artifact else "componentInputParameter": key}
    if artifact:
        return {"taskOutputArtifact": {"outputArtifactKey": key, "producerTask": producer}}
    return {"taskOutputParameter": {"outputParameterKey": key, "producerTask": producer}}


def set_input(task: dict[str, Any], kind: str, name: str, reference: dict[str, Any]) -> None:
    task.setdefault("inputs", {}).setdefault(kind, {})[name] = reference
    for source in ("taskOutputParameter", "taskOutputArtifact"):
        if source in reference:
            depend(task, reference[source]["producerTask"])


def depend(task: dict[str, Any], on: str) -> None:
    found = task.setdefault("dependentTasks", [])
    if on not in found:
        found.append(on)


def is_constant(value: Value) -> bool:
    return value.param is None and value.task is None and value.loop is None


def artifact_type(name: str) -> dict[str, str]:
    return {"schemaTitle": f"system.{name}", "schemaVersion": "0.0.1"}


def artifact(type: str, is_list: bool = False) -> dict[str, Any]:
    found: dict[str, Any] = {"artifactType": artifact_type(type)}
    if is_list:
        found["isArtifactList"] = True
    return found


def parameter(spec: ParamSpec) -> dict[str, Any]:
    found: dict[str, Any] = {"parameterType": PARAMETER_TYPES[spec.type]}
    if not spec.required:
        if spec.default is not None:
            found["defaultValue"] = proto_value(spec.default)
        found["isOptional"] = True
    return found


def proto_value(value: Any) -> Any:
    """As protobuf's Value holds it, and so as kfp writes it: every number a double."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {str(k): proto_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [proto_value(v) for v in value]
    raise InvalidInput(f"{value!r} is not a JSON value")


def item_type(items: list[Any]) -> str:
    """kfp types a loop over a constant list by its first item."""
    if not items:
        return "STRING"
    first = items[0]
    for python, ir in PARAMETER_TYPES.items():
        if type(first).__name__ == python:
            return ir
    return "STRING"


def cel_constant(value: Any) -> tuple[str, str]:
    if isinstance(value, bool):
        return ("true" if value else "false"), "BOOLEAN"
    if isinstance(value, int):
        return str(value), "NUMBER_INTEGER"
    if isinstance(value, float):
        return str(value), "NUMBER_DOUBLE"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'", "STRING"
    raise InvalidInput(f"If() compares with {value!r}: KFP conditions take str, int, float, bool")


def duration(seconds: float) -> str:
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.9f}".rstrip("0") + "s"


def cpu(cores: float) -> str:
    if cores == int(cores):
        return str(int(cores))
    return f"{max(1, round(cores * 1000))}m"


def without_empty(mapping: dict[str, Any]) -> dict[str, Any]:
    """Drop empty sections, as protobuf's JSON form does."""
    found: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and set(value) <= {"parameters", "artifacts"}:
            value = {k: v for k, v in value.items() if v}
        if value or not isinstance(value, dict | list):
            found[key] = value
    return found
