"""What a realtime deployment is made of: its worker's section of a deployment's spec, and the
realtime API's view of the whole.

A realtime deployment is a deployment (`modelyard.serving.records.DeploymentSpec`) with a
``realtime`` section (`RealtimeWorkload`): its revisions pin the model version like a model
server's, and its replicas run the realtime worker. `RealtimeSpec` is that section plus the model
and the environment: what ``/namespaces/{ns}/realtime`` takes and hands out.

Pydantic records only, shared by the service (`catalog`), the workers, the API and the SDK, which
imports them without loading the database layer.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelyard.realtime.durations import seconds
from modelyard.realtime.rules import TriggerRule, check_target
from modelyard.types import ModelRef, Record, check_alias, check_name


class RealtimeWorkload(BaseModel):
    """What a realtime revision's worker runs: the ``realtime`` section of a deployment's spec."""

    model_config = ConfigDict(extra="forbid")
    stream: str = Field(description="A stream of the deployment's namespace")
    function: str = Field(description="module:function(history, model) -> value")
    rule: TriggerRule = Field(default_factory=TriggerRule)
    concurrency: int = Field(4, ge=1, le=256, description="Entities processed at once")
    max_attempts: int = Field(3, ge=1, le=100, description="Failures before a dead letter")
    timeout_s: float = Field(10.0, gt=0, le=3600, description="An attempt slower fails")
    ttl: str = Field("7d", description="How long a prediction is kept")
    history_limit: int = Field(1000, ge=1, le=100_000, description="Events a history holds")
    emit_events: bool = Field(
        False, description="Append a realtime.prediction event per new prediction (webhooks)"
    )

    @field_validator("stream")
    @classmethod
    def _stream(cls, value: str) -> str:
        return check_name(value, "stream")

    @field_validator("function")
    @classmethod
    def _function(cls, value: str) -> str:
        return check_target(value, "function")

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str) -> str:
        seconds(value, "ttl")
        return value


class RealtimeSpec(RealtimeWorkload):
    """A realtime deployment as the realtime API takes it: the worker's section, the model (an
    alias or ``latest`` is followed: each move makes a new revision) and the environment."""

    model: str | None = Field(None, description="A model of the namespace: name@alias|latest|N")
    env: dict[str, str] = Field(default_factory=dict, description="The worker's environment")

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

    def model_ref(self, namespace: str) -> ModelRef | None:
        return ModelRef.parse(self.model, namespace) if self.model else None

    def workload(self) -> RealtimeWorkload:
        return RealtimeWorkload.model_validate(self.model_dump(exclude={"model", "env"}))


class RealtimeInfo(Record):
    namespace: str
    name: str
    spec: RealtimeSpec
    created_by: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    status: str = ""
    """What the deployment is doing (`modelyard.serving.records.DeploymentInfo.status`), with
    its worker: ``running (pid N)``, ``starting``, ``failed: ...``."""
    revision: int = 0
    """The revision that runs (or, before one is ready, the one that deploys)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"
