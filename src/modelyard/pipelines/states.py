"""The states of runs and step attempts, stored as these exact strings (``runs.state``,
``step_runs.state``) and shown as such by the API, the CLI and the dashboard.

A run: ``queued`` -> ``running`` -> ``succeeded`` | ``failed``, or ``cancelling`` -> ``cancelled``
(a queued run is cancelled at once); a failed or cancelled run may be retried (``running`` again).
A step attempt: ``pending`` (in memory only) -> ``running`` -> ``succeeded`` | ``failed`` |
``retrying`` | ``cancelled``, or ``cached`` / ``skipped`` / ``upstream_failed`` without running;
``interrupted`` when the control plane stopped under it (the step runs again, uncounted).
"""

from __future__ import annotations

import enum

from modelyard.events.types import EventType


class RunState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepState(enum.StrEnum):
    PENDING = "pending"
    RETRYING = "retrying"
    RUNNING = "running"
    CACHED = "cached"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    UPSTREAM_FAILED = "upstream_failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


ACTIVE = (RunState.QUEUED, RunState.RUNNING, RunState.CANCELLING)
"""A run that holds a schedule's concurrency slot."""
FINISHED = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)
RETRYABLE = (RunState.FAILED, RunState.CANCELLED)

STEP_DONE = frozenset(
    {
        StepState.SUCCEEDED,
        StepState.CACHED,
        StepState.SKIPPED,
        StepState.FAILED,
        StepState.UPSTREAM_FAILED,
        StepState.CANCELLED,
    }
)
STEP_OK = frozenset({StepState.SUCCEEDED, StepState.CACHED})

RUN_ENDED: dict[RunState, EventType] = {
    RunState.SUCCEEDED: EventType.RUN_SUCCEEDED,
    RunState.FAILED: EventType.RUN_FAILED,
    RunState.CANCELLED: EventType.RUN_CANCELLED,
}
"""The event a run's end appends."""
