"""A worker with real stores, in this process: routing, per-entity order, history bounds,
dead letters that do not stop other entities, and replay giving what serving gave."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.controlplane import ControlPlane
from modelyard.realtime.backends import (
    open_event_store,
    open_prediction_store,
    open_trigger_queue,
)
from modelyard.realtime.eventstore import EventStore
from modelyard.realtime.models import ModelSource
from modelyard.realtime.predictions import PredictionStore
from modelyard.realtime.queue import TriggerQueue
from modelyard.realtime.records import RealtimeSpec
from modelyard.realtime.replay import replay, write_rows
from modelyard.realtime.rules import TriggerRule
from modelyard.realtime.streams import NewEvent
from modelyard.realtime.worker import Worker, _first_model
from modelyard.registry.records import VersionSpec
from modelyard.testing import free_port, wait_for
from modelyard.types import ModelRef
from tests.conftest import iris_model

D = "team/scorer"
S = "team/clicks"


def spec(function: str = "tests.realtime.functions:score", **rule: object) -> RealtimeSpec:
    return RealtimeSpec(
        stream="clicks",
        function=function,
        rule=TriggerRule.model_validate(rule or {"types": ["cart"]}),
        max_attempts=2,
    )


def drain(worker: Worker) -> None:
    while worker.route_once() or worker.work_once():
        pass


def events(n: int, entities: tuple[str, ...] = ("u1", "u2")) -> list[NewEvent]:
    return [
        NewEvent(
            f"e{i}", entities[i % len(entities)], "cart" if i % 3 == 0 else "view", i, {"n": i}
        )
        for i in range(n)
    ]


def test_each_trigger_one_prediction_with_its_bounded_history(
    event_store: EventStore, queue: TriggerQueue, prediction_store: PredictionStore
) -> None:
    worker = Worker(D, spec(), event_store, queue, prediction_store, None)
    event_store.append(S, events(30), 1.0)
    drain(worker)
    event_store.append(S, events(60)[30:], 2.0)  # more after the first drain
    drain(worker)
    log = event_store.read(S, 0, 1000)
    triggers = [e for e in log if e.type == "cart"]
    assert prediction_store.count(D) == len(triggers) == 20
    for entity in ("u1", "u2"):
        made = prediction_store.history(D, entity, 100, now=0.0)
        expected = [e for e in triggers if e.entity == entity]
        assert [p.event_id for p in reversed(made)] == [e.event_id for e in expected]
        for p in made:  # every event of the entity up to the trigger, none later
            assert p.value["seqs"] == [e.seq for e in log if e.entity == entity and e.seq <= p.seq]
    assert queue.pending(D) == (0, None)


def test_a_failing_entity_goes_to_dead_letters_and_others_go_on(
    event_store: EventStore, queue: TriggerQueue, prediction_store: PredictionStore
) -> None:
    worker = Worker(
        D, spec("tests.realtime.functions:flaky"), event_store, queue, prediction_store, None
    )
    event_store.append(S, events(12, ("bad", "good")), 1.0)
    drain(worker)
    dead = queue.dead_letters(D)
    assert [d.entity for d in dead] == ["bad", "bad"]
    assert all("RuntimeError: cannot score" in d.error for d in dead)
    assert len(prediction_store.history(D, "good", 100, now=0.0)) == 2
    assert queue.retry(D) == 2
    drain(worker)
    assert len(queue.dead_letters(D)) == 2  # still failing: back among the dead letters


def test_a_trigger_that_fails_in_a_batch_leaves_the_others_stored_and_acknowledged(
    event_store: EventStore, queue: TriggerQueue, prediction_store: PredictionStore
) -> None:
    worker = Worker(
        D, spec("tests.realtime.functions:flaky"), event_store, queue, prediction_store, None
    )
    entities = ["a", "bad", "b", "c"]
    event_store.append(S, [NewEvent(f"e{i}", e, "cart", i, {}) for i, e in enumerate(entities)], 1)
    worker.route_once()
    assert worker.work_once(limit=10) == 4  # one batch
    assert sorted(p for e in entities for p in prediction_store.latest(D, [e], 0.0)) == [
        "a",
        "b",
        "c",
    ]
    assert queue.pending(D)[0] == 1  # the failed one is back for another attempt
    wait_for(lambda: worker.work_once(limit=10) > 0, 10, "the failed trigger again")
    (dead,) = queue.dead_letters(D)
    assert (dead.entity, dead.attempts) == ("bad", 2)
    assert "RuntimeError: cannot score e1" in dead.error
    assert queue.pending(D) == (0, None) and prediction_store.count(D) == 3


def test_a_hot_entitys_run_goes_in_one_batch_and_stops_at_its_failed_trigger(
    event_store: EventStore, queue: TriggerQueue, prediction_store: PredictionStore
) -> None:
    """An entity's queued triggers are claimed together; after one fails, the entity's later
    ones are neither stored nor attempted: they run after the failed one is done with."""
    worker = Worker(
        D, spec("tests.realtime.functions:picky"), event_store, queue, prediction_store, None
    )
    sent = [("hot", {}), ("cold", {}), ("hot", {"boom": 1}), ("hot", {}), ("hot", {})]
    event_store.append(S, [NewEvent(f"e{i}", u, "cart", i, d) for i, (u, d) in enumerate(sent)], 1)
    worker.route_once()
    assert worker.work_once(limit=10) == 5  # one batch: the hot entity's run and the cold one
    assert [p.event_id for p in prediction_store.history(D, "hot", 9, 0)] == ["e0"]
    assert prediction_store.latest(D, ["cold"], 0)["cold"].event_id == "e1"
    assert queue.pending(D)[0] == 3  # e2 failed once, e3 and e4 put back unattempted
    drain(worker)  # e2 fails again: a dead letter; then e3 and e4, in order
    (dead,) = queue.dead_letters(D)
    assert (dead.event_id, dead.attempts) == ("e2", 2)
    made = prediction_store.history(D, "hot", 9, 0)
    assert [p.event_id for p in made] == ["e4", "e3", "e0"]
    assert made[0].written_at >= made[1].written_at
    assert queue.pending(D) == (0, None)


def test_a_batched_function_scores_a_batch_in_one_call_and_a_bad_row_fails_alone(
    event_store: EventStore, queue: TriggerQueue, prediction_store: PredictionStore
) -> None:
    from tests.realtime import functions

    worker = Worker(
        D, spec("tests.realtime.functions:score_batch"), event_store, queue, prediction_store, None
    )
    event_store.append(S, [NewEvent(f"e{i}", e, "cart", 1, {}) for i, e in enumerate("abc")], 1)
    worker.route_once()
    functions.CALLS.clear()
    assert worker.work_once(limit=10) == 3
    assert functions.CALLS == [3]  # one call for the batch
    assert prediction_store.latest(D, ["c"], 0.0)["c"].value["seqs"] == [3]  # its own history
    entities = ["d", "bad", "e"]
    event_store.append(S, [NewEvent(f"f{i}", e, "cart", 2, {}) for i, e in enumerate(entities)], 2)
    worker.route_once()
    functions.CALLS.clear()
    assert worker.work_once(limit=10) == 3
    # the batch's call failed on "bad": then each trigger alone, so only "bad" failed
    assert functions.CALLS == [3, 1, 1, 1]
    assert sorted(prediction_store.latest(D, entities, 0.0)) == ["d", "e"]
    assert queue.pending(D)[0] == 1
    online = {p.event_id: p.value for e in "abcde" for p in prediction_store.history(D, e, 9, 0)}
    # replay gives the same values, batched (differently: all at once) or one at a time
    alone = replay(event_store, "team", spec("tests.realtime.functions:score"), 0, 9, None)
    assert {r["event_id"]: r["value"] for r in alone if r["entity"] != "bad"} == online
    batch = replay(event_store, "team", spec("tests.realtime.functions:score_batch"), 0, 2, None)
    assert {r["event_id"]: r["value"] for r in batch} == {
        k: v for k, v in online.items() if k.startswith("e")
    }


def test_a_batched_function_returning_too_few_values_fails_each_trigger_with_the_reason(
    event_store: EventStore, queue: TriggerQueue, prediction_store: PredictionStore
) -> None:
    worker = Worker(
        D, spec("tests.realtime.functions:short_batch"), event_store, queue, prediction_store, None
    )
    event_store.append(S, [NewEvent(f"e{i}", e, "cart", i, {}) for i, e in enumerate("ab")], 1)
    drain(worker)
    dead = queue.dead_letters(D)
    assert sorted(d.entity for d in dead) == ["a", "b"]
    assert all(
        "returns one value per history: it got 1 histories and returned 0" in d.error for d in dead
    )
    assert prediction_store.count(D) == 0


WORKER = """
import sys, threading
from modelyard.realtime.backends import *
from modelyard.realtime.records import RealtimeSpec
from modelyard.realtime.worker import Worker
deployment, spec, events, queue, predictions = sys.argv[1:]
Worker(deployment, RealtimeSpec.model_validate_json(spec), open_event_store(events),
       open_trigger_queue(queue), open_prediction_store(predictions), None).start()
threading.Event().wait()
"""


def test_kill_9_in_the_middle_of_a_batch_loses_and_duplicates_nothing(
    events_url: str, queue_url: str, predictions_url: str, tmp_path: Path
) -> None:
    """A worker process killed while its batches are half done (some predictions computed,
    some stored, none of a batch acknowledged): the next worker makes each missing prediction
    once, in each entity's log order, and none twice."""
    entities = ["a", "b", "stall", "c", "d"]
    new = [NewEvent(f"e{i}", entities[i % 5], "cart", i, {}) for i in range(60)]
    marker, root = tmp_path / "stalled", Path(__file__).parents[2]
    stalling = spec("tests.realtime.functions:stall").model_dump_json()
    urls = [events_url, queue_url, predictions_url]
    store, queue, predictions = (
        open_event_store(events_url),
        open_trigger_queue(queue_url),
        open_prediction_store(predictions_url),
    )
    try:
        store.append(S, new, 1.0)
        env = {**os.environ, "STALL_MARKER": str(marker), "PYTHONPATH": f"{root}:{root / 'src'}"}
        process = subprocess.Popen([sys.executable, "-c", WORKER, D, stalling, *urls], env=env)
        try:
            wait_for(marker.exists, 60, "the worker in the middle of a batch")
        finally:
            process.kill()
            process.wait()
        # the deployment's next worker, as its supervisor starts it after the dead one
        worker = Worker(D, spec("tests.realtime.functions:flaky"), store, queue, predictions, None)
        worker.queue.release(D)
        drain(worker)
        assert queue.pending(D) == (0, None) and queue.dead_letters(D) == []
        assert predictions.count(D) == len(new)  # one per trigger: none lost, none twice
        log = store.read(S, 0, 1000)
        for entity in entities:
            made = sorted(
                predictions.history(D, entity, 100, now=0.0), key=lambda p: (p.written_at, p.seq)
            )
            ours = [e for e in log if e.entity == entity]
            assert [p.event_id for p in made] == [e.event_id for e in ours]  # in log order
            assert [p.value for p in made] == list(range(1, len(ours) + 1))  # bounded histories
    finally:
        predictions.drop(D)
        for opened in (store, queue, predictions):
            opened.close()


def test_replay_gives_the_online_predictions(
    event_store: EventStore,
    queue: TriggerQueue,
    prediction_store: PredictionStore,
    tmp_path: object,
) -> None:
    rule: dict[str, Any] = {"types": ["cart"], "debounce": "4s"}
    worker = Worker(D, spec(**rule), event_store, queue, prediction_store, None)
    event_store.append(S, events(40, ("u1", "u2", "u3")), 1.0)
    drain(worker)
    online = {
        p.event_id: p.value
        for entity in ("u1", "u2", "u3")
        for p in prediction_store.history(D, entity, 100, now=0.0)
    }
    replayed = {
        r["event_id"]: r["value"] for r in replay(event_store, "team", spec(**rule), 0, 1e9, None)
    }
    assert replayed == online and len(online) > 3
    window = list(replay(event_store, "team", spec(**rule), 10, 25, None))
    assert window and all(10 <= r["event_time"] < 25 for r in window)
    assert {r["event_id"] for r in window} <= set(online)
    path = write_rows(window, tmp_path / "out")  # type: ignore[operator]
    assert path.exists()


def test_a_worker_starting_while_the_control_plane_is_down_waits_for_it(
    plane: ControlPlane, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No supervisor restarts a worker while its control plane is down: the worker's first model
    load waits for the API instead of failing the start; stopped meanwhile, it gives up."""
    plane.ensure_admin_key()
    token = plane.settings.admin_key_path.read_text().strip()
    with BackgroundServer(plane) as server, Client(server.url, token) as admin:
        admin.create_namespace("team")
        admin.push("team/iris", iris_model(tmp_path / "v1"), VersionSpec(runtime="sklearn"))
    port = free_port()
    ref = ModelRef.parse("team/iris@latest")
    models = ModelSource(Client(f"http://127.0.0.1:{port}", token, cache_dir=tmp_path / "c"), ref)
    stopped, loaded = threading.Event(), []
    thread = threading.Thread(target=lambda: loaded.append(_first_model(models, stopped)))
    with caplog.at_level(logging.WARNING, "modelyard.realtime.worker"):
        thread.start()
        wait_for(lambda: "cannot reach the control plane" in caplog.text, 10, "a failed try")
        with BackgroundServer(plane, port=port):
            thread.join(30)
    assert loaded == [True] and models.current().label == "team/iris@1"
    models.client.close()
    # stopped while the control plane is down
    down = ModelSource(Client(f"http://127.0.0.1:{free_port()}", token), ref)
    stopped.set()
    assert _first_model(down, stopped) is False
    down.client.close()
