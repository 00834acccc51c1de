"""Predictions delivered as events (``emit_events``): each new prediction appends a
``realtime.prediction`` event, at least once, which a webhook delivers."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from modelyard.errors import Forbidden, InvalidInput
from modelyard.events.webhooks import SIGNATURE_HEADER, verify_signature
from modelyard.realtime.emitter import MAX_VALUE_BYTES, PredictionEvents, event_data
from modelyard.realtime.eventstore import EventStore
from modelyard.realtime.predictions import Prediction, PredictionStore
from modelyard.realtime.queue import TriggerQueue
from modelyard.realtime.worker import Worker
from modelyard.testing import free_port, wait_for
from tests.conftest import Serving
from tests.events.test_webhooks import Receiver
from tests.realtime.test_end_to_end import _event, setup
from tests.realtime.test_worker import D, S, drain, events, spec


class Appender:
    """The control plane's side of `PredictionEvents`: records each batch, refuses the first
    ``refuse`` calls."""

    def __init__(self, refuse: int = 0) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.refuse = refuse
        self.lock = threading.Lock()

    def __call__(self, batch: list[dict[str, Any]]) -> None:
        with self.lock:
            if self.refuse:
                self.refuse -= 1
                raise ConnectionError("the control plane is down")
            self.batches.append(batch)

    def ids(self) -> list[str]:
        return [data["event_id"] for batch in self.batches for data in batch]


def test_each_new_prediction_is_emitted_and_a_failed_append_is_retried(
    event_store: EventStore, queue: TriggerQueue, prediction_store: PredictionStore
) -> None:
    appender = Appender(refuse=1)
    emitter = PredictionEvents(appender, linger_s=0.001)
    emitter.start()
    worker = Worker(D, spec(), event_store, queue, prediction_store, None, emitter=emitter)
    try:
        event_store.append(S, events(12), 1.0)
        triggers = {e.event_id for e in event_store.read(S, 0, 100) if e.type == "cart"}

        # the refused append failed its attempt: the trigger ran again, its prediction already
        # stored, and its event went out then
        def emitted() -> bool:
            drain(worker)
            return set(appender.ids()) == triggers

        wait_for(emitted, 30, "every event")
        assert sorted(appender.ids()) == sorted(triggers)  # none twice: no attempt died
        assert prediction_store.count(D) == len(triggers)
        assert not queue.dead_letters(D)
        first = next(d for b in appender.batches for d in b if d["event_id"] == "e0")
        assert (first["deployment"], first["entity"], first["model"]) == (D, "u1", None)
        assert first["value"]["n"] == 0
    finally:
        emitter.stop()


def test_a_large_value_is_left_out_of_its_event() -> None:
    big = Prediction(
        deployment=D,
        entity="u1",
        value="x" * MAX_VALUE_BYTES,
        model=None,
        event_id="e1",
        seq=1,
        event_time=1.0,
        written_at=2.0,
        expires_at=3.0,
    )
    data = event_data(big)
    assert "value" not in data and data["value_truncated"] is True
    assert event_data(big.model_copy(update={"value": 0.5}))["value"] == 0.5


@pytest.mark.slow
def test_a_webhook_gets_each_new_prediction(serving: Serving) -> None:
    receiver = Receiver(free_port())
    try:
        url = f"http://127.0.0.1:{receiver.server.server_port}/hook"
        _, secret = serving.client.create_webhook("team", url, ["realtime.prediction"])
        setup(serving, emit_events=True)
        stream = serving.client.stream("team", "clicks")
        stream.send_many([_event(i, "u1", "cart") for i in (1, 2)] + [_event(3, "u2", "view")])
        stream.send(_event(1, "u1", "cart"))  # a duplicate: no new prediction, no event

        def delivered() -> list[dict[str, Any]]:
            return [json.loads(body) for _, body in list(receiver.received)]

        wait_for(lambda: len(delivered()) >= 3, 60, "three webhook deliveries")
        headers, body = receiver.received[0]
        assert verify_signature(secret, body, headers[SIGNATURE_HEADER])
        got = sorted(delivered(), key=lambda e: e["data"]["event_id"])
        assert [e["type"] for e in got] == ["realtime.prediction"] * 3
        assert [e["subject"] for e in got] == ["team/scorer"] * 3
        assert [e["data"]["event_id"] for e in got] == ["e-1", "e1", "e2"]  # with setup's
        data = got[2]["data"]
        assert (data["entity"], data["value"]["n"], data["model"]) == ("u1", 2, None)
        assert data["revision"] == serving.client.realtime.get("team", "scorer").revision
        # only the deployment's worker appends its events
        path = "/namespaces/team/realtime/scorer/prediction-events"
        sent = {k: v for k, v in got[0]["data"].items() if k != "revision"}
        with pytest.raises(Forbidden, match="replica token"):
            serving.client.request("POST", path, json={"events": [sent]})
        with pytest.raises(InvalidInput):
            serving.client.request("POST", path, json={"events": [{"entity": "u1"}]})
    finally:
        receiver.close()
