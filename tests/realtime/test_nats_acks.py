"""NATS JetStream's acks: a batch's are sent without waiting on each, yet when ``ack_many``
returns the server has processed every one (the lag no longer counts them, nothing comes back)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from modelyard.realtime.backends import open_trigger_queue
from modelyard.realtime.queue import Trigger, TriggerQueue

DEPLOYMENTS = ("team/scorer", "team/ranker")


@pytest.fixture
def nats_queue(nats_url: str) -> Iterator[TriggerQueue]:
    opened = open_trigger_queue(nats_url)
    yield opened
    opened.close()


def claim_all(queue: TriggerQueue, deployment: str, count: int) -> list[Trigger]:
    claimed: list[Trigger] = []
    deadline = time.monotonic() + 10
    while len(claimed) < count and time.monotonic() < deadline:
        claimed += queue.claim(deployment, count - len(claimed), 60.0, now=time.time())
    assert len(claimed) == count
    return claimed


def test_a_batch_of_acks_over_deployments_is_done_when_ack_many_returns(
    nats_queue: TriggerQueue,
) -> None:
    claimed: list[Trigger] = []
    for deployment in DEPLOYMENTS:
        # 250 entities; the first 50 have a second trigger, which waits for the first's ack
        entities = [f"u{i}" for i in range(250)] + [f"u{i}" for i in range(50)]
        triggers = [Trigger(deployment, e, i, f"e{i}", 0.0, 0.0) for i, e in enumerate(entities, 1)]
        nats_queue.enqueue(deployment, triggers, cursor=300)
        nats_queue.ack_many(claim_all(nats_queue, deployment, 250))
        assert nats_queue.pending(deployment)[0] == 50
        claimed += claim_all(nats_queue, deployment, 50)
    nats_queue.ack_many(claimed)
    for deployment in DEPLOYMENTS:
        assert nats_queue.pending(deployment) == (0, None)
        # the server removed them from the stream: a new consumer has nothing to deliver
        nats_queue.release(deployment)
        assert nats_queue.pending(deployment) == (0, None)
        assert nats_queue.claim(deployment, 10, 60.0, now=time.time()) == []
