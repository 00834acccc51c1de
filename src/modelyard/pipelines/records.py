"""What the pipeline service hands out and takes: pipelines, runs, steps and schedules.

Pydantic records only, shared by the services (`runs`, `schedules`), the API and the SDK, which
imports them without loading the database layer.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelyard.errors import InvalidInput
from modelyard.pipelines.states import RunState, StepState
from modelyard.types import Record

if TYPE_CHECKING:
    from modelyard.pipelines.timing import Timing


class PipelineInfo(Record):
    namespace: str
    name: str
    digest: str
    description: str
    versions: int
    created_at: dt.datetime
    updated_at: dt.datetime


class StepInfo(Record):
    node: str
    task: str
    attempt: int
    state: StepState
    reason: str | None
    cache_key: str | None
    cached_from: int | None
    exit_code: int | None
    outputs: dict[str, Any]
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class HistoryEntry(Record):
    at: dt.datetime
    node: str | None
    message: str


class RunInfo(Record):
    id: str
    namespace: str
    pipeline: str
    digest: str
    params: dict[str, Any]
    state: RunState
    reason: str | None
    schedule_id: str | None
    event_id: int | None
    created_by: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    steps: list[StepInfo] = []
    history: list[HistoryEntry] = []


class ScheduleSpec(BaseModel):
    """What ``schedules create`` sends: one of cron, interval_seconds or on."""

    model_config = ConfigDict(extra="forbid")
    name: str
    pipeline: str
    cron: str | None = Field(default=None, description="5 fields, in `timezone`")
    interval_seconds: float | None = Field(default=None, gt=0)
    timezone: str = "UTC"
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    catchup: bool = False
    on: Literal["dataset.version.committed", "model.version.committed"] | None = None
    target: str | None = Field(default=None, description="namespace/name the event is about")
    param: str | None = Field(default=None, description="pipeline parameter given the version")
    params: dict[str, Any] = Field(default_factory=dict)
    max_concurrency: int = Field(default=1, ge=1, le=100)
    overlap: Literal["skip", "wait"] | None = Field(
        default=None,
        description="past max_concurrency: skip the fire, or queue the run "
        "(default: skip for time schedules, wait for triggers, so no new version is missed)",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleSpec:
        kinds = [k for k in (self.cron, self.interval_seconds, self.on) if k is not None]
        if len(kinds) != 1:
            raise InvalidInput("give exactly one of cron, interval_seconds or on (an event type)")
        if self.on is not None and (not self.target or not self.param):
            raise InvalidInput(
                "an event trigger needs target (namespace/name of the dataset or "
                "model) and param (the pipeline parameter that gets the version)"
            )
        if self.overlap is None:
            self.overlap = "wait" if self.on is not None else "skip"
        return self

    @property
    def kind(self) -> str:
        return "event" if self.on else "cron" if self.cron else "interval"

    def timing(self) -> Timing:
        from modelyard.pipelines.timing import Timing

        return Timing(
            cron=self.cron,
            interval_seconds=self.interval_seconds,
            timezone=self.timezone,
            start=self.start,
            end=self.end,
            catchup=self.catchup,
        )


class ScheduleInfo(Record):
    id: str
    namespace: str
    name: str
    pipeline: str
    kind: str
    spec: dict[str, Any]
    paused: bool
    last_fire: dt.datetime | None
    next_fire: dt.datetime | None
    created_at: dt.datetime
