"""Backends of the realtime loop, chosen by URL scheme: the raw log, the queue, predictions.

Built-ins: ``sqlite`` for all three (the embedded default, files under the home), ``postgresql``
for the raw log, ``nats`` (JetStream) for the queue, ``redis`` for predictions. A package adds
another scheme with an entry point in ``modelyard.realtime.event_stores``,
``modelyard.realtime.queues`` or ``modelyard.realtime.prediction_stores`` naming a class whose
constructor takes the URL. Each module imports its client library in the constructor, so choosing
a backend costs nothing until it is opened.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import urlsplit

from modelyard.errors import ConfigError
from modelyard.plugins import Family
from modelyard.realtime.eventstore import EventStore
from modelyard.realtime.predictions import PredictionStore
from modelyard.realtime.queue import TriggerQueue

_BUILTINS = {
    "event_stores": {
        "sqlite": "modelyard.realtime.backends.sqlite:SqliteEventStore",
        "postgresql": "modelyard.realtime.backends.postgres:PostgresEventStore",
    },
    "queues": {
        "sqlite": "modelyard.realtime.backends.sqlite:SqliteTriggerQueue",
        "nats": "modelyard.realtime.backends.nats:NatsTriggerQueue",
    },
    "prediction_stores": {
        "sqlite": "modelyard.realtime.backends.sqlite:SqlitePredictionStore",
        "redis": "modelyard.realtime.backends.redis:RedisPredictionStore",
    },
}


def open_event_store(url: str) -> EventStore:
    return cast(EventStore, _open("event_stores", url))


def open_trigger_queue(url: str) -> TriggerQueue:
    return cast(TriggerQueue, _open("queues", url))


def open_prediction_store(url: str) -> PredictionStore:
    return cast(PredictionStore, _open("prediction_stores", url))


_FAMILIES: dict[str, Family[object]] = {
    family: Family(
        f"realtime {family.replace('_', ' ').rstrip('s')}",
        f"modelyard.realtime.{family}",
        object,
        builtins,
        error=ConfigError,
    )
    for family, builtins in _BUILTINS.items()
}


def schemes(family: str) -> list[str]:
    """Built-in schemes of ``family``, then those installed packages add, sorted."""
    return _FAMILIES[family].names()


def _scheme(family: str, url: str) -> str:
    """The backend scheme of ``url``; a `ConfigError` naming the schemes there are if none."""
    scheme = urlsplit(url).scheme.partition("+")[0]
    plugins = _FAMILIES[family]
    if plugins.target(scheme) is None or ":" in scheme:
        raise ConfigError(
            f"no {plugins.what} for {url!r}: use a URL starting with one of "
            f"{', '.join(s + '://' for s in schemes(family))}"
        )
    return scheme


def _open(family: str, url: str) -> Any:
    return _FAMILIES[family].load(_scheme(family, url))(url)  # type: ignore[call-arg]


class RealtimeStores:
    """The three stores of one installation, opened on first use (the control plane's handle for
    deleting an entity's events, dead letters and a deleted deployment's state)."""

    def __init__(self, events_url: str, queue_url: str, predictions_url: str) -> None:
        """Connects to nothing yet, but refuses a URL no backend takes (at start, not at the
        first event)."""
        self.urls = {"events": events_url, "queue": queue_url, "predictions": predictions_url}
        _scheme("event_stores", events_url)
        _scheme("queues", queue_url)
        _scheme("prediction_stores", predictions_url)
        self._events: EventStore | None = None
        self._queue: TriggerQueue | None = None
        self._predictions: PredictionStore | None = None

    @property
    def events(self) -> EventStore:
        if self._events is None:
            self._events = open_event_store(self.urls["events"])
        return self._events

    @property
    def queue(self) -> TriggerQueue:
        if self._queue is None:
            self._queue = open_trigger_queue(self.urls["queue"])
        return self._queue

    @property
    def predictions(self) -> PredictionStore:
        if self._predictions is None:
            self._predictions = open_prediction_store(self.urls["predictions"])
        return self._predictions

    def close(self) -> None:
        for store in (self._events, self._queue, self._predictions):
            if store is not None:
                store.close()
