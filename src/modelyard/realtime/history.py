"""An entity's history as an inference function sees it.

A trigger's history holds every event of the entity logged up to and including the trigger event
(by log sequence), never a later one, in log order; its clock is the trigger event's time, not the
wall clock. So the same function over the same history gives the same answer online and in replay,
however late the replay runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, overload

from modelyard.realtime.durations import seconds
from modelyard.realtime.streams import RawEvent


class History(Sequence[RawEvent]):
    def __init__(self, events: Sequence[RawEvent], now: float | None = None) -> None:
        self.events = list(events)
        self.now = now if now is not None else (self.events[-1].time if self.events else 0.0)
        """The time the history is seen at: the trigger event's time."""

    @overload
    def __getitem__(self, index: int) -> RawEvent: ...

    @overload
    def __getitem__(self, index: slice) -> History: ...

    def __getitem__(self, index: int | slice) -> RawEvent | History:
        if isinstance(index, slice):
            return History(self.events[index], self.now)
        return self.events[index]

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[RawEvent]:
        return iter(self.events)

    def __repr__(self) -> str:
        return f"History({len(self.events)} events, now={self.now})"

    @property
    def trigger(self) -> RawEvent | None:
        """The newest event: the one that triggered the inference."""
        return self.events[-1] if self.events else None

    def last(self, n: int) -> History:
        """The ``n`` newest events, in log order."""
        return History(self.events[-n:] if n > 0 else [], self.now)

    def within(self, duration: str | float) -> History:
        """Events whose time lies within ``duration`` (``"1h"``, ``"30m"``, seconds) of now."""
        since = self.now - seconds(duration)
        return History([e for e in self.events if e.time >= since], self.now)

    def of_type(self, *types: str) -> History:
        return History([e for e in self.events if e.type in types], self.now)

    def counts(self) -> Counter[str]:
        """Events by type."""
        return Counter(e.type for e in self.events)

    def count(self, type: str) -> int:
        return sum(1 for e in self.events if e.type == type)

    def seconds_since(self, type: str | None = None) -> float | None:
        """Seconds from the newest event (of ``type``) to now; None when there is none."""
        for event in reversed(self.events):
            if type is None or event.type == type:
                return self.now - event.time
        return None

    def values(self, field: str, default: Any = None) -> list[Any]:
        """One field of every event (``default`` where an event lacks it)."""
        return [e.data.get(field, default) for e in self.events]
