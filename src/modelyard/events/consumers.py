"""Durable consumers: a handler, a cursor in the database, and a thread woken by the log.

At-least-once: the cursor advances after the handler returned, so a crash between the two replays
that event after restart. Handlers must be idempotent. A handler that wants exactly-once effects
does its writes and :meth:`DurableConsumer.advance` in one transaction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from modelyard.events.log import Event, EventLog
from modelyard.store.schema import ConsumerRow

log = logging.getLogger(__name__)
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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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
        while not self._stop.is_set():
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
        self._thread = threading.Thread(
            target=self._loop, name=f"consumer:{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.events.poke()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("consumer %s failed; retrying from its cursor", self.name)
                self._stop.wait(self.retry_seconds)
                continue
            # Sleep until the log has something newer than what we handled, or until stop.
            self.events.wait(self.cursor(), until=self._stop.is_set)

    @staticmethod
    def reset(session: Session, name: str) -> None:
        session.execute(sa.delete(ConsumerRow).where(ConsumerRow.name == name))
