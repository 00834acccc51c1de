"""The states of revisions and replicas, stored and reported as these exact strings.

A revision: ``deploying`` -> ``ready`` | ``failed``; ``ready`` -> ``retired`` when no traffic
reaches it, or ``rejected`` when its canary failed (or was rolled back by hand).
A replica: ``starting`` -> ``ready`` -> ``terminating`` (draining, then gone).
A rollout of a deployment's revisions: ``running`` <-> ``paused``, then ``promoted``,
``rolled_back`` or ``superseded`` (a newer revision got ready and started its own).
"""

from __future__ import annotations

import enum

from modelyard.events.types import EventType


class RevisionState(enum.StrEnum):
    DEPLOYING = "deploying"
    READY = "ready"
    FAILED = "failed"
    RETIRED = "retired"
    REJECTED = "rejected"
    """A canary that failed its analysis, or was rolled back by hand."""


class Workload(enum.StrEnum):
    """What a revision's replicas run: the process each orchestrator starts for it
    (:mod:`modelyard.serving.replica_command`). Stored per revision (``revisions.workload``)."""

    MODEL_SERVER = "model-server"
    """The OIP model server (:mod:`modelyard.serving.server`) behind the gateway."""
    REALTIME_WORKER = "realtime-worker"
    """A realtime worker (:mod:`modelyard.realtime.worker`): it reads a stream and writes
    predictions; the gateway routes no requests to it."""


class ReplicaState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    TERMINATING = "terminating"


class RolloutState(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    SUPERSEDED = "superseded"


ACTIVE_ROLLOUT = (RolloutState.RUNNING, RolloutState.PAUSED)
"""A rollout in one of these holds its deployment's traffic."""


REVISION_EVENTS: dict[RevisionState, EventType] = {
    RevisionState.READY: EventType.REVISION_READY,
    RevisionState.FAILED: EventType.REVISION_FAILED,
    RevisionState.RETIRED: EventType.REVISION_RETIRED,
    RevisionState.REJECTED: EventType.REVISION_REJECTED,
}
"""The event a revision's move to a state appends (it is created ``deploying``, with
``revision.created``)."""
