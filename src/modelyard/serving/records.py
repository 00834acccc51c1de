"""What a deployment is made of and what the API reports of it: specs, traffic, revisions.

Pydantic records only, shared by the service (`modelyard.serving.deployments`), the API and the
SDK, which imports them without loading the database layer.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelyard.realtime.records import RealtimeWorkload
from modelyard.serving.autoscaler import Autoscaling
from modelyard.serving.states import ReplicaState, RevisionState, Workload
from modelyard.types import ModelRef, Record, check_alias, check_name


class Batching(BaseModel):
    """Adaptive batching in the model server: requests are stacked into one ``predict`` call."""

    model_config = ConfigDict(extra="forbid")
    max_batch_size: int = Field(16, ge=1, le=4096)
    max_wait_ms: float = Field(5.0, ge=0, le=1000)


class Resources(BaseModel):
    """Recorded for every revision; the Kubernetes orchestrator turns them into requests and
    limits. Local replicas are plain processes: these are not enforced there."""

    model_config = ConfigDict(extra="forbid")
    cpu: float | None = Field(None, gt=0, le=256)
    memory_mb: int | None = Field(None, ge=16)
    gpu: int | None = Field(None, ge=1, le=64, description="GPUs (nvidia.com/gpu) per replica")


class Toleration(BaseModel):
    """A Kubernetes toleration: replicas may run on nodes with a matching taint."""

    model_config = ConfigDict(extra="forbid")
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class DeploymentSpec(BaseModel):
    """A model server behind the gateway, or (with ``realtime``) a realtime worker that turns a
    stream's events into stored predictions. Which of the two is fixed at creation; a model
    server needs a model, a realtime worker may run without one."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(
        None, description="A model of the deployment's namespace: name@alias|latest|N"
    )
    realtime: RealtimeWorkload | None = Field(
        None, description="Makes it a realtime deployment: the stream, rule and function it runs"
    )
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    batching: Batching | None = None
    resources: Resources = Field(default_factory=Resources)
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Gateway's limit per request")
    max_body_mb: float = Field(16.0, gt=0, le=1024, description="Largest request body (413)")
    env: dict[str, str] = Field(default_factory=dict, description="Environment of each replica")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Kubernetes: node labels a replica's node must have"
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Kubernetes: taints a replica's node may have"
    )

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name, _, ref = value.partition("@")
        check_name(name, "model name")
        ref = ref or "latest"
        if not (ref == "latest" or ref.isdigit()):
            check_alias(ref)
        return f"{name}@{ref}"

    @model_validator(mode="after")
    def _has_model(self) -> DeploymentSpec:
        if self.model is None and self.realtime is None:
            raise ValueError("model is required: name@alias|latest|N of the namespace")
        return self

    @property
    def workload(self) -> Workload:
        return Workload.REALTIME_WORKER if self.realtime is not None else Workload.MODEL_SERVER

    def ref(self, namespace: str) -> ModelRef | None:
        return ModelRef.parse(self.model, namespace) if self.model else None


class SpecPatch(BaseModel):
    """An update: only the fields given change."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    realtime: RealtimeWorkload | None = None
    autoscaling: Autoscaling | None = None
    batching: Batching | None = None
    resources: Resources | None = None
    timeout_s: float | None = None
    max_body_mb: float | None = None
    env: dict[str, str] | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None


class TrafficTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    revision: int | None = Field(None, description="A revision number; none: the latest ready")
    percent: int = Field(ge=0, le=100)
    tag: str | None = Field(None, description="Routes requests with X-Modelyard-Tag: <tag> here")

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, "tag")


class ShadowTarget(BaseModel):
    """A revision that gets a copy of ``percent`` % of the requests; its answers are compared
    with the served ones and discarded."""

    model_config = ConfigDict(extra="forbid")
    revision: int = Field(ge=1)
    percent: int = Field(ge=1, le=100)


class Traffic(BaseModel):
    model_config = ConfigDict(extra="forbid")
    targets: list[TrafficTarget] = Field(min_length=1)
    sticky_header: str | None = Field(
        None,
        description="Requests with the same value of this header (a user id) keep one revision",
    )
    shadow: ShadowTarget | None = None

    @field_validator("sticky_header")
    @classmethod
    def _header(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _HEADER.fullmatch(value) or value.lower() in _RESERVED_HEADERS:
            raise ValueError(
                f"sticky_header {value!r} must be an HTTP header name (letters, digits, '-') "
                f"other than {', '.join(sorted(_RESERVED_HEADERS))}"
            )
        return value.lower()

    @model_validator(mode="after")
    def _adds_up(self) -> Traffic:
        total = sum(t.percent for t in self.targets)
        if total != 100:
            raise ValueError(f"traffic percents add up to {total}: they must add up to 100")
        tags = [t.tag for t in self.targets if t.tag]
        if len(tags) != len(set(tags)):
            raise ValueError("each tag may name one target only")
        return self


_HEADER = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")
_RESERVED_HEADERS = frozenset({"authorization", "content-length", "content-type", "host"})
LATEST_READY = Traffic(targets=[TrafficTarget(percent=100)])


class Analysis(BaseModel):
    """The thresholds of a step's analysis."""

    model_config = ConfigDict(extra="forbid")
    min_requests: int = Field(100, ge=1, description="Per revision and step; fewer: inconclusive")
    max_error_rate_increase: float = Field(
        0.01, ge=0, le=1, description="Largest canary minus stable error rate that passes"
    )
    latency_tolerance: float = Field(
        0.2, ge=0, description="Canary median latency may exceed stable's by this share"
    )
    alpha: float = Field(0.01, gt=0, lt=0.5, description="Significance level of the latency test")


class RolloutStrategy(BaseModel):
    """How a new revision takes the traffic: at once (``replace``), in ``canary`` steps with
    an analysis against the stable revision at each (promotion after the last step passes), or
    first as a ``shadow`` beside the stable revision (a model server's copy of every request, a
    realtime worker's predictions written aside) until it is promoted or rolled back by hand."""

    model_config = ConfigDict(extra="forbid")
    strategy: Literal["replace", "canary", "shadow"] = "replace"
    steps: list[int] = Field(default_factory=lambda: [10, 50, 100])
    min_step_seconds: float = Field(30.0, ge=0, le=86400)
    max_step_seconds: float = Field(
        900.0, gt=0, le=7 * 86400, description="An inconclusive step this long pauses the rollout"
    )
    analysis: Analysis = Field(default_factory=Analysis)

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[int]) -> list[int]:
        steps = value[:-1] if value and value[-1] == 100 else value
        if not steps or any(not 0 < p < 100 for p in steps) or steps != sorted(set(steps)):
            raise ValueError(
                "steps are canary percents, rising, between 1 and 99 (a last 100 means "
                f"promotion), e.g. [10, 50, 100]; got {value}"
            )
        return [*steps, 100]

    @model_validator(mode="after")
    def _window(self) -> RolloutStrategy:
        if self.max_step_seconds < self.min_step_seconds:
            raise ValueError("max_step_seconds must be at least min_step_seconds")
        return self


class ReplicaInfo(Record):
    id: str
    url: str
    state: ReplicaState
    pid: int | None
    started_at: dt.datetime
    restarts: int = 0


class RevisionInfo(Record):
    id: str
    number: int
    name: str
    model_version: int
    """0 for a realtime revision without a model."""
    spec: DeploymentSpec
    state: RevisionState
    workload: Workload = Workload.MODEL_SERVER
    """What its replicas run."""
    reason: str | None
    created_by: str | None
    created_at: dt.datetime
    ready_at: dt.datetime | None
    retired_at: dt.datetime | None
    percent: int = 0
    tags: list[str] = []
    replicas: list[ReplicaInfo] = []
    desired_replicas: int = 0
    scaling: str = ""


class DeploymentInfo(Record):
    namespace: str
    name: str
    model: str
    """``name@ref``; empty for a realtime deployment without a model."""
    spec: DeploymentSpec
    traffic: list[TrafficTarget]
    sticky_header: str | None = None
    shadow: ShadowTarget | None = None
    rollout: RolloutStrategy = Field(default_factory=RolloutStrategy)
    revisions: list[RevisionInfo]
    ready: bool
    status: str
    path: str
    created_by: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
