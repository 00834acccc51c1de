"""Predictions delivered as events: a realtime deployment with ``emit_events`` appends a
``realtime.prediction`` event to the event log for each prediction it newly stores, so webhooks
(and the event stream) can act on it.

The worker is a separate process with no database: it hands the events to the control plane
(``POST /namespaces/{ns}/realtime/{name}/prediction-events``, proving it is the revision's worker
with its replica token). `PredictionEvents` batches them: the executors' predictions that arrive
within ``linger_s`` of each other go in one request (a few per second, not one per prediction).

Delivery is at-least-once: `PredictionEvents.emit` returns only once its event is appended, and
the worker calls it before acknowledging the trigger. An append that fails fails the attempt; the
trigger runs again with ``attempts`` > 0, and the worker emits again although the prediction is a
duplicate by then (an earlier attempt may have stored it without its event reaching the log).
So an event may come twice, never not at all, except that a worker killed between storing a
prediction and its append loses the event on the embedded (SQLite) queue, whose restart does not
count the interrupted attempt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelyard.realtime.predictions import Prediction

MAX_VALUE_BYTES = 4096
"""A larger value is left out of the event (``value_truncated``): read it through the gateway."""
MAX_BATCH = 500
Send = Callable[[list[dict[str, Any]]], None]


class PredictionEvent(BaseModel):
    """One event's data as the worker sends it (the control plane adds ``revision``)."""

    model_config = ConfigDict(extra="forbid")
    deployment: str
    entity: str = Field(max_length=1024)
    model: str | None
    event_id: str = Field(max_length=1024)
    event_time: float
    written_at: float
    value: Any = None
    value_truncated: bool = False

    @field_validator("value")
    @classmethod
    def _small(cls, value: Any) -> Any:
        try:
            size = len(orjson.dumps(value))
        except TypeError as exc:  # orjson's JSONEncodeError: an integer past 64 bits
            raise ValueError(f"not storable as JSON here: {exc}") from None
        if size > MAX_VALUE_BYTES:
            raise ValueError(f"over {MAX_VALUE_BYTES} bytes as JSON: leave it out")
        return value

    def data(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class PredictionEventBatch(BaseModel):
    """What one ``POST .../prediction-events`` carries."""

    model_config = ConfigDict(extra="forbid")
    events: list[PredictionEvent] = Field(max_length=MAX_BATCH)


def event_data(prediction: Prediction) -> dict[str, Any]:
    """A prediction as the event's payload: the value only when small enough to carry."""
    data: dict[str, Any] = {
        "deployment": prediction.deployment,
        "entity": prediction.entity,
        "model": prediction.model,
        "event_id": prediction.event_id,
        "event_time": prediction.event_time,
        "written_at": prediction.written_at,
    }
    try:
        size = len(orjson.dumps(prediction.value))
    except TypeError:
        size = MAX_VALUE_BYTES + 1
    if size <= MAX_VALUE_BYTES:
        data["value"] = prediction.value
    else:
        data["value_truncated"] = True
    return data


class PredictionEvents:
    """A batching outbox in front of ``send`` (one call appends a list of payloads, or raises)."""

    def __init__(self, send: Send, linger_s: float = 0.02, timeout_s: float = 30.0) -> None:
        self.send = send
        self.linger_s = linger_s
        self.timeout_s = timeout_s
        self._pending: list[tuple[dict[str, Any], Future[None]]] = []
        self._ready = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="prediction-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._ready:
            self._stop = True
            self._ready.notify()
        self._thread.join(self.timeout_s)

    def emit(self, prediction: Prediction) -> None:
        """Return once the prediction's event is in the event log; raise when it is not."""
        error = self.emit_many([prediction])[0]
        if error is not None:
            raise error

    def emit_many(self, predictions: list[Prediction]) -> list[Exception | None]:
        """Return once each prediction's event is in the event log or failed: its error (None:
        appended), in the order given."""
        waiting: list[Future[None]] = []
        with self._ready:
            if self._stop:
                stopping = RuntimeError("the worker is stopping: the event was not appended")
                return [stopping for _ in predictions]
            for prediction in predictions:
                waiting.append(Future())
                self._pending.append((event_data(prediction), waiting[-1]))
            self._ready.notify()
        errors: list[Exception | None] = []
        for done in waiting:
            try:
                done.result(self.timeout_s)
                errors.append(None)
            except Exception as exc:
                errors.append(exc)
        return errors

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._pending and not self._stop:
                    self._ready.wait()
                if not self._pending:
                    return
                # the other executors' predictions of the moment join this request
                self._ready.wait_for(lambda: len(self._pending) >= MAX_BATCH, self.linger_s)
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                self.send([data for data, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    done.set_exception(exc)
            else:
                for _, done in batch:
                    done.set_result(None)
