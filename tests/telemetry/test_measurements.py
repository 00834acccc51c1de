"""What the control plane keeps of the gateway's reports: windows for the judge, minutes for
the SLOs (nothing lost when a write fails)."""

from __future__ import annotations

import datetime as dt

from modelyard.delivery.analysis import END_TO_END, FAIL, PASS, SERVICE, judge
from modelyard.serving.records import Analysis
from modelyard.telemetry.measurements import Measurements
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


def served(latencies: list[float], service: list[float] | None) -> dict[str, object]:
    revision: dict[str, object] = {"requests": len(latencies), "errors": 0}
    revision["latencies_ms"] = latencies
    if service is not None:  # a gateway that predates service times sends none
        revision["service_ms"] = service
    return revision


def test_the_judge_gets_the_service_times_beside_the_end_to_end_ones() -> None:
    clock = Clock(START)
    measurements = Measurements(clock)
    # stable queues (33 ms end to end for 4 ms of work), the 3x slower canary does not (13 ms)
    for _ in range(3):
        measurements.add(
            {
                "revisions": {
                    "stable": served([33.0, 34.0, 32.0] * 100, [4.0, 4.2, 3.9] * 100),
                    "canary": served([13.0, 13.5, 12.5] * 12, [12.0, 12.3, 11.8] * 12),
                    "faster": served([35.0, 36.0, 34.0] * 12, [2.0, 2.1, 1.9] * 12),
                    "old": served([13.0, 13.5, 12.5] * 12, None),
                }
            }
        )
        clock.now += dt.timedelta(seconds=1)
    stable = measurements.served("stable", START)
    assert (len(stable.latencies_ms), len(stable.service_ms)) == (900, 900)
    slower = judge(stable, measurements.served("canary", START), Analysis())
    assert slower.result == FAIL, slower.reasons
    assert slower.evidence["latency"]["measure"] == SERVICE
    faster = judge(stable, measurements.served("faster", START), Analysis())
    assert faster.result == PASS, faster.reasons
    # Without service times on one side, end to end it is (and there the slower one passes).
    old = judge(stable, measurements.served("old", START), Analysis())
    assert old.evidence["latency"]["measure"] == END_TO_END
    assert old.result == PASS


def test_a_report_sent_again_counts_once_in_the_minute_it_was_measured() -> None:
    """The gateway sends again what a control plane that was down never took: the SLOs see the
    outage's traffic in its own minutes, and a report taken twice counts once."""
    clock = Clock(START + dt.timedelta(minutes=5))
    measurements = Measurements(clock)
    late = {**report(7, 7, 5.0), "id": "gw-1", "at": START.timestamp()}
    measurements.add(late)
    measurements.add(late)
    measurements.add({**report(3, 0, 5.0), "id": "gw-2"})
    minutes = {m.minute: (m.requests, m.errors) for m in measurements.take_minutes()}
    assert minutes == {
        START.replace(second=0): (7, 7),
        (START + dt.timedelta(minutes=5)).replace(second=0): (3, 0),
    }
