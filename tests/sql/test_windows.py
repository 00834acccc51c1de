"""Window arithmetic: pure logic, no database."""

from __future__ import annotations

import datetime as dt

import pytest

from modelyard.errors import InvalidInput
from modelyard.sql import windows as w

UTC = dt.UTC


def recorded(start: int | None, end: int, rows: int = 1, seq: int = 1) -> w.Recorded:
    return w.Recorded(w.Window(start, end), rows, "d" * 64, (f"window-{seq:06d}/p",), seq)


def test_the_first_import_reads_up_to_the_clock_less_the_lag() -> None:
    now = dt.datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    upper = w.upper_bound("timestamptz", now, None)
    lag = w.step_of(900, "timestamptz", "lag")
    assert w.next_windows(None, "timestamptz", start=None, upper=upper, lag=lag, size=None) == [
        w.Window(None, dt.datetime(2026, 3, 28, 11, 45, tzinfo=UTC))
    ]
    naive = w.upper_bound("timestamp", now.astimezone(dt.timezone(dt.timedelta(hours=2))), None)
    assert naive == dt.datetime(2026, 3, 28, 12, 0)
    assert w.upper_bound("date", now, None) == dt.date(2026, 3, 28)


def test_later_imports_go_on_from_the_last_window_without_gap_or_overlap() -> None:
    history = w.History("id", "int", [recorded(None, 101), recorded(101, 151, seq=2)])
    assert history.end == 151 and history.next_seq == 3
    upper = w.upper_bound("int", dt.datetime.now(UTC), 300)
    assert w.next_windows(history, "int", start=None, upper=upper, lag=0, size=100) == [
        w.Window(151, 251),
        w.Window(251, 301),
    ]
    assert w.next_windows(history, "int", start=None, upper=151, lag=0, size=None) == []
    assert w.next_windows(history, "int", start=None, upper=160, lag=10, size=None) == []
    assert w.next_windows(None, "int", start=None, upper=None, lag=0, size=None) == []


def test_a_backfill_replaces_whole_windows_and_refuses_to_cut_one() -> None:
    history = w.History("id", "int", [recorded(None, 50), recorded(50, 100, seq=2)])
    windows, replaced = w.backfill_windows(history, 50, 100, 25)
    assert windows == [w.Window(50, 75), w.Window(75, 100)]
    assert replaced == [history.windows[1]]
    windows, replaced = w.backfill_windows(history, None, 100, None)
    assert windows == [w.Window(None, 100)] and replaced == history.windows
    with pytest.raises(InvalidInput, match=r"cuts through the imported window \[50, 100\)"):
        w.backfill_windows(history, 60, 120, None)
    with pytest.raises(InvalidInput, match="is empty"):
        w.backfill_windows(history, 60, 60, None)


def test_values_lags_and_windows_are_checked_against_the_kind() -> None:
    assert w.coerce("2026-03-28", "date", "start") == dt.date(2026, 3, 28)
    assert w.coerce("2026-03-28T10:00:00+02:00", "timestamptz", "start") == dt.datetime(
        2026, 3, 28, 8, tzinfo=UTC
    )
    assert w.coerce(dt.date(2026, 3, 28), "timestamp", "start") == dt.datetime(2026, 3, 28)
    assert w.coerce("17", "int", "start") == 17
    with pytest.raises(InvalidInput, match="not a value of a int watermark"):
        w.coerce("yesterday", "int", "start")
    assert w.step_of(dt.timedelta(days=2), "date", "window") == dt.timedelta(days=2)
    with pytest.raises(InvalidInput, match="whole number of days"):
        w.step_of(3600, "date", "window")
    with pytest.raises(InvalidInput, match="cannot be negative"):
        w.step_of(-1, "int", "lag")
    with pytest.raises(InvalidInput, match="a number, not a duration"):
        w.step_of(dt.timedelta(1), "int", "lag")
    with pytest.raises(InvalidInput, match="more than"):
        w.split(0, 10**9, 1)


def test_recorded_windows_survive_their_json() -> None:
    window = w.Recorded(
        w.Window(dt.datetime(2026, 3, 1, tzinfo=UTC), dt.datetime(2026, 3, 2, tzinfo=UTC)),
        5,
        "e" * 64,
        ("window-000004/part-00000.parquet",),
        4,
    )
    assert w.Recorded.from_json(window.to_json(), "timestamptz") == window
    assert w.ordered([recorded(10, 20, seq=2), recorded(None, 10)])[0].window.start is None
