"""What the realtime catalog hands out and takes: a realtime deployment's spec and record.

Pydantic records only, shared by the service (`catalog`), the workers, the API and the SDK, which
imports them without loading the database layer.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelyard.realtime.durations import seconds
from modelyard.realtime.rules import TriggerRule, check_target
from modelyard.types import ModelRef, Record, check_alias, check_name


class RealtimeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stream: str = Field(description="A stream of the deployment's namespace")
    function: str = Field(description="module:function(history, model) -> value")
    model: str | None = Field(None, description="A model of the namespace: name@alias|latest|N")
    rule: TriggerRule = Field(default_factory=TriggerRule)
    concurrency: int = Field(4, ge=1, le=256, description="Entities processed at once")
    max_attempts: int = Field(3, ge=1, le=100, description="Failures before a dead letter")
    timeout_s: float = Field(10.0, gt=0, le=3600, description="An attempt slower fails")
    ttl: str = Field("7d", description="How long a prediction is kept")
    history_limit: int = Field(1000, ge=1, le=100_000, description="Events a history holds")
    env: dict[str, str] = Field(default_factory=dict, description="The worker's environment")

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


class RealtimeInfo(Record):
    namespace: str
    name: str
    spec: RealtimeSpec
    created_by: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    status: str = ""
    """The worker's state, filled in by the control plane (running, restarting, ...)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"
