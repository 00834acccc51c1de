"""Durable consumers: a handler, a cursor in the database, and a loop woken by the log (each
event committed in this process wakes it; it sleeps while nothing is new).

At-least-once: the cursor advances after the handler returned, so a crash between the two replays
that event after restart. Handlers must be idempotent. A handler that wants exactly-once effects
does its writes and :meth:`DurableConsumer.advance` in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from modelyard.events.log import EventLog
from modelyard.events.records import Event
from modelyard.loops import FOREVER, Loop
from modelyard.store.schema import ConsumerRow

Handler = Callable[[Event], None]


class DurableConsumer:
    def __init__(
        self,
        name: str,
        events: EventLog,
        handler: Handler,
        *,
        batch: int = 100,
        retry_seconds: float = 1.0,
    ) -> None:
        self.name = name
        self.events = events
        self.handler = handler
        self.batch = batch
        self.retry_seconds = retry_seconds
        self.loop = Loop(f"consumer:{name}", self._round, error_wait=retry_seconds)
        self._unsubscribe: Callable[[], None] | None = None

    def cursor(self) -> int:
        with self.events.db.read() as session:
            row = session.get(ConsumerRow, self.name)
            return row.cursor if row else 0

    def advance(self, session: Session, event_id: int) -> None:
        row = session.get(ConsumerRow, self.name, with_for_update=True)
        now = self.events.clock()
        if row is None:
            session.add(ConsumerRow(name=self.name, cursor=event_id, updated_at=now))
        elif event_id > row.cursor:
            row.cursor, row.updated_at = event_id, now

    def run_once(self) -> int:
        """Handle every event after the cursor; returns how many were handled."""
        handled = 0
        while not self.loop.stopping:
            events = self.events.read(after=self.cursor(), limit=self.batch)
            if not events:
                return handled
            for event in events:
                self.handler(event)
                with self.events.db.write() as session:
                    self.advance(session, event.id)
                handled += 1
        return handled

    def start(self) -> None:
        self._unsubscribe = self.events.subscribe(lambda _: self.loop.wake())
        self.loop.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.loop.request_stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.loop.join(timeout)

    def _round(self) -> float:
        """Handle what is new, then sleep until an event wakes the loop (one committed while
        this round ran included); a failure retries from the cursor after ``retry_seconds``."""
        self.run_once()
        return FOREVER

    @staticmethod
    def reset(session: Session, name: str) -> None:
        session.execute(sa.delete(ConsumerRow).where(ConsumerRow.name == name))
