"""The raw event log: every accepted event of a stream, per entity, for the stream's retention.

``modelyard.realtime.backends`` opens one by URL: ``sqlite:///PATH`` (the embedded default, its own
file under the home) or ``postgresql://...`` (SQL-queryable for feature work).
"""

from __future__ import annotations

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
