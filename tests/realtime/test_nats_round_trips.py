"""NATS JetStream's round trips: the cursor is kept in memory between enqueues, yet another
process moving it (a router that took over, a drop) is never undone; a claim gets what the server
has in one fetch, and an idle claim does not wait longer than before."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from modelyard.realtime.backends import open_trigger_queue
from modelyard.realtime.queue import Trigger, TriggerQueue

DEPLOYMENT = "team/scorer"


@pytest.fixture
def queues(nats_url: str) -> Iterator[tuple[TriggerQueue, TriggerQueue]]:
    """Two clients of one server, as two processes have."""
    first, second = open_trigger_queue(nats_url), open_trigger_queue(nats_url)
    yield first, second
    first.close()
    second.close()


def triggers(first: int, count: int) -> list[Trigger]:
    return [Trigger(DEPLOYMENT, f"u{i}", i, f"e{i}", 0.0, 0.0) for i in range(first, first + count)]


def test_the_cursor_goes_only_forward_over_processes(
    queues: tuple[TriggerQueue, TriggerQueue],
) -> None:
    old, new = queues
    old.enqueue(DEPLOYMENT, triggers(1, 10), cursor=100)
    assert new.cursor(DEPLOYMENT) == 100
    new.enqueue(DEPLOYMENT, triggers(101, 10), cursor=200)  # a router that took over
    old.enqueue(DEPLOYMENT, triggers(11, 10), cursor=150)  # the one it replaced, late
    assert old.cursor(DEPLOYMENT) == new.cursor(DEPLOYMENT) == 200
    old.enqueue(DEPLOYMENT, [], cursor=250)
    assert new.cursor(DEPLOYMENT) == 250
    new.drop(DEPLOYMENT)  # starts over from the start: the other's memory does not hold it back
    old.enqueue(DEPLOYMENT, triggers(1, 10), cursor=10)
    assert new.cursor(DEPLOYMENT) == old.cursor(DEPLOYMENT) == 10
    old.drop(DEPLOYMENT)
    assert new.cursor(DEPLOYMENT) == 0
    new.enqueue(DEPLOYMENT, [], cursor=5)
    assert old.cursor(DEPLOYMENT) == 5


def test_a_claim_gets_what_the_server_has_at_once(
    queues: tuple[TriggerQueue, TriggerQueue],
) -> None:
    router, worker = queues
    assert worker.claim(DEPLOYMENT, 100, 60.0, now=time.time()) == []  # the consumer exists
    started = time.monotonic()
    assert worker.claim(DEPLOYMENT, 100, 60.0, now=time.time()) == []
    assert time.monotonic() - started < 1.0  # an idle worker polls again soon
    router.enqueue(DEPLOYMENT, triggers(1, 100), cursor=100)
    claimed = worker.claim(DEPLOYMENT, 100, 60.0, now=time.time())
    assert [t.seq for t in claimed] == list(range(1, 101))
    worker.ack_many(claimed)
    assert router.pending(DEPLOYMENT) == (0, None)
