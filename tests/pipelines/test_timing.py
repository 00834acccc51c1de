from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter  # type: ignore[import-untyped]

from modelyard.errors import InvalidInput
from modelyard.pipelines.timing import EPOCH, MAX_CATCHUP, Timing, due, next_fire

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
HOUR = timedelta(hours=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def fires(timing: Timing, after: datetime, count: int) -> list[datetime]:
    found: list[datetime] = []
    for _ in range(count):
        fire = next_fire(timing, after)
        assert fire is not None
        found.append(fire)
        after = fire
    return found


def local_hours(moments: list[datetime], zone: str) -> list[str]:
    return [moment.astimezone(ZoneInfo(zone)).strftime("%H:%M%z") for moment in moments]


# --- cron across daylight-saving changes ------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "zone", "after", "expected"),
    [
        # Berlin jumps 02:00 CET -> 03:00 CEST at 2024-03-31T01:00Z.
        (
            "30 2 * * *",
            BERLIN,
            utc(2024, 3, 29, 12),
            [(3, 30, 1, 30), (3, 31, 1, 0), (4, 1, 0, 30)],
        ),
        ("0 2 * * *", BERLIN, utc(2024, 3, 29, 12), [(3, 30, 1, 0), (3, 31, 1, 0), (4, 1, 0, 0)]),
        # New York jumps 02:00 EST -> 03:00 EDT at 2024-03-10T07:00Z.
        ("30 2 * * *", NEW_YORK, utc(2024, 3, 9), [(3, 9, 7, 30), (3, 10, 7, 0), (3, 11, 6, 30)]),
    ],
)
def test_a_daily_time_skipped_by_spring_forward_fires_once_right_after_the_gap(
    cron: str, zone: str, after: datetime, expected: list[tuple[int, int, int, int]]
) -> None:
    timing = Timing(cron, timezone=zone)
    assert fires(timing, after, 3) == [utc(2024, *moment) for moment in expected]


@pytest.mark.parametrize(
    ("cron", "zone", "after", "expected"),
    [
        # Berlin goes back 03:00 CEST -> 02:00 CET at 2024-10-27T01:00Z: 02:30 happens twice.
        ("30 2 * * *", BERLIN, utc(2024, 10, 26, 12), [(10, 27, 0, 30), (10, 28, 1, 30)]),
        # New York goes back 02:00 EDT -> 01:00 EST at 2024-11-03T06:00Z: 01:30 happens twice.
        ("30 1 * * *", NEW_YORK, utc(2024, 11, 2, 12), [(11, 3, 5, 30), (11, 4, 6, 30)]),
    ],
)
def test_a_daily_time_repeated_by_fall_back_fires_once_at_its_first_occurrence(
    cron: str, zone: str, after: datetime, expected: list[tuple[int, int, int, int]]
) -> None:
    timing = Timing(cron, timezone=zone)
    assert fires(timing, after, 2) == [utc(2024, *moment) for moment in expected]


@pytest.mark.parametrize("after", [utc(2024, 10, 27, 0, 45), utc(2024, 10, 27, 1, 15)])
def test_asking_inside_the_repeated_hour_does_not_fire_the_second_occurrence(
    after: datetime,
) -> None:
    # 00:45Z is 02:45 CEST (first pass), 01:15Z is 02:15 CET (second pass): 02:30 already fired.
    assert next_fire(Timing("30 2 * * *", timezone=BERLIN), after) == utc(2024, 10, 28, 1, 30)


@pytest.mark.parametrize(
    ("zone", "after", "repeated_or_skipped"),
    [
        (BERLIN, utc(2024, 3, 30, 22, 30), "skipped"),
        (BERLIN, utc(2024, 10, 26, 21, 30), "repeated"),
        (NEW_YORK, utc(2024, 3, 10, 3, 30), "skipped"),
        (NEW_YORK, utc(2024, 11, 3, 2, 30), "repeated"),
    ],
)
def test_hourly_cron_fires_at_every_real_hour_across_dst(
    zone: str, after: datetime, repeated_or_skipped: str
) -> None:
    found = fires(Timing("0 * * * *", timezone=zone), after, 8)
    first = after + timedelta(minutes=30)
    assert found == [first + k * HOUR for k in range(8)]
    hours = local_hours(found, zone)
    distinct_local_times = {hour[:5] for hour in hours}
    if repeated_or_skipped == "repeated":
        assert len(distinct_local_times) == 7  # one local hour is read twice, an hour apart
    else:
        assert len(distinct_local_times) == 8
        assert "02:00" not in distinct_local_times  # it never happened


def test_hourly_cron_in_berlin_reads_02_00_twice_on_the_fall_back_day() -> None:
    found = fires(Timing("0 * * * *", timezone=BERLIN), utc(2024, 10, 26, 23, 30), 3)
    assert found == [utc(2024, 10, 27, 0), utc(2024, 10, 27, 1), utc(2024, 10, 27, 2)]
    assert local_hours(found, BERLIN) == ["02:00+0200", "02:00+0100", "03:00+0100"]


def test_sub_hourly_cron_runs_on_real_time_across_fall_back() -> None:
    found = fires(Timing("*/30 * * * *", timezone=BERLIN), utc(2024, 10, 26, 23, 10), 8)
    assert found == [utc(2024, 10, 26, 23, 30) + k * timedelta(minutes=30) for k in range(8)]


def test_every_two_hours_is_a_fixed_hour_schedule_and_fires_02_00_once() -> None:
    found = fires(Timing("0 */2 * * *", timezone=BERLIN), utc(2024, 10, 26, 21), 4)
    assert local_hours(found, BERLIN) == ["00:00+0200", "02:00+0200", "04:00+0100", "06:00+0100"]


def test_several_skipped_times_of_one_schedule_fire_once_after_the_gap() -> None:
    found = fires(Timing("*/15 2 * * *", timezone=BERLIN), utc(2024, 3, 30, 12), 2)
    assert found == [utc(2024, 3, 31, 1), utc(2024, 4, 1, 0)]


# --- a brute-force cross-check around every change of 2024 -----------------------------------

ORACLE_ZONES = [
    BERLIN,
    NEW_YORK,
    "Australia/Lord_Howe",  # moves 30 minutes
    "America/Santiago",  # changes at midnight
    "America/Havana",  # changes at midnight and at 01:00
    "Pacific/Chatham",  # +12:45 / +13:45
]
ORACLE_CRONS = [
    "0 * * * *",
    "*/20 * * * *",
    "30 2 * * *",
    "0 2 * * *",
    "0 0 * * *",
    "30 23 * * *",
    "15 1 * * *",
    "0 */2 * * *",
    "*/10 1-3 * * *",
    "0 0 * * 0",
]


def transitions(zone: ZoneInfo, year: int) -> list[datetime]:
    """The UTC midnights after which ``zone`` changes its offset within a day."""
    days = [utc(year, 1, 1) + timedelta(days=day) for day in range(366)]
    offsets = [day.astimezone(zone).utcoffset() for day in days]
    return [day for day, now, then in zip(days, offsets, offsets[1:], strict=False) if now != then]


def oracle(cron: str, zone: ZoneInfo, start: datetime, stop: datetime) -> list[datetime]:
    """Walk real time minute by minute and apply the documented rules literally."""

    def wall_of(moment: datetime) -> datetime:
        return moment.astimezone(zone).replace(tzinfo=None)

    every_hour = cron.split()[1] == "*"
    walls = croniter(cron, wall_of(start) - timedelta(days=1))
    matching: set[datetime] = set()
    while (wall := walls.get_next(datetime)) < wall_of(stop) + timedelta(days=1):
        matching.add(wall)
    expected: list[datetime] = []
    fired_walls: set[datetime] = set()
    previous: datetime | None = None
    moment = start
    while moment <= stop:
        wall = wall_of(moment)
        if every_hour:
            if wall in matching:
                expected.append(moment)
        else:
            skipped = {m for m in matching if previous is not None and previous < m < wall}
            current = {wall} if wall in matching else set()
            if (skipped | current) - fired_walls:
                expected.append(moment)
            fired_walls |= skipped | current
        previous = wall
        moment += timedelta(minutes=1)
    return expected


@pytest.mark.parametrize("zone_name", ORACLE_ZONES)
@pytest.mark.parametrize("cron", ORACLE_CRONS)
def test_cron_matches_a_brute_force_walk_around_each_change(zone_name: str, cron: str) -> None:
    zone = ZoneInfo(zone_name)
    changes = transitions(zone, 2024)
    assert len(changes) == 2
    timing = Timing(cron, timezone=zone_name, catchup=True)
    for change in changes:
        start, stop = change - timedelta(days=2), change + timedelta(days=2)
        expected = oracle(cron, zone, start, stop)
        assert expected
        created = start - timedelta(days=1)
        assert due(timing, start - timedelta(seconds=1), stop, created) == expected
        assert fires(timing, start - timedelta(seconds=1), len(expected)) == expected
        latest_only = Timing(cron, timezone=zone_name)
        near = [fire for fire in expected if abs(fire - change) <= timedelta(hours=30)]
        for previous, fire in itertools.pairwise(near):
            assert due(latest_only, start, fire, created) == [fire]
            assert due(latest_only, start, fire - timedelta(seconds=1), created) == [previous]


# --- intervals ---------------------------------------------------------------------------------


def test_an_interval_is_exact_real_time_across_fall_back() -> None:
    start = datetime(2024, 10, 27, 0, 0, tzinfo=ZoneInfo(BERLIN))  # 2024-10-26T22:00Z
    timing = Timing(interval_seconds=3600, timezone=BERLIN, start=start)
    found = fires(timing, utc(2024, 10, 26), 6)
    assert found == [utc(2024, 10, 26, 22) + k * HOUR for k in range(6)]


def test_a_daily_interval_keeps_24_hours_of_real_time_across_spring_forward() -> None:
    start = datetime(2024, 3, 9, 12, 0, tzinfo=ZoneInfo(NEW_YORK))  # 17:00Z, noon EST
    timing = Timing(interval_seconds=86_400, timezone=NEW_YORK, start=start)
    found = fires(timing, utc(2024, 3, 1), 3)
    assert found == [utc(2024, 3, 9, 17), utc(2024, 3, 10, 17), utc(2024, 3, 11, 17)]
    assert local_hours(found, NEW_YORK) == ["12:00-0500", "13:00-0400", "13:00-0400"]


def test_an_interval_without_start_sits_on_the_epoch_grid() -> None:
    hourly = Timing(interval_seconds=3600)
    assert next_fire(hourly, utc(2024, 5, 1, 12, 34, 56)) == utc(2024, 5, 1, 13)
    assert next_fire(hourly, utc(2024, 5, 1, 13)) == utc(2024, 5, 1, 14)  # strictly after
    odd = Timing(interval_seconds=7)
    after = utc(2024, 5, 1, 12, 34, 56)
    fire = next_fire(odd, after)
    assert fire is not None
    assert (fire - EPOCH) % timedelta(seconds=7) == timedelta(0)
    assert timedelta(0) < fire - after <= timedelta(seconds=7)


def test_a_fractional_interval_is_exact_to_the_microsecond() -> None:
    timing = Timing(interval_seconds=0.25, start=utc(2024, 1, 1))
    assert fires(timing, utc(2024, 1, 1), 3) == [
        utc(2024, 1, 1) + timedelta(milliseconds=250 * k) for k in (1, 2, 3)
    ]


# --- start and end bounds ----------------------------------------------------------------------


def test_nothing_fires_before_start_and_a_slot_at_start_fires() -> None:
    late_start = Timing("0 * * * *", start=utc(2024, 1, 1, 10, 30))
    assert next_fire(late_start, utc(2024, 1, 1)) == utc(2024, 1, 1, 11)
    on_slot = Timing("0 * * * *", start=utc(2024, 1, 1, 10))
    assert next_fire(on_slot, utc(2024, 1, 1)) == utc(2024, 1, 1, 10)
    interval = Timing(interval_seconds=600, start=utc(2024, 1, 1, 10, 0, 30))
    assert next_fire(interval, utc(2023, 12, 1)) == utc(2024, 1, 1, 10, 0, 30)
    assert next_fire(interval, utc(2024, 1, 1, 10, 0, 30)) == utc(2024, 1, 1, 10, 10, 30)


def test_nothing_fires_after_end_and_a_slot_at_end_fires() -> None:
    cron = Timing("0 * * * *", end=utc(2024, 1, 1, 12))
    assert next_fire(cron, utc(2024, 1, 1, 11, 30)) == utc(2024, 1, 1, 12)
    assert next_fire(cron, utc(2024, 1, 1, 12)) is None
    interval = Timing(interval_seconds=900, start=utc(2024, 1, 1), end=utc(2024, 1, 1, 1))
    assert next_fire(interval, utc(2024, 1, 1, 0, 50)) == utc(2024, 1, 1, 1)
    assert next_fire(interval, utc(2024, 1, 1, 1)) is None


def test_bounds_are_stored_in_utc_and_the_cron_is_normalised() -> None:
    timing = Timing(" 0  2 * *   * ", start=datetime(2024, 7, 1, 2, tzinfo=ZoneInfo(BERLIN)))
    assert timing.cron == "0 2 * * *"
    assert timing.start == utc(2024, 7, 1, 0)
    assert timing.start is not None and timing.start.tzinfo is UTC


# --- due -----------------------------------------------------------------------------------------


def test_after_a_five_hour_outage_catchup_off_runs_the_latest_slot_once() -> None:
    timing = Timing("0 * * * *")
    last, now = utc(2024, 1, 1, 10), utc(2024, 1, 1, 15, 30)
    assert due(timing, last, now, created=utc(2023, 1, 1)) == [utc(2024, 1, 1, 15)]


def test_after_a_five_hour_outage_catchup_on_runs_every_missed_slot_in_order() -> None:
    timing = Timing("0 * * * *", catchup=True)
    last, now = utc(2024, 1, 1, 10), utc(2024, 1, 1, 15, 30)
    assert due(timing, last, now, created=utc(2023, 1, 1)) == [
        utc(2024, 1, 1, hour) for hour in (11, 12, 13, 14, 15)
    ]


def test_an_outage_over_fall_back_misses_five_real_hours() -> None:
    last, now = utc(2024, 10, 26, 22), utc(2024, 10, 27, 3, 10)
    catchup = Timing("0 * * * *", timezone=BERLIN, catchup=True)
    missed = due(catchup, last, now, created=utc(2024, 1, 1))
    assert missed == [utc(2024, 10, 26, 23) + k * HOUR for k in range(5)]
    latest = Timing("0 * * * *", timezone=BERLIN)
    assert due(latest, last, now, created=utc(2024, 1, 1)) == [utc(2024, 10, 27, 3)]


def test_nothing_is_due_until_the_first_slot_after_creation() -> None:
    for catchup in (False, True):
        timing = Timing("0 * * * *", catchup=catchup)
        created = utc(2024, 1, 1, 10, 15)
        assert due(timing, None, utc(2024, 1, 1, 10, 59), created) == []
        assert due(timing, None, utc(2024, 1, 1, 11), created) == [utc(2024, 1, 1, 11)]
        on_slot = utc(2024, 1, 1, 11)
        assert due(timing, None, on_slot, created=on_slot) == []


def test_a_slot_at_start_is_due_when_start_is_not_before_creation() -> None:
    timing = Timing(interval_seconds=600, start=utc(2024, 1, 1, 12))
    created = utc(2024, 1, 1, 11)
    assert due(timing, None, utc(2024, 1, 1, 11, 59), created) == []
    assert due(timing, None, utc(2024, 1, 1, 12), created) == [utc(2024, 1, 1, 12)]
    assert due(timing, None, utc(2024, 1, 1, 12), created=utc(2024, 1, 1, 12)) == [
        utc(2024, 1, 1, 12)
    ]


def test_a_slot_that_was_fired_is_not_due_again() -> None:
    timing = Timing("0 * * * *", catchup=True)
    assert due(timing, utc(2024, 1, 1, 11), utc(2024, 1, 1, 11, 59), utc(2024, 1, 1)) == []


def test_due_never_returns_slots_after_end() -> None:
    last, now, created = utc(2024, 1, 1, 10), utc(2024, 1, 1, 18), utc(2023, 1, 1)
    end = utc(2024, 1, 1, 13)
    catchup = Timing("0 * * * *", end=end, catchup=True)
    assert due(catchup, last, now, created) == [utc(2024, 1, 1, h) for h in (11, 12, 13)]
    assert due(Timing("0 * * * *", end=end), last, now, created) == [utc(2024, 1, 1, 13)]
    assert due(catchup, end, now, created) == []


def test_catchup_returns_at_most_max_catchup_slots_oldest_first() -> None:
    timing = Timing("* * * * *", catchup=True)
    last, now, created = utc(2024, 1, 1), utc(2024, 1, 3), utc(2023, 1, 1)
    first = due(timing, last, now, created)
    assert len(first) == MAX_CATCHUP == 1000
    assert first[0] == utc(2024, 1, 1, 0, 1)
    assert first[-1] == utc(2024, 1, 1) + timedelta(minutes=1000)
    rest = due(timing, first[-1], now, created)
    assert rest[0] == first[-1] + timedelta(minutes=1)


def test_catchup_off_finds_the_latest_slot_after_a_long_outage() -> None:
    timing = Timing("* * * * *", timezone=BERLIN)
    last, now = utc(2020, 1, 1), utc(2024, 10, 27, 1, 0, 30)
    assert due(timing, last, now, created=utc(2019, 1, 1)) == [utc(2024, 10, 27, 1)]


# --- invalid input ---------------------------------------------------------------------------

NAIVE = datetime(2024, 1, 1)


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        (
            {"cron": "61 * * * *"},
            ["cron '61 * * * *' does not parse", "minute must be 0-59", "write 5 fields: minute"],
        ),
        ({"cron": "0 24 * * *"}, ["hour '24' is not valid", "hour must be 0-23"]),
        ({"cron": "0 0 * foo *"}, ["month 'foo' is not valid", "1-12 or jan-dec"]),
        ({"cron": "0 0 * * 8"}, ["day-of-week '8' is not valid", "0-7 or sun-sat"]),
        ({"cron": "0 2 * *"}, ["has 4 fields", "write 5 fields"]),
        ({"cron": "0 0 2 * * *"}, ["has 6 fields", "seconds and years are not supported"]),
        ({"cron": "@daily"}, ["is a macro", "'0 0 * * *' instead"]),
        ({"cron": "0 0 31 2 *"}, ["never fires", "pick a day that exists"]),
        (
            {"cron": "0 2 * * *", "timezone": "Europe/Berln"},
            ["unknown timezone 'Europe/Berln'", "did you mean 'Europe/Berlin'", "IANA name"],
        ),
        ({"cron": "0 2 * * *", "timezone": "localtime"}, ["unknown timezone 'localtime'"]),
        ({"cron": "0 2 * * *", "timezone": "Europe"}, ["unknown timezone 'Europe'"]),
        (
            {"cron": "0 2 * * *", "interval_seconds": 60},
            ["exactly one of cron and interval_seconds, both given"],
        ),
        ({}, ["exactly one of cron and interval_seconds, neither given"]),
        ({"interval_seconds": 0}, ["interval_seconds must be", "e.g. 3600 for hourly"]),
        ({"interval_seconds": -5}, ["interval_seconds must be"]),
        ({"interval_seconds": math.nan}, ["interval_seconds must be"]),
        ({"interval_seconds": math.inf}, ["interval_seconds must be"]),
        ({"interval_seconds": True}, ["interval_seconds must be a number"]),
        (
            {"interval_seconds": 60, "start": NAIVE},
            ["start 2024-01-01T00:00:00 has no timezone", "tzinfo=UTC"],
        ),
        ({"interval_seconds": 60, "end": NAIVE}, ["end 2024-01-01T00:00:00 has no timezone"]),
        (
            {"interval_seconds": 60, "start": utc(2024, 1, 2), "end": utc(2024, 1, 1)},
            ["is not after start", "set end later than start"],
        ),
        (
            {"interval_seconds": 60, "start": utc(2024, 1, 1), "end": utc(2024, 1, 1)},
            ["is not after start"],
        ),
    ],
)
def test_bad_timings_are_refused_with_a_message_saying_what_to_write(
    kwargs: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(InvalidInput) as caught:
        Timing(**kwargs)
    for fragment in fragments:
        assert fragment in caught.value.message
    assert caught.value.code == "invalid_input"


def test_naive_moments_are_refused_by_next_fire_and_due() -> None:
    timing = Timing("0 * * * *")
    with pytest.raises(InvalidInput, match=r"after 2024-01-01T00:00:00 has no timezone"):
        next_fire(timing, NAIVE)
    with pytest.raises(InvalidInput, match=r"now 2024-01-01T00:00:00 has no timezone"):
        due(timing, None, NAIVE, utc(2024, 1, 1))
    with pytest.raises(InvalidInput, match=r"created .* has no timezone"):
        due(timing, None, utc(2024, 1, 1), NAIVE)
    with pytest.raises(InvalidInput, match=r"last_fire .* has no timezone"):
        due(timing, NAIVE, utc(2024, 1, 1), utc(2024, 1, 1))
