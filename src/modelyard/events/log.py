"""Append-only event log with push notification.

An event is inserted in the same transaction as the change it describes (so it exists exactly when
the change does), and subscribers are told once that transaction committed: no polling loop.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from modelyard.events.records import Event
from modelyard.events.types import EventType
from modelyard.store.db import Database, after_commit
from modelyard.store.schema import EventRow

log = logging.getLogger(__name__)
Clock = Callable[[], dt.datetime]


_ORDERED = "modelyard.events.ordered"
_LOCK = 0x6D79_6576  # the advisory lock key of event appends ("myev")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def matches(event_type: str, patterns: Sequence[str]) -> bool:
    """``model.version.committed`` matches ``*``, ``model.*`` and itself."""
    for pattern in patterns:
        if pattern in ("*", event_type):
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


class EventLog:
    def __init__(self, db: Database, clock: Clock = utcnow) -> None:
        self.db = db
        self.clock = clock
        self._changed = threading.Condition()
        self._last_id = 0
        self._subscribers: list[Callable[[int], None]] = []

    def append(
        self,
        session: Session,
        type: EventType,
        subject: str,
        data: dict[str, Any] | None = None,
        *,
        namespace: str | None = None,
        actor: str | None = None,
    ) -> EventRow:
        """Add an event to the caller's write transaction; subscribers hear of it after commit.

        Readers take events by ``id > cursor``, so ids must become visible in id order: on
        PostgreSQL two transactions could otherwise commit out of the order their ids were
        drawn in, and a reader that saw the later one would skip the earlier for good. The first
        event of a transaction takes a transaction-scoped advisory lock, held until commit, so
        event-writing transactions commit one after the other (SQLite serialises writers anyway).
        """
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql" and not session.info.get(_ORDERED):
            session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
            session.info[_ORDERED] = True
        row = EventRow(
            type=type,
            namespace=namespace,
            subject=subject,
            data=data or {},
            actor=actor,
            created_at=self.clock(),
        )
        session.add(row)
        session.flush()
        event_id = row.id
        after_commit(session, lambda: self._notify(event_id))
        return row

    def read(self, after: int = 0, limit: int = 100) -> list[Event]:
        """Events with id > ``after`` in id order."""
        return self.scan(after, limit)[0]

    def scan(
        self,
        after: int,
        limit: int,
        types: Sequence[str] = (),
        namespaces: Sequence[str] | None = None,
    ) -> tuple[list[Event], int, bool]:
        """Read up to ``limit`` events after ``after`` and keep those matching the filters.

        Returns the kept events, the last id scanned (the next cursor) and whether more may follow.
        ``namespaces=None`` means all; otherwise events without a namespace are left out too.
        """
        query = sa.select(EventRow).where(EventRow.id > after).order_by(EventRow.id).limit(limit)
        with self.db.read() as session:
            events = [Event.from_row(r) for r in session.scalars(query)]
        cursor = events[-1].id if events else after
        kept = [
            e
            for e in events
            if (not types or matches(e.type, types))
            and (namespaces is None or e.namespace in namespaces)
        ]
        return kept, cursor, len(events) == limit

    def before_last(
        self,
        count: int,
        types: Sequence[str] = (),
        namespaces: Sequence[str] | None = None,
        page: int = 500,
    ) -> int:
        """The cursor from which a scan returns the newest ``count`` events matching the filters
        (0 when fewer match): filters apply before counting, so ``last 20 of slo.*`` is 20 SLO
        events however many others came after them. Reads backwards a page at a time."""
        below: int | None = None
        found = 0
        with self.db.read() as session:
            while True:
                query = sa.select(EventRow.id, EventRow.type, EventRow.namespace)
                if below is not None:
                    query = query.where(EventRow.id < below)
                rows = session.execute(query.order_by(EventRow.id.desc()).limit(page)).all()
                for event_id, event_type, namespace in rows:
                    if (not types or matches(event_type, types)) and (
                        namespaces is None or namespace in namespaces
                    ):
                        found += 1
                        if found == count:
                            return int(event_id) - 1
                if len(rows) < page:
                    return 0
                below = rows[-1][0]

    def history(self, namespace: str, subject: str, limit: int = 100) -> list[Event]:
        """The latest ``limit`` events about ``subject`` in ``namespace``, oldest first."""
        query = (
            sa.select(EventRow)
            .where(EventRow.subject == subject, EventRow.namespace == namespace)
            .order_by(EventRow.id.desc())
            .limit(limit)
        )
        with self.db.read() as session:
            return [Event.from_row(r) for r in reversed(session.scalars(query).all())]

    def last_id(self) -> int:
        with self.db.read() as session:
            return int(session.scalar(sa.select(sa.func.max(EventRow.id))) or 0)

    # push ---------------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call ``callback(event_id)`` after each committed append; returns an unsubscribe."""
        with self._changed:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._changed:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def wait(
        self, after: int, timeout: float | None = None, until: Callable[[], bool] | None = None
    ) -> bool:
        """Block until an event newer than ``after`` was committed in this process, or ``until()``
        turns true (checked whenever the log is poked)."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._last_id > after or (until is not None and until()), timeout
            )

    def _notify(self, event_id: int) -> None:
        with self._changed:
            self._last_id = max(self._last_id, event_id)
            self._changed.notify_all()
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event_id)
            except Exception:
                log.exception("event subscriber failed; the event stays in the log")

    def poke(self) -> None:
        """Wake waiters (used at shutdown so that consumer threads notice the stop flag)."""
        with self._changed:
            self._changed.notify_all()
