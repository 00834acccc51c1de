"""The queue of triggers between the router (rules over the raw log) and the workers.

One entity's triggers are handed out in log order, never while another of its triggers is out:
a claim takes, of each entity with none out, its oldest queued triggers (a run of several when a
hot entity has several queued, so its backlog goes out in one batch instead of one batch per
trigger); different entities' go out in parallel. Delivery is at-least-once: a trigger stays
queued until acknowledged, and a worker that died holding one (kill -9) has it handed out again
once its lease ends or the next worker of the deployment starts. Workers get exactly-once
*effects* because a prediction is keyed by (deployment, trigger event, model version) in the
prediction store.

``modelyard.realtime.backends`` opens one by URL: ``sqlite:///PATH`` (embedded: the router's
cursor moves in the same transaction as its triggers are enqueued) or ``nats://HOST:PORT``
(JetStream: a subject per deployment and entity, a durable consumer per deployment whose client
hands out each entity's run in log order, none while one of its triggers is out, the ack wait as
the lease; enqueue deduplicated by deployment and ``seq``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from modelyard.types import Record


@dataclass(frozen=True, slots=True)
class Trigger:
    deployment: str
    """``namespace/name`` of the realtime deployment."""
    entity: str
    seq: int
    """The trigger event's place in the stream's log: its history ends there."""
    event_id: str
    event_time: float
    enqueued_at: float
    attempts: int = 0
    handle: str = ""
    """What the queue needs to acknowledge it."""


class DeadLetter(Record):
    deployment: str
    entity: str
    seq: int
    event_id: str
    attempts: int
    error: str
    """The last attempt's traceback."""
    failed_at: dt.datetime


class TriggerQueue(Protocol):
    def cursor(self, deployment: str) -> int:
        """The ``seq`` up to which the router has turned the stream's events into triggers."""

    def enqueue(self, deployment: str, triggers: Sequence[Trigger], cursor: int) -> None:
        """Queue ``triggers`` and move the cursor to ``cursor``; a trigger already queued (same
        deployment and ``seq``) is not queued twice."""

    def claim(self, deployment: str, limit: int, lease_s: float, now: float) -> list[Trigger]:
        """Up to ``limit`` triggers of entities that have no trigger out on lease: of each, its
        oldest queued ones in log order (a run of consecutive triggers); each is leased for
        ``lease_s``. The entity's others stay queued until the run's are acknowledged, failed or
        put back."""

    def ack(self, trigger: Trigger) -> None:
        """Done: it leaves the queue, and the entity's next trigger may go out."""

    def ack_many(self, triggers: Sequence[Trigger]) -> None:
        """``ack`` each, in one transaction or round trip: when it returns, all are gone."""

    def fail(self, trigger: Trigger, error: str, max_attempts: int, now: float) -> bool:
        """Put it back for another attempt, or (after ``max_attempts``) into the dead letters,
        out of the entity's way; True when it went to the dead letters."""

    def put_back(self, triggers: Sequence[Trigger]) -> None:
        """End the lease of claimed triggers that were not attempted (an entity's triggers after
        its failed one in a batch): they go out again, in order, with no attempt counted."""

    def release(self, deployment: str) -> None:
        """End every lease of ``deployment``: its only worker (re)starts and holds none."""

    def pending(self, deployment: str) -> tuple[int, float | None]:
        """Triggers queued (not dead), and when the oldest was enqueued."""

    def dead_letters(self, deployment: str, limit: int = 100) -> list[DeadLetter]: ...

    def retry(self, deployment: str) -> int:
        """Queue every dead letter of ``deployment`` again; returns how many."""

    def drop(self, deployment: str) -> None:
        """Forget a deleted deployment's triggers, dead letters and cursor."""

    def close(self) -> None: ...
