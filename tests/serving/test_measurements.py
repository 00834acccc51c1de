"""What the control plane keeps of the gateway's reports: windows for the judge, minutes for
the SLOs (nothing lost when a write fails)."""

from __future__ import annotations

import datetime as dt

from modelyard.serving.measurements import Measurements
from tests.conftest import Clock

START = dt.datetime(2026, 11, 23, 12, 0, 30, tzinfo=dt.UTC)


def report(requests: int, errors: int, latency: float) -> dict[str, object]:
    return {
        "revisions": {"rev": {"requests": requests, "errors": errors, "latencies_ms": [latency]}},
        "deployments": {"dep": {"requests": requests, "errors": errors, "buckets": [requests, 0]}},
    }


def test_a_window_holds_what_was_served_since_its_start() -> None:
    clock = Clock(START)
    measurements = Measurements(clock)
    measurements.add(report(10, 1, 5.0))
    clock.now = START + dt.timedelta(seconds=20)
    measurements.add(report(30, 0, 7.0))
    measurements.add({"revisions": {"rev": "garbage"}, "deployments": {"dep": None}})
    since_start = measurements.served("rev", START)
    assert (since_start.requests, since_start.errors, since_start.latencies_ms) == (40, 1, [5, 7])
    later = measurements.served("rev", START + dt.timedelta(seconds=10))
    assert (later.requests, later.latencies_ms) == (30, [7.0])
    assert measurements.served("other", START).requests == 0


def test_minutes_add_up_and_come_back_when_a_write_failed() -> None:
    clock = Clock(START)
    measurements = Measurements(clock)
    measurements.add(report(10, 1, 5.0))
    measurements.add(report(5, 0, 5.0))
    clock.now = START + dt.timedelta(minutes=1)
    measurements.add(report(2, 2, 5.0))
    minutes = measurements.take_minutes()
    assert [(m.minute.minute, m.requests, m.errors, m.buckets) for m in minutes] == [
        (0, 15, 1, [15, 0]),
        (1, 2, 2, [2, 0]),
    ]
    assert measurements.take_minutes() == []
    measurements.put_back(minutes)  # the write failed
    measurements.add(report(1, 0, 5.0))
    again = measurements.take_minutes()
    assert [(m.minute.minute, m.requests) for m in again] == [(0, 15), (1, 3)]
