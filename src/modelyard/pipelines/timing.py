"""When a pipeline schedule fires: cron and interval timings, as pure time arithmetic.

No I/O and no clock: callers pass ``now``. Every datetime going in must be timezone-aware; every
datetime coming out is in UTC.

Cron expressions are read on the wall clock of the schedule's timezone, with the rules Vixie/ISC
cron users know around daylight-saving changes:

- A schedule whose hour field names every hour (``*``, ``0-23``, ``*/1``) runs on real time: it
  fires at every instant whose local time matches. A local time that a spring-forward change skips
  never happens, so it does not fire; a local time that a fall-back change repeats fires both times.
  ``0 * * * *`` therefore fires every 3600 s of real time across both changes.
- A schedule with fixed hours (``0 2 * * *``, ``30 1-3 * * *``, ``0 */2 * * *``) fires once per
  matching local time. A time that occurs twice fires at its first occurrence only; a time that a
  spring-forward change skips fires once, at the first moment after the gap (``30 2 * * *`` in
  Europe/Berlin fires at 03:00 CEST on 2024-03-31, when clocks jump from 02:00 to 03:00).

Interval timings ignore timezones: they fire every ``interval_seconds`` of real elapsed time on the
grid anchored at ``start``, or at 1970-01-01T00:00Z when there is no start.
"""

from __future__ import annotations

import difflib
import functools
import heapq
import math
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, CroniterError, croniter  # type: ignore[import-untyped]

from modelyard.errors import InvalidInput

MAX_CATCHUP = 1000
"""The most slots one :func:`due` call returns with catchup on; the next call returns the rest."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""Where the grid of an interval timing without ``start`` is anchored."""

CRON_FIELDS = "minute hour day-of-month month day-of-week"
_WRITE_FIVE = f"write 5 fields: {CRON_FIELDS}, e.g. '0 2 * * *' for 02:00 every day"
_FIELD_RULES = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-7 or sun-sat (0 and 7 are Sunday)"),
)
_FIELD_FORMS = "'*', a list '1,15', a range '1-5' or a step '*/15'"
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_ZONE_EXAMPLES = "an IANA name such as 'UTC', 'Europe/Berlin' or 'America/New_York'"
_NAIVE_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)
_MICROSECOND = timedelta(microseconds=1)
_HALF_DAY = timedelta(hours=12)


@dataclass(frozen=True)
class Timing:
    """When a schedule fires: a cron expression or a fixed interval, within optional bounds.

    Set exactly one of ``cron`` (5 fields, read in ``timezone``) and ``interval_seconds``.
    ``start`` and ``end`` are inclusive bounds: nothing fires before ``start`` or after ``end``.
    They must be aware datetimes and are stored converted to UTC; the cron string is stored with
    its whitespace normalised. ``catchup`` says whether :func:`due` returns every slot missed while
    the scheduler was down (True) or only the latest one (False).
    """

    cron: str | None = None
    interval_seconds: float | None = None
    timezone: str = "UTC"
    start: datetime | None = None
    end: datetime | None = None
    catchup: bool = False

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.interval_seconds is None):
            given = "both" if self.cron is not None else "neither"
            raise InvalidInput(
                f"a timing needs exactly one of cron and interval_seconds, {given} given: set "
                "cron (e.g. '0 2 * * *') or interval_seconds (e.g. 3600), not both",
                field="cron",
            )
        if self.cron is not None:
            object.__setattr__(self, "cron", _check_cron(self.cron))
        else:
            _check_interval(self.interval_seconds)
        _load_zone(self.timezone)
        start = None if self.start is None else _check_aware(self.start, "start")
        end = None if self.end is None else _check_aware(self.end, "end")
        if start is not None and end is not None and end <= start:
            raise InvalidInput(
                f"end {end.isoformat()} is not after start {start.isoformat()}: "
                "set end later than start, or leave end unset",
                field="end",
            )
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        if not isinstance(self.catchup, bool):
            raise InvalidInput(
                f"catchup must be True or False, got {self.catchup!r}", field="catchup"
            )

    @property
    def zone(self) -> ZoneInfo:
        return _load_zone(self.timezone)


def next_fire(timing: Timing, after: datetime) -> datetime | None:
    """The first fire time strictly after ``after``, in UTC; None when it would be past ``end``.

    Nothing fires before ``timing.start``: asked about an earlier moment, the answer is the first
    slot at or after ``start``. Cron is evaluated on the wall clock of ``timing.timezone`` and
    daylight-saving changes follow cron's rules:

    - every-hour schedules (hour field ``*``, ``0-23`` or ``*/1``): a local time skipped by
      spring-forward does not fire; a local time repeated by fall-back fires at both occurrences,
      so ``0 * * * *`` fires every 3600 s of real time with no duplicate and no gap;
    - fixed-hour schedules (``0 2 * * *``, ``0 */2 * * *``): a repeated local time fires once, at
      its first occurrence (in Europe/Berlin, 02:30 CEST, not again at 02:30 CET); a skipped local
      time fires once, at the first moment after the gap (02:30 on a 02:00->03:00 day fires at
      03:00). That is also croniter's choice for the gap; for repeated times croniter fires twice,
      which this module does not.

    Intervals fire every ``interval_seconds`` of real elapsed time from ``start`` (or from
    1970-01-01T00:00Z without one), whatever the timezone says.
    """
    after = _check_aware(after, "after")
    fire = next(_fires_after(timing, _clamp_to_start(timing, after)), None)
    if fire is None or (timing.end is not None and fire > timing.end):
        return None
    return fire


def due(
    timing: Timing, last_fire: datetime | None, now: datetime, created: datetime
) -> list[datetime]:
    """The slots that should run at ``now``, oldest first, in UTC.

    Slots are considered strictly after ``last_fire`` (the last slot that was fired). Before the
    first fire (``last_fire`` None) they are considered strictly after ``created`` (when the
    schedule was made), or from ``start`` included when ``start`` is at or after ``created``. No
    slot before ``start``, after ``end`` or after ``now`` is ever returned.

    With ``catchup`` off, at most one slot is returned: the latest due one, so a scheduler that was
    down for five hours of an hourly schedule runs once, not five times. With ``catchup`` on, every
    missed slot is returned in order, at most :data:`MAX_CATCHUP` (1000) of them: the oldest ones;
    record the last as ``last_fire`` and call again for the rest.
    """
    now = _check_aware(now, "now")
    created = _check_aware(created, "created")
    if last_fire is not None:
        after = _check_aware(last_fire, "last_fire")
    elif timing.start is not None and timing.start >= created:
        after = _just_before(timing.start)
    else:
        after = created
    after = _clamp_to_start(timing, after)
    horizon = now if timing.end is None else min(now, timing.end)
    if horizon <= after:
        return []
    if not timing.catchup:
        latest = _latest_at_or_before(timing, horizon)
        return [latest] if latest is not None and latest > after else []
    slots: list[datetime] = []
    for fire in _fires_after(timing, after):
        if fire > horizon or len(slots) == MAX_CATCHUP:
            break
        slots.append(fire)
    return slots


def _clamp_to_start(timing: Timing, after: datetime) -> datetime:
    """Move a search bound to just before ``start``, so that a slot at ``start`` counts."""
    if timing.start is not None and after < timing.start:
        return _just_before(timing.start)
    return after


def _just_before(moment: datetime) -> datetime:
    try:
        return moment - _MICROSECOND
    except OverflowError:
        return moment


def _fires_after(timing: Timing, after: datetime) -> Iterator[datetime]:
    """Every fire time strictly after ``after``, in order (``start`` is the caller's concern)."""
    if timing.cron is not None:
        return _cron_fires(timing.cron, timing.zone, after, forward=True)
    return _interval_fires(timing, after)


def _latest_at_or_before(timing: Timing, moment: datetime) -> datetime | None:
    if timing.cron is not None:
        latest = next(_cron_fires(timing.cron, timing.zone, moment, forward=False), None)
    else:
        step = _step_microseconds(timing)
        anchor = timing.start or EPOCH
        slot = ((moment - anchor) // _MICROSECOND) // step
        try:
            latest = anchor + timedelta(microseconds=slot * step)
        except OverflowError:
            latest = None
    if latest is None or (timing.start is not None and latest < timing.start):
        return None
    return latest


def _interval_fires(timing: Timing, after: datetime) -> Iterator[datetime]:
    step = _step_microseconds(timing)
    anchor = timing.start or EPOCH
    slot = ((after - anchor) // _MICROSECOND) // step + 1
    if timing.start is not None:
        slot = max(slot, 0)
    while True:
        try:
            fire = anchor + timedelta(microseconds=slot * step)
        except OverflowError:
            return
        yield fire
        slot += 1


def _step_microseconds(timing: Timing) -> int:
    assert timing.interval_seconds is not None
    return round(timing.interval_seconds * 1_000_000)


def _cron_fires(expr: str, zone: ZoneInfo, bound: datetime, *, forward: bool) -> Iterator[datetime]:
    """Fire instants strictly after ``bound`` (forward) or at or before it (backward), in order.

    croniter walks matching local wall-clock times (naive datetimes); each becomes zero, one or two
    instants by the DST rules in the module docstring. Around a fall-back change instants do not
    come out in wall-clock order, so they wait in a heap until no later wall time can produce an
    earlier instant: a wall time ``w`` maps to an instant in ``[w - max offset, w - min offset]``.
    """
    every_hour = _names_every_hour(expr)
    low, high = _offset_range(zone, bound.year)
    bound_wall = bound.replace(tzinfo=None)
    sign = 1 if forward else -1
    pending: list[int] = []
    last_key: int | None = None
    try:
        # An instant past the bound reads later than bound + low on the local clock (earlier than
        # bound + high going back), so croniter starts there.
        walls = croniter(expr, bound_wall + low if forward else bound_wall + high + _SECOND * 60)
        while True:
            try:
                wall: datetime = walls.get_next(datetime) if forward else walls.get_prev(datetime)
            except (CroniterBadDateError, OverflowError, ValueError):
                break  # no matching date left before the datetime range ends
            low, high = _offset_range(zone, wall.year)
            settled = sign * _seconds(wall - high if forward else wall - low)
            while pending and pending[0] < settled:
                key = heapq.heappop(pending)
                if key != last_key:
                    last_key = key
                    yield EPOCH + timedelta(seconds=sign * key)
            for instant in _wall_instants(wall, zone, every_hour):
                if (instant > bound) if forward else (instant <= bound):
                    heapq.heappush(pending, sign * _seconds(instant.replace(tzinfo=None)))
    except OverflowError:
        pass  # the search ran into datetime's limits: there is no fire beyond them
    while pending:
        key = heapq.heappop(pending)
        if key != last_key:
            last_key = key
            yield EPOCH + timedelta(seconds=sign * key)


def _seconds(naive_utc: datetime) -> int:
    return (naive_utc - _NAIVE_EPOCH) // _SECOND


def _wall_instants(wall: datetime, zone: ZoneInfo, every_hour: bool) -> list[datetime]:
    """The UTC instants at which local time ``wall`` fires, by the DST rules of this module."""
    instants: list[datetime] = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall and instant not in instants:
            instants.append(instant)
    instants.sort()
    if every_hour:
        return instants
    if instants:
        return instants[:1]
    return [_gap_end(wall, zone)]


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant after the spring-forward gap that swallowed local time ``wall``.

    The two readings of a skipped time (with the offset before and after the change) bracket the
    change; bisect to the first second whose local time is past ``wall``.
    """
    before, after = sorted(wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1))
    while after - before > _SECOND:
        middle = before + _SECOND * (((after - before) // _SECOND) // 2)
        if middle.astimezone(zone).replace(tzinfo=None) > wall:
            after = middle
        else:
            before = middle
    return after


@functools.lru_cache(maxsize=256)
def _names_every_hour(expr: str) -> bool:
    hours: list[object] = croniter(expr, _NAIVE_EPOCH).expanded[1]
    return hours == ["*"]


@functools.lru_cache(maxsize=1024)
def _offset_range(zone: ZoneInfo, year: int) -> tuple[timedelta, timedelta]:
    """The smallest and largest UTC offsets ``zone`` uses from the year before ``year`` to the
    year after, sampled every 12 hours: that sees every offset a zone keeps for half a day."""
    offsets = [offset for y in range(year - 1, year + 2) for offset in _year_offsets(zone, y)]
    return min(offsets), max(offsets)


@functools.lru_cache(maxsize=1024)
def _year_offsets(zone: ZoneInfo, year: int) -> frozenset[timedelta]:
    if not 1 <= year <= 9999:
        return frozenset()
    offsets: set[timedelta] = set()
    moment = datetime(year, 1, 1, tzinfo=UTC)
    try:
        while moment.year == year:
            offset = moment.astimezone(zone).utcoffset()
            if offset is not None:
                offsets.add(offset)
            moment += _HALF_DAY
    except OverflowError:
        pass  # the samples ran past year 9999
    return frozenset(offsets)


def _check_cron(cron: object) -> str:
    if not isinstance(cron, str):
        raise InvalidInput(
            f"cron must be a string such as '0 2 * * *', got {cron!r}; {_WRITE_FIVE}",
            field="cron",
        )
    fields = cron.split()
    if len(fields) == 1 and fields[0].lower() in _MACROS:
        raise InvalidInput(
            f"cron {cron!r} is a macro: write its 5 fields '{_MACROS[fields[0].lower()]}' instead",
            field="cron",
        )
    if len(fields) != 5:
        extra = "; seconds and years are not supported" if len(fields) > 5 else ""
        raise InvalidInput(
            f"cron {cron!r} has {len(fields)} fields{extra}: {_WRITE_FIVE}", field="cron"
        )
    expr = " ".join(fields)
    try:
        walls = croniter(expr, _NAIVE_EPOCH)
    except (CroniterError, ValueError, TypeError, LookupError) as exc:
        raise InvalidInput(
            f"cron {cron!r} does not parse: {_blame_field(fields, exc)}; {_WRITE_FIVE}",
            field="cron",
        ) from exc
    try:
        walls.get_next(datetime)
    except (CroniterError, ValueError) as exc:
        raise InvalidInput(
            f"cron {cron!r} never fires: no date matches its day-of-month and month "
            "(such as 31 February); pick a day that exists in that month",
            field="cron",
        ) from exc
    return expr


def _blame_field(fields: list[str], exc: Exception) -> str:
    """Say which field is wrong and what it may hold, trying each one alone."""
    for index, field in enumerate(fields):
        alone = ["*"] * 5
        alone[index] = field
        try:
            croniter(" ".join(alone), _NAIVE_EPOCH)
        except (CroniterError, ValueError, TypeError, LookupError):
            name, values = _FIELD_RULES[index]
            return f"{name} {field!r} is not valid, {name} must be {values} or {_FIELD_FORMS}"
    return str(exc)


def _check_interval(seconds: object) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidInput(
            f"interval_seconds must be a number of seconds such as 3600, got {seconds!r}",
            field="interval_seconds",
        )
    if not math.isfinite(seconds) or seconds <= 0 or round(seconds * 1_000_000) < 1:
        raise InvalidInput(
            f"interval_seconds must be a finite number of seconds of at least 0.000001, got "
            f"{seconds!r}: write the time between runs, e.g. 3600 for hourly",
            field="interval_seconds",
        )


def _load_zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or name == "localtime":
        # 'localtime' is whatever the machine is set to: schedules must mean the same everywhere.
        raise InvalidInput(f"unknown timezone {name!r}: use {_ZONE_EXAMPLES}", field="timezone")
    try:
        return ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        close = difflib.get_close_matches(name, _known_zones(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InvalidInput(
            f"unknown timezone {name!r}{hint}: use {_ZONE_EXAMPLES}", field="timezone"
        ) from exc


@functools.cache
def _known_zones() -> list[str]:
    return sorted(zoneinfo.available_timezones() - {"localtime"})


def _check_aware(value: object, what: str) -> datetime:
    """``value`` in UTC; a naive datetime is refused, since it could mean any instant."""
    if not isinstance(value, datetime):
        raise InvalidInput(
            f"{what} must be a datetime with a timezone, got {value!r}: write e.g. "
            "datetime(2024, 1, 1, tzinfo=UTC)",
            field=what,
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(
            f"{what} {value.isoformat()} has no timezone: write an aware datetime such as "
            f"{value.isoformat()}+00:00, or pass tzinfo=UTC (or a ZoneInfo) when building it",
            field=what,
        )
    return value.astimezone(UTC)
