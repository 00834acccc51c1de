"""Lag objectives of realtime deployments: the gateway's lag samples, as its reports carry them,
judged like requests on a simulated clock; bad objectives refused; Prometheus rules on the lag
gauge that promtool accepts and that fire as ours do. End to end with a real worker:
tests/realtime/test_lag_slo.py."""

# ruff: noqa: F811 (the SLO tests' clock and plane fixtures are imported, shared not copied, by
# the names of the parameters that take them)

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from modelyard.controlplane import ControlPlane
from modelyard.delivery.burnrate import Objective
from modelyard.delivery.records import AlertInfo
from modelyard.errors import InvalidInput
from modelyard.realtime.records import RealtimeWorkload
from modelyard.realtime.streams import StreamSpec
from modelyard.serving.records import DeploymentSpec
from tests.conftest import Clock
from tests.delivery.test_slo import (  # noqa: F401
    START,
    any_plane,
    clock,
    deploy,
    expected,
    plane,
    promtool_run,
    promtool_test,
    slo_events,
)

LAG = Objective(name="lag-5s", kind="lag", target=0.99, threshold_s=5)
SAMPLES_PER_MINUTE = 60


def realtime(plane: ControlPlane, name: str = "scorer") -> None:
    """A realtime deployment reading ``team/clicks`` (no worker runs it here)."""
    plane.namespaces.create("team")
    plane.catalog.create_stream("team", "clicks", StreamSpec())
    workload = RealtimeWorkload(stream="clicks", function="tests.realtime.functions:score")
    plane.deployments.create("team", name, DeploymentSpec(realtime=workload))


def report(plane: ControlPlane, **lags: float) -> None:
    """One gateway report carrying the lag of deployments ``team/NAME`` (oldest pending, s)."""
    plane.telemetry.add(
        {"lags": {f"team/{name}": {"events": 10, "oldest_s": s} for name, s in lags.items()}}
    )


def lagging(
    plane: ControlPlane, clock: Clock, minutes: int, oldest_s: float
) -> list[tuple[int, AlertInfo]]:
    """``minutes`` of one lag sample a second at ``oldest_s``, written and evaluated after each
    minute as the control plane does: the alerts that changed, by minute."""
    changed = []
    for n in range(1, minutes + 1):
        for _ in range(SAMPLES_PER_MINUTE):
            report(plane, scorer=oldest_s)
        plane.telemetry.flush()
        clock.now += dt.timedelta(minutes=1)
        changed += [(n, alert) for alert in plane.slos.evaluate()]
    return changed


def test_a_growing_lag_burns_the_budget_and_alerts_resolve_as_it_recovers(
    plane: ControlPlane, clock: Clock
) -> None:
    realtime(plane)
    plane.slos.set("team", "scorer", [LAG])
    assert lagging(plane, clock, 60, oldest_s=0.2) == []

    # Every sample over 5 s against 99 %: the 5-minute window burns at 100 at once. The 3 days
    # (60 good minutes so far) pass the ticket's 1 at once, the half hour and 6 hours pass 6
    # after 4 minutes (4 / 64 > 6 %), the hour passes 14.4 after 9 (9 / 60 > 14.4 %).
    fired = lagging(plane, clock, 10, oldest_s=30)
    assert [(n, a.rule, a.state) for n, a in fired] == [
        (1, "ticket-3d", "firing"),
        (4, "page-6h", "firing"),
        (9, "page-1h", "firing"),
    ]
    status = plane.slos.status("team", "scorer").objectives[0]
    assert (status.requests, status.bad) == (70 * 60, 10 * 60)  # samples, over 5 s
    assert status.burn_rates["5m"] == pytest.approx(100)
    firing = slo_events(plane)[-1][1]
    assert firing["kind"] == "lag" and firing["threshold_s"] == 5

    # The lag recovers; a sample at the threshold is good (le="5" holds it). The 5-minute window
    # is clean after 5 minutes: the fast page resolves; the budget stays spent.
    resolved = lagging(plane, clock, 5, oldest_s=5.0)
    assert [(n, a.rule, a.state) for n, a in resolved] == [(5, "page-1h", "resolved")]
    status = plane.slos.status("team", "scorer").objectives[0]
    assert status.burn_rates["5m"] == 0.0 and status.budget_remaining < 0


def test_samples_count_only_for_the_deployment_they_name(any_plane: ControlPlane) -> None:
    plane = any_plane
    realtime(plane)
    realtime_two = DeploymentSpec(
        realtime=RealtimeWorkload(stream="clicks", function="tests.realtime.functions:score")
    )
    plane.deployments.create("team", "other", realtime_two)
    plane.slos.set("team", "scorer", [LAG])
    plane.slos.set("team", "other", [LAG])
    for _ in range(30):
        report(plane, scorer=0.05, other=60, gone=600)  # team/gone: no such deployment
    assert plane.telemetry.flush() == 2
    ours = plane.slos.status("team", "scorer").objectives[0]
    theirs = plane.slos.status("team", "other").objectives[0]
    assert (ours.requests, ours.bad, ours.sli) == (30, 0, 1.0)
    assert (theirs.requests, theirs.bad, theirs.sli) == (30, 30, 0.0)


def test_no_samples_no_alert(plane: ControlPlane, clock: Clock) -> None:
    realtime(plane)
    plane.slos.set("team", "scorer", [LAG])
    clock.now += dt.timedelta(minutes=10)
    assert plane.slos.evaluate() == []
    status = plane.slos.status("team", "scorer").objectives[0]
    assert status.sli is None and set(status.burn_rates.values()) == {None}


def test_bad_lag_objectives_are_refused_and_change_nothing(plane: ControlPlane) -> None:
    realtime(plane)
    plane.slos.set("team", "scorer", [LAG])
    bad = [
        (
            {"name": "l", "kind": "lag", "target": 0.99, "threshold_s": 7},
            "7 is not a lag bucket of the gateway; give threshold_s as one of 0.1, 0.25",
        ),
        ({"name": "l", "kind": "lag", "target": 0.99}, "no threshold_s is not a lag bucket"),
        (
            {"name": "l", "kind": "lag", "target": 0.99, "threshold_s": 5, "threshold_ms": 250},
            "threshold_ms belongs to latency objectives; leave it out of a lag objective",
        ),
        (
            {"name": "f", "kind": "latency", "target": 0.99, "threshold_ms": 250, "threshold_s": 5},
            "threshold_s belongs to lag objectives; leave it out of a latency objective",
        ),
    ]
    for objective, message in bad:
        with pytest.raises(InvalidInput, match=message):
            plane.slos.set("team", "scorer", [objective])
    assert plane.slos.get("team", "scorer") == [LAG]


def test_a_lag_objective_needs_a_realtime_deployment(plane: ControlPlane) -> None:
    deploy(plane, "iris")
    with pytest.raises(InvalidInput, match="a lag objective judges a realtime deployment"):
        plane.slos.set("team", "iris", [LAG])
    assert plane.slos.get("team", "iris") == []


def test_exported_lag_rules_pass_promtool_and_fire_like_ours(
    plane: ControlPlane, tmp_path: Path
) -> None:
    realtime(plane, "iris")  # the names expected() labels its alerts with
    plane.slos.set("team", "iris", [LAG])
    rules = tmp_path / "rules.yml"
    rules.write_text(plane.slos.prometheus_rules("team", "iris"))
    assert "SUCCESS: 8 rules found" in promtool_run("check", "rules", str(rules))

    def gauge(values: str) -> dict[str, str]:
        labels = 'namespace="team",deployment="iris"'
        return {"series": f"modelyard_realtime_lag_seconds{{{labels}}}", "values": values}

    tests = [
        {  # the oldest event always waits 30 s: every window is all bad
            "interval": "1m",
            "input_series": [gauge("30x120")],
            "alert_rule_test": [expected(LAG, "page-1h", "page-6h", "ticket-3d")],
        },
        {  # at the threshold, never over it: no alert
            "interval": "1m",
            "input_series": [gauge("5x120")],
            "alert_rule_test": [{"eval_time": "90m", "alertname": "ModelyardSloBurnRate"}],
        },
    ]
    promtool_test(rules, tests)
