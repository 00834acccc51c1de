"""``/api/v1/health``: the existing fields, and the health of every controller loop."""

from __future__ import annotations

from typing import Any

import httpx

from modelyard.api.server import BackgroundServer
from modelyard.controlplane import ControlPlane
from modelyard.testing import wait_for

LOOPS = {
    "webhooks.delivery",
    "consumer:webhooks.fanout",
    "pipelines.executor",
    "schedules",
    "consumer:schedules.triggers",
    "slos",
    "serving",
    "replicas",
    "consumer:delivery.push",
    "rollouts",
    "gc",
}


def _health(server: BackgroundServer) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/v1/health")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_health_keeps_its_fields_and_lists_every_loop(server: BackgroundServer) -> None:
    body = _health(server)
    assert body["status"] == "ok"
    assert body["version"]
    assert {loop["name"] for loop in body["loops"]} >= LOOPS
    for loop in body["loops"]:
        assert set(loop) == {"name", "alive", "last_tick", "last_error", "last_error_at", "errors"}

    def every_loop_ran() -> bool:
        loops = _health(server)["loops"]
        return all(loop["alive"] and loop["last_tick"] for loop in loops)

    wait_for(every_loop_ran, what="every loop alive with a first round done")
    assert all(loop["last_error"] is None for loop in _health(server)["loops"])


def test_controllers_start_in_order_and_all_stop(plane: ControlPlane) -> None:
    plane.start_controllers()
    try:
        assert all(loop.health().alive for loop in plane.loops())
    finally:
        plane.stop_controllers()
    assert not any(loop.alive for loop in plane.loops())


def test_a_lone_control_plane_leads(server: BackgroundServer) -> None:
    body = _health(server)
    assert body["role"] == "leader"
    lease = body["lease"]
    assert lease["state"] == "leader" and lease["term"] >= 1
    assert lease["holder_url"] == server.url and lease["expires_in_seconds"] > 0
    assert httpx.get(f"{server.url}/api/v1/health/leader").json()["role"] == "leader"
