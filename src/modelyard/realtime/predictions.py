"""The prediction store: what workers write and the product reads through the gateway.

At most one prediction is stored per (deployment, trigger event, model version): a worker that
retries a trigger (it died before acknowledging it) writes nothing new. An entity's latest
prediction only ever moves to a later trigger (a higher log ``seq``; for the same trigger, the one
written last), so a retried old trigger never hides a newer answer. Predictions expire after the
deployment's TTL.

``modelyard.realtime.backends`` opens one by URL: ``sqlite:///PATH`` (embedded) or
``redis://HOST:PORT/DB``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

from modelyard.types import Record


class Prediction(Record):
    deployment: str
    entity: str
    value: Any
    model: str | None
    """The model version it was made with, ``namespace/name@number`` (None: no model)."""
    event_id: str
    """The trigger event."""
    seq: int
    event_time: float
    written_at: float
    expires_at: float

    @property
    def written(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.written_at, dt.UTC)


class PredictionStore(Protocol):
    def put(self, prediction: Prediction) -> bool:
        """Store it, durably; False (and nothing written) when one exists for its deployment,
        trigger event and model version. The entity's latest moves to it unless the latest has
        a later ``seq``."""

    def put_many(self, predictions: Sequence[Prediction]) -> list[bool]:
        """``put`` each, in order, in one transaction or round trip: when it returns, all are
        stored durably. A flag per prediction, as ``put`` returns."""

    def latest(self, deployment: str, entities: Sequence[str], now: float) -> dict[str, Prediction]:
        """The unexpired latest prediction of each entity that has one."""

    def history(self, deployment: str, entity: str, limit: int, now: float) -> list[Prediction]:
        """The entity's unexpired predictions, newest trigger first."""

    def count(self, deployment: str) -> int:
        """Predictions stored (expired ones included until purged)."""

    def purge(self, now: float) -> int:
        """Remove expired predictions; returns how many."""

    def drop(self, deployment: str) -> None: ...

    def close(self) -> None: ...
