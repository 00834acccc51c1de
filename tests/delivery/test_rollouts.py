"""Rollouts through the API on a real control plane with real replicas: the judge acting on
measurements, manual promote / rollback / pause / resume, the audit history, and bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelyard.client import Client
from modelyard.controlplane import ControlPlane
from modelyard.errors import Conflict, InvalidInput
from modelyard.registry.records import VersionSpec
from modelyard.testing import free_port, wait_for
from tests.conftest import iris_model

SKLEARN = VersionSpec(runtime="sklearn")


@pytest.fixture
def rolling(admin: Client, plane: ControlPlane, tmp_path: Path) -> Client:
    """team/iris serving revision 1, canary strategy, and revision 2 under rollout."""
    admin.create_namespace("team")
    admin.push("team/iris", iris_model(tmp_path / "v1"), SKLEARN)
    admin.create_deployment(
        "team", "iris", "iris@latest", autoscaling={"min_replicas": 1, "max_replicas": 1}
    )
    admin.set_strategy(
        "team",
        "iris",
        strategy="canary",
        steps=[10, 50],
        min_step_seconds=0,
        max_step_seconds=2,
        analysis={"min_requests": 100},
    )
    admin.wait_deployment("team", "iris", timeout=60)
    admin.push("team/iris", iris_model(tmp_path / "v2", max_iter=20), SKLEARN)
    wait_for(lambda: state(admin) == "running", 60, "the rollout of revision 2", 0.05)
    return admin


def state(client: Client) -> str | None:
    found = client.rollouts("team", "iris")
    return found[0].state if found else None


def report(plane: ControlPlane, client: Client, served: dict[int, tuple[int, int, float]]) -> None:
    """What the gateway would report: per revision number (requests, errors, median ms)."""
    ids = {r.number: r.id for r in client.get_deployment("team", "iris").revisions}
    rng = np.random.default_rng(0)
    plane.telemetry.add(
        {
            "revisions": {
                ids[number]: {
                    "requests": requests,
                    "errors": errors,
                    "latencies_ms": list(rng.lognormal(np.log(median), 0.3, requests)),
                }
                for number, (requests, errors, median) in served.items()
            }
        }
    )


def percents(client: Client) -> dict[int, int]:
    return {r.number: r.percent for r in client.get_deployment("team", "iris").revisions}


def test_the_canary_starts_at_the_first_step_with_tags(rolling: Client) -> None:
    assert percents(rolling) == {1: 90, 2: 10}
    tags = {r.number: r.tags for r in rolling.get_deployment("team", "iris").revisions}
    assert tags == {1: ["stable"], 2: ["canary"]}


def test_errors_roll_back_with_the_evidence(rolling: Client, plane: ControlPlane) -> None:
    report(plane, rolling, {1: (900, 0, 5.0), 2: (100, 5, 5.0)})
    wait_for(lambda: state(rolling) == "rolled_back", 10, "the rollback", 0.05)
    rollout = rolling.rollouts("team", "iris")[0]
    assert "error rate 5.00% vs 0.00%" in (rollout.reason or "")
    assert percents(rolling) == {1: 100, 2: 0}
    assert rolling.get_deployment("team", "iris").revisions[1].state == "rejected"
    event = next(
        e for e in rolling.deployment_history("team", "iris") if e.type == "rollout.rolled_back"
    )
    assert event.data["analysis"]["evidence"]["error_rate"]["canary"] == pytest.approx(0.05)
    assert event.data["model_version"] == 2


def test_passing_steps_promote(rolling: Client, plane: ControlPlane) -> None:
    report(plane, rolling, {1: (900, 1, 5.0), 2: (100, 0, 5.0)})
    wait_for(lambda: percents(rolling) == {1: 50, 2: 50}, 10, "the second step", 0.05)
    report(plane, rolling, {1: (500, 0, 5.0), 2: (500, 0, 5.1)})
    wait_for(lambda: state(rolling) == "promoted", 10, "the promotion", 0.05)
    assert percents(rolling) == {1: 0, 2: 100}
    assert [a["result"] for a in rolling.rollouts("team", "iris")[0].analyses] == ["pass", "pass"]


def test_too_few_requests_pause_and_never_pass(rolling: Client, plane: ControlPlane) -> None:
    report(plane, rolling, {1: (900, 0, 5.0), 2: (40, 0, 5.0)})
    wait_for(lambda: state(rolling) == "paused", 10, "the pause", 0.05)
    rollout = rolling.rollouts("team", "iris")[0]
    assert "inconclusive" in (rollout.reason or "")
    assert "canary served 40 of the 100 requests needed" in (rollout.reason or "")
    assert percents(rolling) == {1: 90, 2: 10}, "a paused rollout holds its step"
    resumed = rolling.rollout_action("team", "iris", "resume")
    assert resumed.state == "running"
    with pytest.raises(Conflict, match="running already"):
        rolling.rollout_action("team", "iris", "resume")
    promoted = rolling.rollout_action("team", "iris", "promote")
    assert promoted.state == "promoted"
    assert percents(rolling) == {1: 0, 2: 100}


def test_one_rollout_at_a_time_and_it_owns_the_traffic(rolling: Client) -> None:
    with pytest.raises(Conflict, match="under way"):
        rolling.start_rollout("team", "iris", 1)
    with pytest.raises(Conflict, match="owns the traffic"):
        rolling.set_traffic("team", "iris", [{"revision": 1, "percent": 100}])
    assert rolling.rollout_action("team", "iris", "pause").state == "paused"
    rolled_back = rolling.rollout_action("team", "iris", "rollback")
    assert rolled_back.state == "rolled_back" and "by" in (rolled_back.reason or "")
    with pytest.raises(Conflict, match="no rollout"):
        rolling.rollout_action("team", "iris", "promote")
    # A rejected revision can be rolled out again by hand.
    again = rolling.start_rollout("team", "iris", 2)
    assert (again.stable, again.canary, again.state) == (1, 2, "running")


def test_history_says_who_did_what(rolling: Client, tmp_path: Path) -> None:
    rolling.rollout_action("team", "iris", "rollback")
    rolling.set_traffic("team", "iris", [{"revision": 1, "percent": 100}], sticky_header="X-User")
    events = rolling.deployment_history("team", "iris")
    kinds = [e.type for e in events]
    for kind in (
        "deployment.created",
        "deployment.strategy.changed",
        "revision.created",
        "revision.ready",
        "rollout.started",
        "rollout.rolled_back",
        "revision.rejected",
        "deployment.traffic.changed",
    ):
        assert kind in kinds, kinds
    by_hand = [e for e in events if e.type == "rollout.rolled_back"]
    assert by_hand[0].actor == rolling.whoami()["key_id"]
    assert next(e for e in events if e.type == "revision.created").created_at is not None


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        ({"strategy": "canary", "steps": [50, 10]}, "rising"),
        ({"strategy": "canary", "steps": [0, 100]}, "between 1 and 99"),
        ({"strategy": "canary", "min_step_seconds": 60, "max_step_seconds": 10}, "at least"),
        ({"strategy": "blue-green"}, "replace"),
        ({"strategy": "canary", "analysis": {"min_requests": 0}}, "min_requests"),
    ],
)
def test_bad_strategies_change_nothing(
    admin: Client, tmp_path: Path, strategy: dict[str, Any], message: str
) -> None:
    admin.create_namespace("team")
    admin.push("team/iris", iris_model(tmp_path / "v1"), SKLEARN)
    admin.create_deployment("team", "iris", "iris@latest")
    with pytest.raises(InvalidInput, match=message):
        admin.set_strategy("team", "iris", **strategy)
    assert admin.get_deployment("team", "iris").rollout.strategy == "replace"


def test_bad_traffic_changes_nothing(admin: Client, tmp_path: Path) -> None:
    admin.create_namespace("team")
    admin.push("team/iris", iris_model(tmp_path / "v1"), SKLEARN)
    admin.create_deployment("team", "iris", "iris@latest")
    one = [{"percent": 100}]
    with pytest.raises(InvalidInput, match="HTTP header name"):
        admin.set_traffic("team", "iris", one, sticky_header="x user")
    with pytest.raises(InvalidInput, match="other than"):
        admin.set_traffic("team", "iris", one, sticky_header="Authorization")
    with pytest.raises(InvalidInput, match="revision 4 of team/iris does not exist"):
        admin.set_traffic("team", "iris", one, shadow={"revision": 4, "percent": 10})
    with pytest.raises(InvalidInput):
        admin.set_traffic("team", "iris", one, shadow={"revision": 1, "percent": 0})
    with pytest.raises(InvalidInput, match="add up to 110"):
        admin.set_traffic("team", "iris", [{"percent": 60}, {"revision": 1, "percent": 50}])
    info = admin.get_deployment("team", "iris")
    assert (info.sticky_header, info.shadow, [t.percent for t in info.traffic]) == (
        None,
        None,
        [100],
    )


def test_a_dead_webhook_is_retried_and_never_blocks_a_rollback(
    rolling: Client, plane: ControlPlane
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    hook, _ = rolling.create_webhook("team", dead, ["rollout.*"])
    report(plane, rolling, {1: (900, 0, 5.0), 2: (100, 50, 5.0)})
    wait_for(lambda: state(rolling) == "rolled_back", 10, "the rollback", 0.05)

    def attempts() -> list[int]:
        return [d["attempts"] for d in plane.webhooks.deliveries(hook.id)]

    # rollout.rolled_back (at least: the consumer may also have seen rollout.started), tried
    # and waiting for its next attempt while the rollout already finished.
    wait_for(lambda: bool(attempts()) and min(attempts()) >= 1, 10, "delivery attempts", 0.05)
    assert all(d["state"] != "delivered" for d in plane.webhooks.deliveries(hook.id))
