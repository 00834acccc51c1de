"""Incremental imports: half-open windows ``[start, end)`` over a watermark column.

Pure logic, given the clock and what the previous version recorded; no database here.

- The first import reads from ``start`` (or from the beginning); each later one starts where the
  previous version's last window ended, so windows never overlap and never leave a gap.
- The end is the clock (a timestamp or date watermark) or the largest value plus one (a number),
  minus ``lag``: rows younger than the lag wait for the next import, which gives late rows that
  long to land.
- ``size`` splits a long range into windows of that size: one Parquet part each.
- A first import without a start or a size records two windows from one read: the bulk
  ``[-inf, cut)`` and a tail ``[cut, end)`` holding the last ``TAIL_SHARE`` of the values'
  range (or the lag, when longer; see :func:`tail_cut`). The next import's check for late rows
  (``verify="last"``) recounts only that tail, as later imports recount only their last,
  recent window, and not the whole table; rows that land late in the bulk, older than the
  tail, are found by ``verify="all"`` only.
- A backfill imports ``[start, end)`` again, in windows, in place of the windows it covers
  exactly; a range that cuts through a recorded window is refused, so a row is never in two parts.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from modelyard.errors import InvalidInput

Kind = Literal["int", "timestamp", "timestamptz", "date"]
Value = int | dt.datetime | dt.date
Step = int | dt.timedelta
MAX_WINDOWS = 10_000
TAIL_SHARE = 0.01  # of a first import's range, recorded as a window of its own (tail_cut)


def kind_of(value: Any) -> Kind:
    """The kind of a watermark value as the database returned it."""
    if isinstance(value, bool):
        raise InvalidInput("a watermark column holds numbers, timestamps or dates, not booleans")
    if isinstance(value, int):
        return "int"
    if isinstance(value, dt.datetime):
        return "timestamptz" if value.tzinfo is not None else "timestamp"
    if isinstance(value, dt.date):
        return "date"
    raise InvalidInput(
        f"a watermark column holds integers, timestamps or dates; this one holds "
        f"{type(value).__name__} values: pick another column"
    )


def coerce(value: Any, kind: Kind, what: str) -> Value:
    """``value`` (a number, a date, a datetime or their ISO text) as a watermark of ``kind``."""
    try:
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ValueError
            return int(value)
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value) if kind != "date" else _date(value)
        if kind == "date":
            return value.date() if isinstance(value, dt.datetime) else _date(value)
        if isinstance(value, dt.datetime):
            moment = value
        elif isinstance(value, dt.date):
            moment = dt.datetime.combine(value, dt.time())
        else:
            raise ValueError
        if kind == "timestamptz":
            return (
                moment.replace(tzinfo=dt.UTC)
                if moment.tzinfo is None
                else moment.astimezone(dt.UTC)
            )
        return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment
    except (ValueError, TypeError):
        raise InvalidInput(f"{what} {value!r} is not a value of a {kind} watermark") from None


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def step_of(amount: Any, kind: Kind, what: str) -> Step:
    """A lag or window size: a count for numbers, a duration (or seconds) for times."""
    if isinstance(amount, bool):
        raise InvalidInput(f"{what} must be a number or a duration")
    if kind == "int":
        if isinstance(amount, dt.timedelta):
            raise InvalidInput(f"{what} of a numeric watermark is a number, not a duration")
        if not isinstance(amount, int | float) or amount != int(amount):
            raise InvalidInput(f"{what} of a numeric watermark is a whole number")
        step: Step = int(amount)
    elif isinstance(amount, dt.timedelta):
        step = amount
    elif isinstance(amount, int | float):
        step = dt.timedelta(seconds=amount)
    else:
        raise InvalidInput(f"{what} must be a number or a duration")
    if (step < 0) if isinstance(step, int) else (step < dt.timedelta(0)):
        raise InvalidInput(f"{what} cannot be negative")
    if kind == "date" and isinstance(step, dt.timedelta) and step % dt.timedelta(days=1):
        raise InvalidInput(f"{what} of a date watermark is a whole number of days")
    return step


def shift(value: Value, step: Step, sign: int = 1) -> Value:
    if isinstance(value, int):
        assert isinstance(step, int)
        return value + sign * step
    assert isinstance(step, dt.timedelta)
    return value + sign * step


def before(a: Value, b: Value) -> bool:
    """``a < b`` for two watermarks of one kind."""
    return bool(a < b)  # type: ignore[operator]


def to_text(value: Value | None) -> str | None:
    if value is None:
        return None
    return str(value) if isinstance(value, int) else value.isoformat()


@dataclass(frozen=True)
class Window:
    """Rows whose watermark is ``>= start`` (no lower bound when None) and ``< end``."""

    start: Value | None
    end: Value

    def __str__(self) -> str:
        return f"[{to_text(self.start) or '-inf'}, {to_text(self.end)})"

    def within(self, start: Value | None, end: Value) -> bool:
        """Whether this window lies inside ``[start, end)``."""
        lower_ok = start is None or (self.start is not None and not before(self.start, start))
        return lower_ok and not before(end, self.end)

    def overlaps(self, start: Value | None, end: Value) -> bool:
        below = self.start is not None and not before(self.start, end)
        above = start is not None and not before(start, self.end)
        return not (below or above)


@dataclass(frozen=True)
class Recorded:
    """A window a version holds: its bounds, its rows, their digest and the part files."""

    window: Window
    rows: int
    digest: str
    files: tuple[str, ...]
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "start": to_text(self.window.start),
            "end": to_text(self.window.end),
            "rows": self.rows,
            "digest": self.digest,
            "files": list(self.files),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], kind: Kind | None) -> Recorded:
        def value(text: str | None) -> Value | None:
            return None if text is None or kind is None else coerce(text, kind, "recorded bound")

        end = value(data["end"])
        if end is None:
            raise InvalidInput("a recorded window has no end")
        return cls(
            Window(value(data.get("start")), end),
            int(data["rows"]),
            str(data["digest"]),
            tuple(data.get("files", [])),
            int(data.get("seq", 0)),
        )


@dataclass
class History:
    """What the previous version of an incremental dataset recorded."""

    column: str
    kind: Kind
    windows: list[Recorded] = field(default_factory=list)

    @property
    def last(self) -> Recorded | None:
        """The window that ends last: where the next import starts."""
        last: Recorded | None = None
        for recorded in self.windows:
            if last is None or before(last.window.end, recorded.window.end):
                last = recorded
        return last

    @property
    def end(self) -> Value | None:
        return self.last.window.end if self.last else None

    @property
    def next_seq(self) -> int:
        return max((r.seq for r in self.windows), default=0) + 1


def split(start: Value | None, end: Value, size: Step | None) -> list[Window]:
    """``[start, end)`` as consecutive windows of ``size`` (one window without a size or a
    start)."""
    if start is not None and not before(start, end):
        return []
    if size is None or start is None or not size:
        return [Window(start, end)]
    windows: list[Window] = []
    lower: Value = start
    while before(lower, end):
        upper = shift(lower, size)
        upper = upper if before(upper, end) else end
        windows.append(Window(lower, upper))
        lower = upper
        if len(windows) > MAX_WINDOWS:
            raise InvalidInput(
                f"[{to_text(start)}, {to_text(end)}) makes more than {MAX_WINDOWS} windows "
                f"of {size}: give a larger window"
            )
    return windows


def upper_bound(kind: Kind, now: dt.datetime, largest: Value | None) -> Value | None:
    """Where the data ends, before the lag: the clock for times, the largest number plus one."""
    if kind == "int":
        return None if largest is None else shift(largest, 1)
    if kind == "date":
        return now.astimezone(dt.UTC).date()
    if kind == "timestamp":
        return now.astimezone(dt.UTC).replace(tzinfo=None)
    return now.astimezone(dt.UTC)


def next_windows(
    history: History | None,
    kind: Kind,
    *,
    start: Value | None,
    upper: Value | None,
    lag: Step,
    size: Step | None,
) -> list[Window]:
    """The windows an incremental import reads now (none when nothing is due yet)."""
    if upper is None:  # a numeric watermark over no rows at all
        return []
    lower = history.end if history is not None and history.windows else start
    end = shift(upper, lag, -1)
    if lower is not None and not before(lower, end):
        return []
    return split(lower, end, size)


def tail_cut(smallest: Value, end: Value, lag: Step) -> Value | None:
    """Where a first import of ``[-inf, end)`` splits off its tail window ``[cut, end)``: the
    last ``TAIL_SHARE`` of ``[smallest, end)``, or the lag when that is longer, rounded up to a
    whole number, second or day. None when the range is too small to split (a single value):
    the import records one window."""
    if not before(smallest, end):
        return None
    tail: Step
    if isinstance(end, int):
        assert isinstance(smallest, int) and isinstance(lag, int)
        tail = max(math.ceil((end - smallest) * TAIL_SHARE), lag)
    else:
        assert isinstance(lag, dt.timedelta)
        span: dt.timedelta = end - smallest  # type: ignore[operator]
        unit = dt.timedelta(days=1) if not isinstance(end, dt.datetime) else dt.timedelta(seconds=1)
        tail = unit * math.ceil(max(span * TAIL_SHARE, lag) / unit)
    cut = shift(end, tail, -1)
    return cut if before(smallest, cut) else None


def backfill_windows(
    history: History | None, start: Value | None, end: Value, size: Step | None
) -> tuple[list[Window], list[Recorded]]:
    """The windows a backfill of ``[start, end)`` reads, and the recorded ones they replace."""
    if start is not None and not before(start, end):
        raise InvalidInput(f"backfill [{to_text(start)}, {to_text(end)}) is empty: start < end")
    replaced: list[Recorded] = []
    for recorded in history.windows if history else []:
        if recorded.window.within(start, end):
            replaced.append(recorded)
        elif recorded.window.overlaps(start, end):
            raise InvalidInput(
                f"backfill [{to_text(start) or '-inf'}, {to_text(end)}) cuts through the "
                f"imported window {recorded.window}: start and end it on window bounds"
            )
    return split(start, end, size), replaced


def ordered(windows: Sequence[Recorded]) -> list[Recorded]:
    """Recorded windows by their bounds (the unbounded first window first)."""
    result: list[Recorded] = []
    for recorded in windows:
        i = len(result)
        while i and before(recorded.window.end, result[i - 1].window.end):
            i -= 1
        result.insert(i, recorded)
    return result
