"""The queue of triggers between the router (rules over the raw log) and the workers.

One entity's triggers are handed out one at a time in log order; different entities' go out in
parallel. Delivery is at-least-once: a trigger stays queued until acknowledged, and a worker that
died holding one (kill -9) has it handed out again once its lease ends or the next worker of the
deployment starts. Workers get exactly-once *effects* because a prediction is keyed by
(deployment, trigger event, model version) in the prediction store.

``modelyard.realtime.backends`` opens one by URL: ``sqlite:///PATH`` (embedded: the router's
cursor moves in the same transaction as its triggers are enqueued) or ``nats://HOST:PORT``
(JetStream: a subject per deployment and entity, a durable consumer per deployment whose client
hands out one trigger per entity at a time, the ack wait as the lease; enqueue deduplicated by
deployment and ``seq``).
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
        """Up to ``limit`` triggers, each the oldest of its entity, of entities that have no
        trigger out on lease; each is leased for ``lease_s``."""

    def ack(self, trigger: Trigger) -> None:
        """Done: it leaves the queue, and the entity's next trigger may go out."""

    def ack_many(self, triggers: Sequence[Trigger]) -> None:
        """``ack`` each, in one transaction or round trip: when it returns, all are gone."""

    def fail(self, trigger: Trigger, error: str, max_attempts: int, now: float) -> bool:
        """Put it back for another attempt, or (after ``max_attempts``) into the dead letters,
        out of the entity's way; True when it went to the dead letters."""

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
