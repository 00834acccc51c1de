from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.events.consumers import DurableConsumer
from modelyard.events.log import EventLog
from modelyard.events.records import Event
from modelyard.events.types import EventType
from modelyard.store.db import Database
from modelyard.testing import wait_for

CREATED = EventType.NAMESPACE_CREATED


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'events.db'}")
    database.migrate()
    yield database
    database.dispose()


def append(log: EventLog, type: EventType, subject: str = "s") -> int:
    with log.db.write() as session:
        return log.append(session, type, subject, {"n": subject}).id


def test_ids_increase_and_subscribers_hear_only_committed_events(db: Database) -> None:
    log = EventLog(db)
    heard: list[int] = []
    log.subscribe(heard.append)
    first, second = (
        append(log, EventType.NAMESPACE_CREATED),
        append(log, EventType.NAMESPACE_CREATED),
    )
    assert first < second and heard == [first, second]
    with pytest.raises(RuntimeError), log.db.write() as session:
        log.append(session, EventType.KEY_CREATED, "rolled back")
        raise RuntimeError("the change failed")
    assert heard == [first, second]
    assert [e.type for e in log.read()] == [
        EventType.NAMESPACE_CREATED,
        EventType.NAMESPACE_CREATED,
    ]


def test_a_durable_consumer_resumes_from_its_cursor_after_a_restart(db: Database) -> None:
    handled: list[int] = []
    log = EventLog(db)
    ids = [append(log, EventType.KEY_REVOKED, str(i)) for i in range(3)]
    consumer = DurableConsumer("indexer", log, lambda e: handled.append(e.id))
    assert consumer.run_once() == 3
    more = [append(log, EventType.KEY_REVOKED, str(i)) for i in range(2)]

    restarted = DurableConsumer("indexer", EventLog(db), lambda e: handled.append(e.id))
    assert restarted.cursor() == ids[-1]
    restarted.run_once()
    assert handled == ids + more


def test_a_failing_handler_gets_the_event_again(db: Database) -> None:
    log = EventLog(db)
    event_id = append(log, EventType.KEY_REVOKED)
    attempts: list[int] = []

    def flaky(event: Event) -> None:
        attempts.append(event.id)
        if len(attempts) == 1:
            raise RuntimeError("transient")

    consumer = DurableConsumer("flaky", log, flaky)
    with pytest.raises(RuntimeError):
        consumer.run_once()
    assert consumer.cursor() == 0
    consumer.run_once()
    assert attempts == [event_id, event_id] and consumer.cursor() == event_id


def test_a_running_consumer_is_woken_by_new_events(db: Database) -> None:
    log = EventLog(db)
    handled: list[str] = []
    consumer = DurableConsumer("live", log, lambda e: handled.append(e.subject))
    consumer.start()
    try:
        for i in range(5):
            threading.Thread(target=append, args=(log, EventType.KEY_REVOKED, f"s{i}")).start()
        wait_for(lambda: len(handled) == 5)
        assert sorted(handled) == [f"s{i}" for i in range(5)]
    finally:
        consumer.stop()


def test_events_become_visible_in_id_order_under_concurrent_writers(database_url: str) -> None:
    """A reader that saw event N+1 must never get event N later: cursors would skip it."""
    db = Database(database_url)
    db.migrate()
    log = EventLog(db)
    try:
        drawn, release, second_done = threading.Event(), threading.Event(), threading.Event()
        ids: dict[str, int] = {}

        def slow_writer() -> None:
            with log.db.write() as session:
                ids["first"] = log.append(session, EventType.NAMESPACE_CREATED, "first").id
                drawn.set()
                release.wait(10)

        def fast_writer() -> None:
            ids["second"] = append(log, EventType.NAMESPACE_CREATED, "second")
            second_done.set()

        first = threading.Thread(target=slow_writer)
        first.start()
        assert drawn.wait(10)
        second = threading.Thread(target=fast_writer)
        second.start()
        # While the first transaction is open, no reader may see an event after its id.
        for _ in range(20):
            done = second_done.wait(0.02)
            assert [e.subject for e in log.read(after=ids["first"])] == []
            if done:
                break
        release.set()
        first.join(10)
        second.join(10)
        assert ids["first"] < ids["second"]
        assert [e.subject for e in log.read()] == ["first", "second"]
    finally:
        release.set()
        db.dispose()
