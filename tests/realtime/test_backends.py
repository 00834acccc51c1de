"""The backends' contracts, on every backend of each family: dedup by id for the whole retention
(across a restart too), history bounds, per-entity order of triggers, dead letters, at most one
prediction per (deployment, trigger, model version), latest never going back."""

from __future__ import annotations

import threading
import time
import uuid

from modelyard.realtime.backends import open_event_store
from modelyard.realtime.eventstore import EventStore
from modelyard.realtime.predictions import Prediction, PredictionStore
from modelyard.realtime.queue import Trigger, TriggerQueue
from modelyard.realtime.streams import NewEvent
from modelyard.testing import wait_for
from tests.realtime.conftest import REDIS_URL

S = "team/clicks"


def new(i: int, entity: str = "u1", type: str = "view", time: float = 100.0) -> NewEvent:
    return NewEvent(f"e{i}", entity, type, time + i, {"n": i})


def test_append_dedups_by_id_within_a_batch_and_across_restarts(
    event_store: EventStore, events_url: str
) -> None:
    assert event_store.append(S, [new(1), new(2), new(1)], 1.0) == [True, True, False]
    assert event_store.append(S, [new(2), new(3)], 2.0) == [False, True]
    assert event_store.append("team/other", [new(1)], 2.0) == [True]  # ids are per stream
    reopened = open_event_store(events_url)
    try:
        assert reopened.append(S, [new(3), new(4)], 3.0) == [False, True]
        assert [e.event_id for e in reopened.read(S, 0, 100)] == ["e1", "e2", "e3", "e4"]
    finally:
        reopened.close()


def test_history_holds_the_entity_up_to_the_trigger_and_never_later(
    event_store: EventStore,
) -> None:
    event_store.append(S, [new(i, "u1" if i % 2 else "u2") for i in range(1, 11)], 1.0)
    log = event_store.read(S, 0, 100)
    assert [e.seq for e in log] == sorted(e.seq for e in log)
    trigger = next(e for e in log if e.event_id == "e5")
    history = event_store.history(S, "u1", trigger.seq)
    assert [e.event_id for e in history] == ["e1", "e3", "e5"]
    assert history[-1].seq == trigger.seq
    assert [e.event_id for e in event_store.history(S, "u1", trigger.seq, limit=2)] == ["e3", "e5"]
    assert event_store.last_seq(S) == log[-1].seq
    assert event_store.pending(S, trigger.seq) == (5, 1.0)


def test_histories_of_a_batch_are_each_triggers_history(event_store: EventStore) -> None:
    event_store.append(S, [new(i, "u1" if i % 2 else "u2") for i in range(1, 11)], 1.0)
    log = event_store.read(S, 0, 100)
    wanted = [("u1", log[4].seq), ("u2", log[9].seq), ("u1", log[0].seq), ("nobody", 10**9)]
    assert event_store.histories(S, wanted, 3) == [
        event_store.history(S, entity, upto, 3) for entity, upto in wanted
    ]
    assert [e.event_id for e in event_store.histories(S, wanted, 3)[0]] == ["e1", "e3", "e5"]
    assert event_store.histories(S, [], 3) == []
    # a hot entity's run in one read: each its own history, the later ones after the earlier
    run = [("u1", log[8].seq), ("u2", log[1].seq), ("u1", log[2].seq), ("u1", log[6].seq)]
    appended = [new(i, "u1") for i in range(11, 14)]
    event_store.append(S, appended, 2.0)
    run += [("u1", e.seq) for e in event_store.read(S, log[-1].seq, 100)]
    assert event_store.histories(S, run, 4) == [
        event_store.history(S, entity, upto, 4) for entity, upto in run
    ]


def test_histories_read_again_are_the_log_s(event_store: EventStore) -> None:
    """A store reads the events it decoded before only once (a worker reads an entity's history
    at each trigger): what a history holds still is what the log holds."""

    def ids(upto: int, limit: int = 3) -> list[str]:
        return [e.event_id for e in event_store.histories(S, [("u1", upto)], limit)[0]]

    event_store.append(S, [new(i) for i in range(1, 7)], 1.0)
    log = event_store.read(S, 0, 100)
    assert ids(log[3].seq) == ["e2", "e3", "e4"]
    event_store.append(S, [new(7)], 2.0)
    assert ids(log[5].seq) == ["e4", "e5", "e6"]
    assert ids(log[1].seq) == ["e1", "e2"]  # an older trigger (a replay)
    assert ids(log[5].seq, limit=10) == ["e1", "e2", "e3", "e4", "e5", "e6"]
    event_store.purge(S, before=1.5)
    assert ids(2**62) == ["e7"]
    event_store.delete_entity(S, "u1")
    assert ids(2**62) == []


def test_delete_entity_and_retention(event_store: EventStore) -> None:
    event_store.append(S, [new(1), new(2, "u2")], 10.0)
    event_store.append(S, [new(3)], 20.0)
    assert event_store.delete_entity(S, "u2") == 1
    assert event_store.history(S, "u2") == []
    assert event_store.purge(S, before=15.0) == 1
    assert [e.event_id for e in event_store.read(S, 0, 10)] == ["e3"]


def test_concurrent_appends_commit_in_seq_order(event_store: EventStore) -> None:
    """A reader that follows the log by seq never misses an event appended concurrently."""
    seen: list[int] = []
    done = threading.Event()

    def follow() -> None:
        after = 0
        while not done.is_set() or event_store.read(S, after, 1):
            for event in event_store.read(S, after, 100):
                seen.append(int(event.event_id[1:]))
                after = event.seq

    def write(start: int) -> None:
        for i in range(start, start + 50):
            event_store.append(S, [new(i)], 1.0)

    reader = threading.Thread(target=follow)
    reader.start()
    writers = [threading.Thread(target=write, args=(k * 1000,)) for k in range(1, 4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join(30)
    assert sorted(seen) == sorted(i for k in range(1, 4) for i in range(k * 1000, k * 1000 + 50))


D = "team/scorer"


def trig(seq: int, entity: str) -> Trigger:
    return Trigger(D, entity, seq, f"e{seq}", float(seq), 0.0)


def test_one_entity_at_a_time_in_log_order_and_entities_in_parallel(queue: TriggerQueue) -> None:
    queue.enqueue(D, [trig(1, "a"), trig(2, "b"), trig(3, "a"), trig(4, "c")], cursor=4)
    queue.enqueue(D, [trig(3, "a")], cursor=3)  # a repeat: queued once, the cursor stays
    assert queue.cursor(D) == 4
    first = queue.claim(D, 2, 60.0, now=0.0)
    assert [(t.entity, t.seq) for t in first] == [("a", 1), ("b", 2)]
    # a's next waits for a's first; c is free
    assert [(t.entity, t.seq) for t in queue.claim(D, 10, 60.0, now=1.0)] == [("c", 4)]
    queue.ack(first[0])
    assert [(t.entity, t.seq) for t in queue.claim(D, 10, 60.0, now=1.0)] == [("a", 3)]
    assert queue.pending(D)[0] == 3
    # a worker that starts again gets every trigger the dead one held
    queue.release(D)
    assert [t.seq for t in queue.claim(D, 10, 60.0, now=2.0)] == [2, 3, 4]


def test_a_claim_takes_each_free_entitys_run_and_put_back_hands_it_out_again(
    queue: TriggerQueue,
) -> None:
    """A hot entity's queued triggers go out together, in log order; those put back (not
    attempted) go out again, after the entity's failed one, in order."""
    queue.enqueue(D, [trig(1, "a"), trig(2, "b"), trig(3, "a"), trig(4, "a")], cursor=4)
    first = queue.claim(D, 10, 60.0, now=0.0)
    assert [(t.entity, t.seq) for t in first] == [("a", 1), ("b", 2), ("a", 3), ("a", 4)]
    assert queue.claim(D, 10, 60.0, now=1.0) == []
    queue.ack_many(first[:2])
    assert queue.claim(D, 10, 60.0, now=1.0) == []  # a's 3 and 4 are still out
    queue.put_back(first[2:])
    again = queue.claim(D, 10, 60.0, now=1.0)
    assert [(t.seq, t.attempts) for t in again] == [(3, 0), (4, 0)]
    queue.ack_many(again)
    assert queue.pending(D) == (0, None)


def test_ack_many_lets_each_entity_go_on(queue: TriggerQueue) -> None:
    queue.enqueue(D, [trig(1, "a"), trig(2, "b"), trig(3, "a"), trig(4, "b")], cursor=4)
    first = queue.claim(D, 2, 60.0, now=0.0)
    queue.ack_many(first)
    queue.ack_many([])
    assert [(t.entity, t.seq) for t in queue.claim(D, 10, 60.0, now=1.0)] == [("a", 3), ("b", 4)]
    assert queue.pending(D)[0] == 2


def test_a_lease_that_ends_hands_the_trigger_out_again(queue: TriggerQueue) -> None:
    """A worker that died (or hangs) holding a trigger: it goes out again after the lease, on
    the real clock (JetStream's ack wait)."""
    queue.enqueue(D, [trig(1, "a"), trig(2, "a")], cursor=2)
    (held,) = queue.claim(D, 1, 1.0, now=time.time())
    again: list[Trigger] = []

    def handed_out_again() -> bool:
        again.extend(queue.claim(D, 1, 1.0, now=time.time()))
        return bool(again)

    wait_for(handed_out_again, 10, "the trigger after its lease", 0.05)
    assert [t.seq for t in again] == [1] and held.seq == 1
    queue.ack(again[0])
    assert [t.seq for t in queue.claim(D, 10, 1.0, now=time.time())] == [2]


def test_dead_letters_step_aside_and_can_be_retried(queue: TriggerQueue) -> None:
    """As the worker does it: the entity's first fails, its next (not attempted) is put back."""
    queue.enqueue(D, [trig(1, "a"), trig(2, "a")], cursor=2)
    first = queue.claim(D, 10, 60.0, now=0.0)
    assert [t.seq for t in first] == [1, 2]
    assert not queue.fail(first[0], "Traceback: boom", max_attempts=2, now=1.0)
    queue.put_back(first[1:])
    again: list[Trigger] = []

    def out_again() -> bool:  # NATS: once the server delivers the nak'ed one again
        again.extend(queue.claim(D, 10, 60.0, now=2.0))
        return bool(again)

    wait_for(out_again, 10, "the failed trigger again", 0.05)
    assert [(t.seq, t.attempts) for t in again] == [(1, 1), (2, 0)]
    assert queue.fail(again[0], "Traceback: boom again", max_attempts=2, now=3.0)
    queue.put_back(again[1:])
    (dead,) = queue.dead_letters(D)
    assert (dead.seq, dead.attempts, dead.error) == (1, 2, "Traceback: boom again")
    (t,) = queue.claim(D, 10, 60.0, now=4.0)
    assert t.seq == 2  # the entity goes on
    queue.ack(t)
    assert queue.retry(D) == 1
    assert [t.seq for t in queue.claim(D, 10, 60.0, now=5.0)] == [1]
    assert queue.dead_letters(D) == []


def prediction(seq: int, model: str | None = "team/m@1", value: float = 0.5) -> Prediction:
    return Prediction(
        deployment=D,
        entity="u1",
        value=value,
        model=model,
        event_id=f"e{seq}",
        seq=seq,
        event_time=float(seq),
        written_at=float(seq),
        expires_at=1e12,
    )


def test_at_most_one_prediction_per_trigger_and_model_version(
    prediction_store: PredictionStore,
) -> None:
    assert prediction_store.put(prediction(5))
    assert not prediction_store.put(prediction(5, value=0.9))  # a retry writes nothing
    assert prediction_store.put(prediction(5, model="team/m@2", value=0.7))
    assert prediction_store.count(D) == 2
    assert prediction_store.latest(D, ["u1"], now=0.0)["u1"].value == 0.7


def test_put_many_is_put_of_each_in_order(prediction_store: PredictionStore) -> None:
    batch = [prediction(5), prediction(9, value=0.9), prediction(5, value=0.1), prediction(7)]
    assert prediction_store.put_many(batch) == [True, True, False, True]
    assert prediction_store.put_many([prediction(9), prediction(11)]) == [False, True]
    assert prediction_store.put_many([]) == []
    assert [p.seq for p in prediction_store.history(D, "u1", 10, now=0.0)] == [11, 9, 7, 5]
    assert prediction_store.latest(D, ["u1"], now=0.0)["u1"].seq == 11
    assert prediction_store.history(D, "u1", 10, now=0.0)[-1].value == 0.5


def test_redis_reads_a_latest_written_before_it_kept_its_body() -> None:
    """A store written by the earlier version (the latest's key without its body) still serves
    the latest, through the prediction's own key."""
    import redis

    from modelyard.realtime.backends.redis import RedisPredictionStore

    store = RedisPredictionStore(f"{REDIS_URL}?prefix=test-{uuid.uuid4().hex[:12]}")
    try:
        store.put(prediction(7, value=0.7))
        with redis.Redis.from_url(REDIS_URL) as r:
            assert r.hdel(store._key(D, "l", "u1"), "body") == 1
        assert store.latest(D, ["u1", "nobody"], now=0.0)["u1"].value == 0.7
        store.put(prediction(8, value=0.8))  # a new latest keeps its body again
        assert store.latest(D, ["u1"], now=0.0)["u1"].value == 0.8
    finally:
        store.drop(D)
        store.close()


def test_latest_never_goes_back_to_an_older_trigger(prediction_store: PredictionStore) -> None:
    prediction_store.put(prediction(7, value=0.7))
    prediction_store.put(prediction(3, value=0.3))  # an old trigger retried late
    assert prediction_store.latest(D, ["u1", "nobody"], now=0.0)["u1"].seq == 7
    assert [p.seq for p in prediction_store.history(D, "u1", 10, now=0.0)] == [7, 3]
    soon = time.time() + 5
    prediction_store.put(prediction(9, value=0.9).model_copy(update={"expires_at": soon}))
    assert prediction_store.latest(D, ["u1"], now=0.0)["u1"].seq == 9
    assert prediction_store.latest(D, ["u1"], now=soon + 1) == {}  # expired: not served
    prediction_store.purge(now=soon + 1)  # SQLite removes it now; Redis expires it itself
    assert prediction_store.latest(D, ["u1"], now=soon + 1) == {}
