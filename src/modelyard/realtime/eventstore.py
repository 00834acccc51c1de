"""The raw event log: every accepted event of a stream, per entity, for the stream's retention.

``modelyard.realtime.backends`` opens one by URL: ``sqlite:///PATH`` (the embedded default, its own
file under the home) or ``postgresql://...`` (SQL-queryable for feature work).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from modelyard.realtime.streams import NewEvent, RawEvent


class EventStore(Protocol):
    def append(self, stream: str, events: Sequence[NewEvent], now: float) -> list[bool]:
        """Log ``events`` of ``stream`` (``namespace/name``) in one transaction and return only
        once it is durable (it survives kill -9 of this process); all or none are written. Each
        flag says whether that event was stored (False: its id was in the log already, within the
        retention, or earlier in this batch). Events get increasing ``seq`` in batch order, and a
        reader never sees a ``seq`` appear below one it has read (appends of one stream commit in
        ``seq`` order)."""

    def read(self, stream: str, after: int, limit: int) -> list[RawEvent]:
        """Events of ``stream`` with ``seq > after``, in log order."""

    def history(
        self, stream: str, entity: str, upto: int | None = None, limit: int = 1000
    ) -> list[RawEvent]:
        """The newest ``limit`` events of ``entity`` with ``seq <= upto`` (all when None), in log
        order: the history a trigger at ``upto`` sees."""

    def histories(
        self, stream: str, triggers: Sequence[tuple[str, int]], limit: int
    ) -> list[list[RawEvent]]:
        """``history(stream, entity, upto, limit)`` of each (entity, upto), in one read."""

    def last_seq(self, stream: str) -> int:
        """The highest ``seq`` of ``stream`` (0 when empty)."""

    def pending(self, stream: str, after: int) -> tuple[int, float | None]:
        """How many events lie after ``after``, and when the oldest of them was ingested."""

    def delete_entity(self, stream: str, entity: str) -> int:
        """Remove every event of ``entity`` (its ids may then be sent again); returns how many."""

    def purge(self, stream: str, before: float) -> int:
        """Remove events ingested before ``before`` (the retention); returns how many."""

    def drop(self, stream: str) -> None:
        """Remove every event of a deleted stream."""

    def close(self) -> None: ...


class DecodedEvents:
    """Events an event store decoded for histories, by entity, the least recently read dropped
    first beyond ``capacity`` events.

    A worker reads an entity's history again at each of its triggers, mostly the events it read
    the time before: a backend's ``histories`` (the worker's read; ``history`` holds nothing)
    reads in full only the events after the highest ``seq`` it holds for the entity (``known``)
    and takes the older ones from here. Events never change once logged and their ``seq`` is
    never reused, so what is held here is what the log holds; which events a history has still
    comes from the log each time (a deleted event is not in it). The events are shared between
    the histories of one entity: a function must not change them.
    """

    def __init__(self, capacity: int = 50_000) -> None:
        self.capacity = capacity
        self._entities: OrderedDict[tuple[str, str], tuple[dict[int, RawEvent], int]] = (
            OrderedDict()
        )
        self._size = 0
        self._lock = threading.Lock()

    def known(self, stream: str, entity: str) -> tuple[dict[int, RawEvent], int]:
        """The entity's events held, by ``seq``, and the highest ``seq`` among them (0: none)."""
        with self._lock:
            held = self._entities.get((stream, entity))
            if held is None:
                return {}, 0
            self._entities.move_to_end((stream, entity))
        return held

    def keep(self, stream: str, entity: str, events: list[RawEvent]) -> None:
        """Hold ``events`` (the entity's history just read) instead of what was held for it."""
        with self._lock:
            old = self._entities.pop((stream, entity), None)
            self._size -= len(old[0]) if old else 0
            if events:
                self._entities[(stream, entity)] = ({e.seq: e for e in events}, events[-1].seq)
                self._size += len(events)
            while self._size > self.capacity and self._entities:
                self._size -= len(self._entities.popitem(last=False)[1][0])


class HistoryReads:
    """``history`` and ``histories`` of an event store over its one read of several entities'
    histories, ``_read`` (each backend's query): ``histories`` (the worker's) through the store's
    :class:`DecodedEvents`, ``history`` (the API's, replay's) through none."""

    decoded: DecodedEvents

    def _read(
        self,
        stream: str,
        triggers: Sequence[tuple[str, int]],
        limit: int,
        decoded: DecodedEvents,
    ) -> list[list[RawEvent]]:
        raise NotImplementedError

    def history(
        self, stream: str, entity: str, upto: int | None = None, limit: int = 1000
    ) -> list[RawEvent]:
        bound = upto if upto is not None else 2**62
        return self._read(stream, [(entity, bound)], limit, DecodedEvents(0))[0]

    def histories(
        self, stream: str, triggers: Sequence[tuple[str, int]], limit: int
    ) -> list[list[RawEvent]]:
        return self._read(stream, triggers, limit, self.decoded)
