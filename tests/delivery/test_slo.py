"""SLOs: burn-rate alerts on a simulated clock, error budgets on known numbers, alerts reaching
webhooks, Prometheus rules that promtool accepts and that fire as ours do. The API and the CLI:
tests/cli/test_slos_cli.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from modelyard.controlplane import ControlPlane
from modelyard.delivery.burnrate import Objective
from modelyard.delivery.prometheus import ALERT, describe_alert
from modelyard.delivery.records import AlertInfo
from modelyard.errors import InvalidInput, NotFound
from modelyard.events.webhooks import SIGNATURE_HEADER, Backoff, verify_signature
from modelyard.registry.records import VersionSpec
from modelyard.serving.records import DeploymentSpec
from modelyard.settings import Settings
from modelyard.store.schema import DeploymentRow, TrafficMinuteRow
from modelyard.telemetry.records import BUCKETS, TrafficMinute
from modelyard.testing import free_port, wait_for
from tests.conftest import Clock
from tests.events.test_webhooks import Receiver

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
AVAILABILITY = Objective(name="availability", kind="availability", target=0.999)
FAST = BUCKETS.index(0.05)
SLOW = BUCKETS.index(0.5)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


def build(settings: Settings, clock: Clock) -> ControlPlane:
    backoff = Backoff(base_seconds=0.05, max_seconds=0.2, max_attempts=50)
    return ControlPlane.build(settings, clock=clock, backoff=backoff)


@pytest.fixture
def plane(settings: Settings, clock: Clock) -> Iterator[ControlPlane]:
    cp = build(settings, clock)
    yield cp
    cp.close()


@pytest.fixture
def any_plane(database_url: str, tmp_path: Path, clock: Clock) -> Iterator[ControlPlane]:
    """On SQLite and on PostgreSQL."""
    cp = build(Settings(home=tmp_path / "home", api_port=0, database_url=database_url), clock)
    yield cp
    cp.close()


def deploy(plane: ControlPlane, name: str = "iris") -> str:
    """A deployment (no controller runs it here); returns its id."""
    plane.namespaces.create("team")
    draft = plane.versions.create_draft("model", "team", "m", VersionSpec())
    entry = plane.versions.put_file("model", "team", "m", draft.id, "m.bin", [b"model"])
    plane.versions.commit("model", "team", "m", draft.id, [entry])
    plane.deployments.create("team", name, DeploymentSpec(model="m@latest"))
    with plane.db.read() as session:
        return str(session.scalar(sa.select(DeploymentRow.id).where(DeploymentRow.name == name)))


def minute(
    deployment_id: str, at: dt.datetime, requests: int = 1000, errors: int = 0, slow: int = 0
) -> TrafficMinute:
    buckets = [0] * (len(BUCKETS) + 1)
    buckets[FAST], buckets[SLOW] = requests - slow, slow
    return TrafficMinute(deployment_id, at, requests, errors, buckets)


def serve(
    plane: ControlPlane, clock: Clock, deployment_id: str, minutes: int, **traffic: int
) -> list[tuple[int, AlertInfo]]:
    """``minutes`` of traffic, evaluating after each: the alerts that changed, by minute."""
    changed = []
    for n in range(1, minutes + 1):
        plane.telemetry.record([minute(deployment_id, clock.now, **traffic)])
        clock.now += dt.timedelta(minutes=1)
        changed += [(n, alert) for alert in plane.slos.evaluate()]
    return changed


def history(plane: ControlPlane, deployment_id: str, minutes: int) -> None:
    """Clean traffic in the ``minutes`` before now, written at once."""
    start = plane.events.clock() - dt.timedelta(minutes=minutes)
    plane.telemetry.record(
        minute(deployment_id, start + dt.timedelta(minutes=n)) for n in range(minutes)
    )


def slo_events(plane: ControlPlane) -> list[tuple[str, dict[str, object]]]:
    return [(e.type, e.data) for e in plane.events.read(0, 10_000) if e.type.startswith("slo.")]


# burn-rate alerts --------------------------------------------------------------------------------
def test_a_fast_burn_pages_and_resolves_soon_after_errors_stop(
    plane: ControlPlane, clock: Clock
) -> None:
    dep = deploy(plane)
    plane.slos.set("team", "iris", [AVAILABILITY], actor="tester")
    history(plane, dep, 3 * 24 * 60)
    assert plane.slos.evaluate() == []

    # 2 % errors against 99.9 %: burn rate 20. The 5-minute window passes 14.4 at once; the hour
    # passes it after 44 minutes (44 * 20 / 60 = 14.7).
    fired = serve(plane, clock, dep, 60, errors=20)
    assert [(n, a.rule, a.severity, a.state) for n, a in fired] == [
        (44, "page-1h", "page", "firing")
    ]
    status = plane.slos.status("team", "iris").objectives[0]
    assert status.burn_rates["5m"] == pytest.approx(20)
    assert status.burn_rates["1h"] == pytest.approx(20)
    assert [a.rule for a in status.alerts] == ["page-1h"]
    assert plane.slos.evaluate() == []  # idempotent: no second alert while it holds

    # Errors stop: the 5-minute window falls under 14.4 after 2 clean minutes (3 * 20 / 5 = 12)
    # while the hour still burns at 19: the short window is what resolves it.
    resolved = serve(plane, clock, dep, 5)
    assert [(n, a.rule, a.state) for n, a in resolved] == [(2, "page-1h", "resolved")]
    hour = plane.slos.status("team", "iris").objectives[0].burn_rates["1h"]
    assert hour is not None and hour > 14.4

    events = slo_events(plane)
    assert [t for t, _ in events] == ["slo.alert.firing", "slo.alert.resolved"]
    firing = events[0][1]
    assert firing["objective"] == "availability" and firing["severity"] == "page"
    assert firing["burn_rates"] == {"1h": pytest.approx(44 * 20 / 60), "5m": pytest.approx(20)}
    # 44 * 20 bad of 3 days + 44 minutes of 1000 requests: 880 of the 4364 allowed are spent
    assert firing["budget_remaining"] == pytest.approx(1 - 880 / 4364)
    assert events[1][1]["alert"] == firing["alert"]
    changed = [e for e in plane.events.read(0, 10_000) if e.type == "deployment.slos.changed"]
    assert [(e.subject, e.actor) for e in changed] == [("team/iris", "tester")]


def test_a_slow_burn_opens_only_a_ticket(plane: ControlPlane, clock: Clock) -> None:
    dep = deploy(plane)
    plane.slos.set("team", "iris", [AVAILABILITY])
    history(plane, dep, 60)
    # 0.3 % errors: burn rate 3, under both page factors (14.4, 6), over the ticket's 1 once the
    # three days (here: all the traffic there is) burn at more than 1: after 30 minutes.
    changed = serve(plane, clock, dep, 6 * 60, errors=3)
    assert [(n, a.rule, a.severity) for n, a in changed] == [(31, "ticket-3d", "ticket")]
    burn = plane.slos.status("team", "iris").objectives[0].burn_rates
    assert burn["6h"] == pytest.approx(3) and burn["5m"] == pytest.approx(3)


def test_latency_counts_requests_above_the_threshold(plane: ControlPlane, clock: Clock) -> None:
    dep = deploy(plane)
    objectives = [
        AVAILABILITY,
        Objective(name="fast", kind="latency", target=0.99, threshold_ms=250),
        Objective(name="very-fast", kind="latency", target=0.9, threshold_ms=50),
    ]
    plane.slos.set("team", "iris", objectives)
    at = clock.now - dt.timedelta(minutes=1)
    buckets = [0] * (len(BUCKETS) + 1)
    buckets[BUCKETS.index(0.25)] = 900  # at the threshold: le="0.25" holds it, it is good
    buckets[BUCKETS.index(0.5)] = 60
    buckets[-1] = 40  # above the last bound (60 s)
    plane.telemetry.record([TrafficMinute(dep, at, 1000, 0, buckets)])
    status = {s.objective.name: s for s in plane.slos.status("team", "iris").objectives}
    assert (status["fast"].requests, status["fast"].bad) == (1000, 100)
    assert status["fast"].sli == pytest.approx(0.9)
    assert status["fast"].burn_rates["5m"] == pytest.approx(10)  # 10 % bad / 1 % budget
    assert (status["very-fast"].bad, status["availability"].bad) == (1000, 0)
    assert status["availability"].sli == 1.0


def test_budget_on_known_numbers(plane: ControlPlane, clock: Clock) -> None:
    dep = deploy(plane)
    weekly = Objective(name="availability", kind="availability", target=0.99, window_days=7)
    plane.slos.set("team", "iris", [weekly])
    now = clock.now
    plane.telemetry.record(
        [
            minute(dep, now - dt.timedelta(days=8), errors=1000),  # outside the 7 days
            minute(dep, now - dt.timedelta(days=2), errors=10),
            minute(dep, now - dt.timedelta(hours=2), errors=15),
            *(minute(dep, now - dt.timedelta(minutes=m)) for m in range(1, 9)),
        ]
    )
    status = plane.slos.status("team", "iris").objectives[0]
    # 10 minutes of 1000 requests in the window: 1 % of 10 000 = 100 may fail; 25 did
    assert (status.requests, status.bad) == (10_000, 25)
    assert status.budget_total == pytest.approx(100)
    assert status.budget_consumed == 25
    assert status.budget_remaining == pytest.approx(0.75)
    assert status.sli == pytest.approx(0.9975)
    assert status.burn_rates["5m"] == 0.0
    assert status.burn_rates["3d"] == pytest.approx(25 / 10_000 / 0.01)


def test_no_traffic_no_alert(plane: ControlPlane, clock: Clock) -> None:
    deploy(plane)
    plane.slos.set("team", "iris", [AVAILABILITY])
    for _ in range(10):
        clock.now += dt.timedelta(minutes=7)
        assert plane.slos.evaluate() == []
    status = plane.slos.status("team", "iris").objectives[0]
    assert status.sli is None and status.budget_remaining == 1.0
    assert set(status.burn_rates.values()) == {None}
    assert slo_events(plane) == []


def test_removing_an_objective_resolves_its_alerts(plane: ControlPlane, clock: Clock) -> None:
    dep = deploy(plane)
    plane.slos.set("team", "iris", [AVAILABILITY])
    fired = serve(plane, clock, dep, 1, errors=500)
    assert {a.rule for _, a in fired} == {"page-1h", "page-6h", "ticket-3d"}
    plane.slos.set("team", "iris", [])
    resolved = plane.slos.evaluate()
    assert {(a.rule, a.state) for a in resolved} == {
        ("page-1h", "resolved"),
        ("page-6h", "resolved"),
        ("ticket-3d", "resolved"),
    }
    reasons = {d["reason"] for t, d in slo_events(plane) if t == "slo.alert.resolved"}
    assert reasons == {"the objective was removed or renamed"}


def test_bad_objectives_are_refused_and_change_nothing(plane: ControlPlane) -> None:
    deploy(plane)
    plane.slos.set("team", "iris", [AVAILABILITY])
    bad = [
        ({"name": "a", "kind": "availability", "target": 1.0}, "strictly between 0 and 1"),
        ({"name": "a", "kind": "availability", "target": 99.9}, "e.g. 0.999 for 99.9 %"),
        (
            {"name": "l", "kind": "latency", "target": 0.99, "threshold_ms": 300},
            "300 is not a latency bucket of the gateway; give threshold_ms as one of 1, 2.5, 5,",
        ),
        ({"name": "l", "kind": "latency", "target": 0.99}, "no threshold_ms is not a latency"),
        (
            {"name": "a", "kind": "availability", "target": 0.9, "threshold_ms": 250},
            "leave it out of an availability objective",
        ),
        ({"name": "a", "kind": "errors", "target": 0.9}, "kind"),
        ({"name": "a", "kind": "availability", "target": 0.9, "window": 7}, "window"),
        ({"name": "a", "kind": "availability", "target": 0.9, "window_days": 400}, "90"),
        ({"name": "Bad_Name", "kind": "availability", "target": 0.9}, "lowercase"),
    ]
    for objective, message in bad:
        with pytest.raises(InvalidInput, match="objective 1") as caught:
            plane.slos.set("team", "iris", [objective])
        assert message in caught.value.message
    again = {"name": "availability", "kind": "availability", "target": 0.99}
    twice: list[Objective | dict[str, object]] = [AVAILABILITY, again]
    with pytest.raises(InvalidInput, match="'availability' given more than once"):
        plane.slos.set("team", "iris", twice)
    with pytest.raises(NotFound, match="deployment team/ghost does not exist"):
        plane.slos.set("team", "ghost", [AVAILABILITY])
    assert plane.slos.get("team", "iris") == [AVAILABILITY]
    changed = [e for e in plane.events.read(0, 10_000) if e.type == "deployment.slos.changed"]
    assert len(changed) == 1


# traffic minutes ---------------------------------------------------------------------------------
def test_minutes_add_up_and_old_ones_are_pruned(any_plane: ControlPlane, clock: Clock) -> None:
    plane = any_plane
    dep = deploy(plane)
    plane.slos.set("team", "iris", [AVAILABILITY])
    now = clock.now
    second = now.replace(second=42)
    plane.telemetry.record([minute(dep, now, 10, 1, slow=2), minute(dep, second, 5, 2, slow=1)])
    plane.telemetry.record([minute(dep, now, 100, 3), minute("gone", now, 7, 7)])
    long_ago = now - dt.timedelta(days=31, minutes=1)
    plane.telemetry.record([minute(dep, long_ago, 9, 9), minute(dep, now - dt.timedelta(days=30))])
    with plane.db.read() as session:
        rows = {
            r.minute: r
            for r in session.scalars(sa.select(TrafficMinuteRow).order_by(TrafficMinuteRow.minute))
        }
    assert len(rows) == 3 and {r.deployment_id for r in rows.values()} == {dep}
    row = rows[now]
    assert (row.requests, row.errors) == (115, 6)
    assert (row.buckets[FAST], row.buckets[SLOW], sum(row.buckets)) == (112, 3, 115)

    assert {a.rule for a in plane.slos.evaluate()} == {"page-1h", "page-6h", "ticket-3d"}
    with plane.db.read() as session:
        kept = set(session.scalars(sa.select(TrafficMinuteRow.minute)))
    assert kept == {now, now - dt.timedelta(days=30)}  # 30 days + a day are kept
    plane.deployments.delete("team", "iris")
    assert plane.telemetry.record([minute(dep, now)]) == 0  # a deleted deployment's counts drop
    assert plane.slos.evaluate() == []


def test_concurrent_evaluations_fire_once(any_plane: ControlPlane, clock: Clock) -> None:
    plane = any_plane
    dep = deploy(plane)
    plane.slos.set("team", "iris", [AVAILABILITY])
    plane.telemetry.record([minute(dep, clock.now, errors=100)])
    changed: list[AlertInfo] = []
    threads = [
        threading.Thread(target=lambda: changed.extend(plane.slos.evaluate())) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(a.rule for a in changed) == ["page-1h", "page-6h", "ticket-3d"]
    assert len([t for t, _ in slo_events(plane)]) == 3


# webhooks ----------------------------------------------------------------------------------------
def test_alerts_reach_webhooks_signed_and_a_dead_one_blocks_nothing(
    plane: ControlPlane, clock: Clock
) -> None:
    dep = deploy(plane)
    plane.slos.set("team", "iris", [AVAILABILITY])
    receiver = Receiver(free_port())
    try:
        dead, _ = plane.webhooks.create("team", f"http://127.0.0.1:{free_port()}/", ["slo.*"])
        url = f"http://127.0.0.1:{receiver.server.server_port}/hook"
        _, secret = plane.webhooks.create("team", url, ["slo.alert.*"])
        plane.webhooks.start()
        fired = serve(plane, clock, dep, 1, errors=30)
        assert {a.rule for _, a in fired} == {"page-1h", "page-6h", "ticket-3d"}
        wait_for(lambda: len(receiver.received) == 3, what="three alerts at the live endpoint")
        for headers, body in receiver.received:
            assert verify_signature(secret, body, headers[SIGNATURE_HEADER])
            event = json.loads(body)
            assert event["type"] == headers["X-Modelyard-Event"] == "slo.alert.firing"
            assert event["subject"] == "team/iris" and event["data"]["objective"] == "availability"
        severities = sorted(json.loads(b)["data"]["severity"] for _, b in receiver.received)
        assert severities == ["page", "page", "ticket"]
        # the dead endpoint failed (and waits for its retry), evaluation went on regardless
        wait_for(lambda: all(d["attempts"] >= 1 for d in plane.webhooks.deliveries(dead.id)))
        assert {d["state"] for d in plane.webhooks.deliveries(dead.id)} == {"pending"}
        resolved = serve(plane, clock, dep, 10)  # the 3 days still burn at 2.7: the ticket stays
        assert {(a.rule, a.state) for _, a in resolved} == {
            ("page-1h", "resolved"),
            ("page-6h", "resolved"),
        }
        wait_for(lambda: len(receiver.received) == 5, what="the resolutions")
    finally:
        receiver.close()


# prometheus rules --------------------------------------------------------------------------------
def promtool() -> str:
    found = (
        os.environ.get("MODELYARD_PROMTOOL")
        or shutil.which("promtool")
        or next((str(p) for p in [REPO / ".tools/bin/promtool"] if p.exists()), None)
    )
    if found is None:
        pytest.fail(
            "promtool not found: run 'make tools' (it fetches Debian's prometheus package with "
            "'apt-get download', no root needed, into .tools/), install the prometheus package, "
            "or set MODELYARD_PROMTOOL to a promtool binary"
        )
    return found


def promtool_run(*args: str) -> str:
    """``promtool ARGS``, asserted to succeed; its stdout."""
    done = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def promtool_test(rules: Path, tests: Sequence[Mapping[str, object]]) -> None:
    """promtool's unit tests ``tests`` over the rule file ``rules``, asserted to pass."""
    unit = rules.parent / "rules_test.yml"
    unit.write_text(
        yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1m", "tests": tests})
    )
    promtool_run("test", "rules", str(unit))


def series(metric: str, step: int, **labels: str) -> dict[str, str]:
    base = {"namespace": "team", "deployment": "iris", "revision": "iris-00001", **labels}
    text = ",".join(f'{k}="{v}"' for k, v in base.items())
    return {"series": f"{metric}{{{text}}}", "values": f"0+{step}x120"}


def expected(objective: Objective, *rules: str) -> dict[str, object]:
    severity = {"page-1h": "page", "page-6h": "page", "ticket-3d": "ticket"}
    return {
        "eval_time": "90m",
        "alertname": ALERT,
        "exp_alerts": [
            {
                "exp_labels": {
                    "namespace": "team",
                    "deployment": "iris",
                    "slo": objective.name,
                    "rule": rule,
                    "severity": severity[rule],
                },
                "exp_annotations": describe_alert("team", "iris", objective, rule),
            }
            for rule in rules
        ],
    }


def test_exported_rules_pass_promtool_and_fire_like_ours(
    plane: ControlPlane, tmp_path: Path
) -> None:
    deploy(plane)
    latency = Objective(name="latency-250ms", kind="latency", target=0.99, threshold_ms=250)
    plane.slos.set("team", "iris", [AVAILABILITY, latency])
    rules = tmp_path / "rules.yml"
    rules.write_text(plane.slos.prometheus_rules("team", "iris"))
    # 5 ratios + 3 alerts per objective
    assert "SUCCESS: 16 rules found" in promtool_run("check", "rules", str(rules))

    requests, durations = "modelyard_requests_total", "modelyard_request_duration_seconds"
    tests = [
        {  # 2 % errors: burn 20 pages twice and tickets
            "interval": "1m",
            "input_series": [
                series(requests, 980, code="200"),
                series(requests, 20, code="500"),
            ],
            "alert_rule_test": [expected(AVAILABILITY, "page-1h", "page-6h", "ticket-3d")],
        },
        {  # 0.3 % errors and 0.4 % 4xx (not the server's fault): burn 3 is only a ticket
            "interval": "1m",
            "input_series": [
                series(requests, 993, code="200"),
                series(requests, 4, code="404"),
                series(requests, 3, code="503"),
            ],
            "alert_rule_test": [expected(AVAILABILITY, "ticket-3d")],
        },
        {  # 5 % over 250 ms against 99 %: burn 5
            "interval": "1m",
            "input_series": [
                series(f"{durations}_bucket", 950, le="0.25"),
                series(f"{durations}_bucket", 1000, le="+Inf"),
                series(f"{durations}_count", 1000),
                series(requests, 1000, code="200"),
            ],
            "alert_rule_test": [expected(latency, "ticket-3d")],
        },
    ]
    promtool_test(rules, tests)


def test_no_objectives_give_an_empty_rule_file(plane: ControlPlane) -> None:
    deploy(plane)
    assert yaml.safe_load(plane.slos.prometheus_rules("team", "iris")) == {"groups": []}
