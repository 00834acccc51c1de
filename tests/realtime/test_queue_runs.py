"""Runs: a claim hands out, of each entity with nothing out, all its queued triggers in log order
(up to the limit), so a hot entity's backlog goes out in one batch; the entity's others wait until
the whole run is acked, failed or put back; a failed trigger goes first again, then those put back.
On every queue backend."""

from __future__ import annotations

from collections.abc import Sequence

from modelyard.realtime.queue import Trigger, TriggerQueue
from modelyard.testing import wait_for

D = "team/scorer"


def trig(seq: int, entity: str) -> Trigger:
    return Trigger(D, entity, seq, f"e{seq}", float(seq), 0.0)


def by_entity(claimed: Sequence[Trigger]) -> dict[str, list[int]]:
    runs: dict[str, list[int]] = {}
    for t in claimed:
        runs.setdefault(t.entity, []).append(t.seq)
    return runs


HOT = [1, 3, 4, 6, 7]


def enqueue_hot_and_two_others(queue: TriggerQueue) -> None:
    others = {2: "b", 5: "c"}
    triggers = [trig(seq, others.get(seq, "hot")) for seq in range(1, 8)]
    queue.enqueue(D, triggers, cursor=7)


def test_a_hot_entity_goes_out_as_one_run_in_log_order(queue: TriggerQueue) -> None:
    enqueue_hot_and_two_others(queue)
    claimed = queue.claim(D, 10, 60.0, now=0.0)
    assert by_entity(claimed) == {"hot": HOT, "b": [2], "c": [5]}
    assert [t.seq for t in claimed] == list(range(1, 8))  # in log order
    assert all(t.attempts == 0 for t in claimed)
    assert queue.claim(D, 10, 60.0, now=1.0) == []  # all on lease
    queue.ack_many(claimed)
    assert queue.claim(D, 10, 60.0, now=2.0) == []
    assert queue.pending(D)[0] == 0


def test_the_entity_waits_until_none_of_its_run_is_out(queue: TriggerQueue) -> None:
    enqueue_hot_and_two_others(queue)
    claimed = queue.claim(D, 10, 60.0, now=0.0)
    run = [t for t in claimed if t.entity == "hot"]
    queue.ack_many([t for t in claimed if t.entity != "hot"] + run[:4])
    queue.enqueue(D, [trig(8, "hot")], cursor=8)
    assert queue.claim(D, 10, 60.0, now=1.0) == []  # the run's last is still out
    queue.ack_many(run[4:])
    assert [(t.entity, t.seq) for t in queue.claim(D, 10, 60.0, now=2.0)] == [("hot", 8)]


def test_a_failed_run_goes_out_again_from_its_failed_trigger(queue: TriggerQueue) -> None:
    """The worker acks the run's first two, fails the third and puts the last two back: the
    next claim gives the failed one (an attempt counted) then the two put back (none), never
    those before the failed one is back (NATS: its redelivery after the nak)."""
    enqueue_hot_and_two_others(queue)
    claimed = queue.claim(D, 10, 60.0, now=0.0)
    run = [t for t in claimed if t.entity == "hot"]
    queue.ack_many([t for t in claimed if t.entity != "hot"] + run[:2])
    assert not queue.fail(run[2], "Traceback: boom", max_attempts=3, now=1.0)
    queue.put_back(run[3:])
    again: list[Trigger] = []

    def claimed_again() -> bool:
        again.extend(queue.claim(D, 10, 60.0, now=2.0))
        return bool(again)

    wait_for(claimed_again, 10, "the failed trigger's run again", 0.02)
    assert [(t.entity, t.seq, t.attempts) for t in again] == [
        ("hot", 4, 1),
        ("hot", 6, 0),
        ("hot", 7, 0),
    ]
    assert queue.claim(D, 10, 60.0, now=3.0) == []
    queue.ack_many(again)
    assert queue.pending(D)[0] == 0


def test_after_a_dead_letter_the_run_put_back_goes_on(queue: TriggerQueue) -> None:
    enqueue_hot_and_two_others(queue)
    run = [t for t in queue.claim(D, 10, 60.0, now=0.0) if t.entity == "hot"]
    queue.ack_many(run[:2])
    assert queue.fail(run[2], "Traceback: boom", max_attempts=1, now=1.0)
    queue.put_back(run[3:])
    again = queue.claim(D, 10, 60.0, now=2.0)
    assert [(t.entity, t.seq, t.attempts) for t in again] == [("hot", 6, 0), ("hot", 7, 0)]
    assert [d.seq for d in queue.dead_letters(D)] == [4]


def test_a_run_put_back_whole_goes_out_again_with_no_attempt_counted(queue: TriggerQueue) -> None:
    enqueue_hot_and_two_others(queue)
    claimed = queue.claim(D, 10, 60.0, now=0.0)
    queue.put_back(claimed)
    again = queue.claim(D, 10, 60.0, now=1.0)
    assert by_entity(again) == {"hot": HOT, "b": [2], "c": [5]}
    assert all(t.attempts == 0 for t in again)
    queue.ack_many(again)
    assert queue.pending(D)[0] == 0


def test_a_run_cut_at_the_limit_holds_the_rest_back_until_it_is_done(queue: TriggerQueue) -> None:
    queue.enqueue(D, [trig(seq, "hot") for seq in range(1, 6)] + [trig(6, "b")], cursor=6)
    first = queue.claim(D, 3, 60.0, now=0.0)
    assert [(t.entity, t.seq) for t in first] == [("hot", 1), ("hot", 2), ("hot", 3)]
    # the rest of the hot entity's stays queued while the run's first part is out
    assert [(t.entity, t.seq) for t in queue.claim(D, 10, 60.0, now=1.0)] == [("b", 6)]
    assert queue.claim(D, 10, 60.0, now=1.0) == []
    queue.ack_many(first)
    rest = queue.claim(D, 10, 60.0, now=2.0)
    assert [(t.entity, t.seq) for t in rest] == [("hot", 4), ("hot", 5)]
