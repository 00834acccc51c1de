"""The compiled form of a pipeline: plain JSON, stored with its content hash.

Every run references the spec it ran. The server never imports user code: a spec carries the
source of the module that defines the steps, and each step runs that source in its own process.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ParamType = Literal["str", "int", "float", "bool", "list", "dict"]
ArtifactType = Literal["Artifact", "Dataset", "Model", "Metrics"]
PYTHON_TYPES: dict[str, type] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list": list,
    "dict": dict,
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamSpec(Strict):
    name: str
    type: ParamType
    default: Any = None
    required: bool = True


class ArtifactSpec(Strict):
    name: str
    type: ArtifactType
    collected: bool = Field(default=False, description="a list of artifacts from a fan-out")


class Retry(Strict):
    count: int = Field(default=0, ge=0, le=100)
    backoff_seconds: float = Field(default=1.0, ge=0)
    backoff_factor: float = Field(default=2.0, ge=1)
    max_backoff_seconds: float = Field(default=300.0, ge=0)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` + 1 (attempts count from 1)."""
        return float(
            min(
                self.backoff_seconds * self.backoff_factor ** (attempt - 1),
                self.max_backoff_seconds,
            )
        )


class Resources(Strict):
    cpu: float | None = Field(default=None, gt=0)
    memory_mb: int | None = Field(default=None, gt=0)


class StepSpec(Strict):
    """A step's code and contract: what Kubeflow calls a component."""

    name: str
    function: str
    source: str = Field(description="the function's source, decorator included")
    source_digest: str
    params: list[ParamSpec] = []
    inputs: list[ArtifactSpec] = []
    outputs: list[ArtifactSpec] = []
    returns: ParamType | None = None
    retry: Retry = Retry()
    timeout_seconds: float | None = Field(default=None, gt=0)
    resources: Resources = Resources()
    env: dict[str, str] = {}
    cache: bool = True
    cache_ttl_seconds: float | None = Field(default=None, gt=0)
    image: str | None = Field(
        default=None,
        pattern=r"^\S+$",
        max_length=512,
        description="the container image the step runs in where steps run as containers "
        "(Kubernetes): it needs python3 of the platform image's minor version",
    )


class Value(Strict):
    """Where a parameter's value comes from: exactly one field is set."""

    const: Any = None
    param: str | None = None
    task: str | None = None
    loop: str | None = Field(default=None, description="the item of this fan-out")

    def source(self) -> str:
        if self.param is not None:
            return f"pipeline parameter {self.param!r}"
        if self.task is not None:
            return f"the result of task {self.task!r}"
        if self.loop is not None:
            return f"the item of fan-out {self.loop!r}"
        return f"the constant {self.const!r}"


class ArtifactSource(Strict):
    """Where an input artifact comes from: another task's output, or a registry version."""

    task: str | None = None
    output: str | None = None
    collect: bool = Field(default=False, description="every iteration's output, as a list")
    registry_kind: Literal["model", "dataset"] | None = None
    registry_ref: Value | None = Field(default=None, description="namespace/name@version")


class Condition(Strict):
    left: Value
    op: Literal["==", "!=", "<", "<=", ">", ">="]
    right: Value


class Loop(Strict):
    id: str
    items: Value


class Publish(Strict):
    """After the task succeeds, commit one of its Model outputs to the model repository."""

    output: str
    model: str = Field(description="namespace/name")
    alias: str | None = None
    runtime: str | None = None


class TaskSpec(Strict):
    id: str
    step: str
    params: dict[str, Value] = {}
    inputs: dict[str, ArtifactSource] = {}
    after: list[str] = []
    conditions: list[Condition] = []
    loop: Loop | None = None
    publish: list[Publish] = []
    cache: bool | None = Field(default=None, description="overrides the step's cache setting")
    retry: Retry | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)
    env: dict[str, str] = {}


class PipelineSpec(Strict):
    name: str
    description: str = ""
    params: list[ParamSpec] = []
    steps: dict[str, StepSpec]
    tasks: list[TaskSpec]
    module: str = Field(description="import name of the module that defines the steps")
    module_source: str
    code_root: str | None = Field(
        default=None, description="the folder the module was imported from, added to sys.path"
    )

    def digest(self) -> str:
        return spec_digest(self)

    def task(self, task_id: str) -> TaskSpec:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)

    def upstream(self, task: TaskSpec) -> set[str]:
        """Tasks this task waits for: explicit ``after`` plus every data dependency."""
        found = set(task.after)
        found.update(v.task for v in task.params.values() if v.task)
        found.update(s.task for s in task.inputs.values() if s.task)
        for condition in task.conditions:
            found.update(v.task for v in (condition.left, condition.right) if v.task)
        if task.loop is not None and task.loop.items.task:
            found.add(task.loop.items.task)
        return found


def spec_digest(spec: BaseModel) -> str:
    data = spec.model_dump(mode="json")
    for step in (data.get("steps") or {}).values():
        if step.get("image") is None:  # specs from before steps named images keep their digest
            step.pop("image", None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
