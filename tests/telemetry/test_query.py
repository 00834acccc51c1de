"""The one range query: a revision's ranges from the gateway's recent reports, a deployment's from
the stored minutes, the same records either way; flushing, and pruning."""

from __future__ import annotations

import datetime as dt

import pytest

from modelyard.controlplane import ControlPlane
from modelyard.telemetry.records import BUCKETS, MINUTE, Sample
from tests.conftest import Clock
from tests.delivery.test_slo import FAST, SLOW, START, deploy, minute


def report(deployment: str, requests: int, errors: int, latency_ms: float) -> dict[str, object]:
    buckets = [0] * (len(BUCKETS) + 1)
    buckets[FAST] = requests
    return {
        "revisions": {
            "rev": {"requests": requests, "errors": errors, "latencies_ms": [latency_ms]}
        },
        "deployments": {deployment: {"requests": requests, "errors": errors, "buckets": buckets}},
    }


def test_a_deployment_s_ranges_come_from_the_stored_minutes(any_plane: ControlPlane) -> None:
    dep = deploy(any_plane)
    telemetry = any_plane.telemetry
    telemetry.record(minute(dep, START + n * MINUTE, 100, n, slow=n) for n in range(10))
    telemetry.record([minute(dep, START + 9 * MINUTE, 50, 1)])  # adds into the minute
    points = telemetry.series(dep, since=START + 2 * MINUTE, until=START + 5 * MINUTE)
    assert [(p.at, p.served.requests, p.served.errors) for p in points] == [
        (START + n * MINUTE, 100, n) for n in (2, 3, 4)
    ]
    assert points[1].served.buckets[SLOW] == 3
    every_five = telemetry.series(dep, since=START, step=5 * MINUTE)
    assert [(p.at, p.served.requests, p.served.errors) for p in every_five] == [
        (START, 500, 10),
        (START + 5 * MINUTE, 550, 36),
    ]
    total = telemetry.totals(dep, since=START + 8 * MINUTE)
    assert (total.requests, total.errors, total.buckets[SLOW]) == (250, 18, 17)
    assert total.buckets[FAST] == 250 - 17
    windows = telemetry.windows(dep, {"all": START, "last": START + 9 * MINUTE}, buckets=False)
    assert {k: (s.requests, s.errors, s.buckets) for k, s in windows.items()} == {
        "all": (1050, 46, []),
        "last": (150, 10, []),
    }
    assert telemetry.totals("nobody", since=START) == Sample(buckets=[0] * (len(BUCKETS) + 1))


def test_steps_summed_by_the_database_match_the_minutes_added_up_here(
    any_plane: ControlPlane,
) -> None:
    """The dashboard's 30-day charts read per-step sums, not every minute: the same numbers for a
    step and a start that do not line up with the minutes."""
    dep = deploy(any_plane)
    telemetry = any_plane.telemetry
    telemetry.record(minute(dep, START + n * MINUTE, 10 + n, n % 3, slow=n % 4) for n in range(60))
    since, step = START + dt.timedelta(seconds=90), dt.timedelta(minutes=7)
    expected: dict[dt.datetime, tuple[int, int, list[int]]] = {}
    for p in telemetry.series(dep, since=since):
        at = since + int((p.at - since) / step) * step
        requests, errors, buckets = expected.get(at, (0, 0, [0] * len(p.served.buckets)))
        summed = [a + b for a, b in zip(buckets, p.served.buckets, strict=True)]
        expected[at] = (requests + p.served.requests, errors + p.served.errors, summed)
    points = telemetry.series(dep, since=since, step=step)
    assert [(p.at, p.served.requests, p.served.errors, p.served.buckets) for p in points] == [
        (at, *found) for at, found in expected.items()
    ]
    assert len(points) == 9 and points[0].at == since


def test_a_revision_s_ranges_come_from_the_recent_reports(
    plane: ControlPlane, clock: Clock
) -> None:
    telemetry = plane.telemetry
    for n in range(4):
        clock.now = START + dt.timedelta(seconds=10 * n)
        telemetry.add(report("dep", 10, n, float(n)))
    points = telemetry.series("dep", revision="rev", since=START + dt.timedelta(seconds=10))
    assert [(p.at, p.served.requests, p.served.errors) for p in points] == [
        (START + dt.timedelta(seconds=s), 10, s // 10) for s in (10, 20, 30)
    ]
    halves = telemetry.series("dep", revision="rev", since=START, step=dt.timedelta(seconds=20))
    assert [(p.served.requests, p.served.latencies_ms) for p in halves] == [
        (20, [0.0, 1.0]),
        (20, [2.0, 3.0]),
    ]
    served = telemetry.totals(
        "dep", revision="rev", since=START, until=START + dt.timedelta(seconds=20)
    )
    assert (served.requests, served.errors, served.latencies_ms) == (20, 1, [0.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        telemetry.series("dep", revision="rev", since=START, step=dt.timedelta(0))


def test_flush_writes_the_minutes_of_the_reports_and_prune_drops_old_ones(
    plane: ControlPlane, clock: Clock
) -> None:
    dep = deploy(plane)
    telemetry = plane.telemetry
    telemetry.add(report(dep, 7, 1, 5.0))
    telemetry.add(report("gone", 3, 0, 5.0))  # a deleted deployment's counts are dropped
    clock.now = START + MINUTE
    telemetry.add(report(dep, 5, 0, 5.0))
    assert telemetry.flush() == 2
    assert telemetry.flush() == 0
    assert [(p.at, p.served.requests) for p in telemetry.series(dep, since=START)] == [
        (START, 7),
        (START + MINUTE, 5),
    ]
    assert telemetry.oldest() == {dep: START}
    assert telemetry.prune({dep: START + MINUTE}) == 1
    assert telemetry.oldest() == {dep: START + MINUTE}
