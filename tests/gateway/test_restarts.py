"""Restarts of the control plane, of the gateway and of both, cleanly and with kill -9: the
gateway serves the control plane's current table within a second of the replicas being ready,
routes deployments created after the restart and refuses keys revoked after it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from modelyard.registry.records import VersionSpec
from modelyard.testing import wait_for
from modelyard.types import Role
from tests.conftest import Serving, infer_body, iris_model

pytestmark = pytest.mark.slow
ROWS = [[5.1, 3.5, 1.4, 0.2]]


def _control_plane_clean(serving: Serving) -> None:
    serving.platform.interrupt()
    serving.restart()


def _control_plane_kill(serving: Serving) -> None:
    serving.platform.kill()
    serving.restart()


def _gateway(sig: signal.Signals) -> Callable[[Serving], None]:
    def restart(serving: Serving) -> None:
        old = serving.platform.gateway_pid()
        os.kill(old, sig)
        # `modelyard up` starts a gateway that exited again, on the same port
        wait_for(lambda: _gateway_restarted(serving, old), 30, "a new gateway", 0.05)

    return restart


def _both_kill(serving: Serving) -> None:
    gateway = serving.platform.gateway_pid()
    serving.platform.kill()
    os.kill(gateway, signal.SIGKILL)
    serving.restart()


def _gateway_restarted(serving: Serving, old: int) -> bool:
    try:
        pid = serving.platform.gateway_pid()
        return pid != old and httpx.get(f"{serving.gateway}/healthz").is_success
    except (OSError, ValueError, httpx.TransportError):
        return False


RESTARTS = {
    "control-plane-clean": _control_plane_clean,
    "control-plane-kill9": _control_plane_kill,
    "gateway-clean": _gateway(signal.SIGTERM),
    "gateway-kill9": _gateway(signal.SIGKILL),
    "both-kill9": _both_kill,
}


@pytest.mark.parametrize("restart", list(RESTARTS))
def test_serves_the_current_table_after_a_restart(
    serving: Serving, tmp_path: Path, restart: str
) -> None:
    client = serving.client
    client.push("team/iris", iris_model(tmp_path / "v1"), VersionSpec(runtime="sklearn"))
    client.create_deployment("team", "iris", "iris@latest")
    client.wait_deployment("team", "iris", timeout=60)
    for timeout in (20, 25):  # a few updates: the table's version counter moves on
        client.update_deployment("team", "iris", timeout_s=timeout)
        client.wait_deployment("team", "iris", timeout=60)
    revoked_info, revoked = client.create_key("leaving", {"team": Role.INVOKER})
    assert _call(serving, "iris", revoked).status_code == 200 or _eventually_ok(serving, revoked)

    RESTARTS[restart](serving)
    client = serving.client

    # within a second of the replicas being ready, requests through the gateway succeed
    wait_for(lambda: _ready_replicas(serving, "iris") > 0, 60, "a ready replica", 0.02)
    ready_at = time.monotonic()
    answer = _call(serving, "iris", serving.token, timeout=10)
    assert answer.status_code == 200, answer.text
    assert time.monotonic() - ready_at < 1.0, "the gateway served late after the restart"

    # a deployment created after the restart is routed
    client.create_deployment("team", "iris2", "iris@latest")
    client.wait_deployment("team", "iris2", timeout=60)
    fresh = _call(serving, "iris2", serving.token, timeout=10)
    assert fresh.status_code == 200, fresh.text

    # a key revoked after the restart is refused
    client.revoke_key(revoked_info.id)
    wait_for(lambda: _call(serving, "iris", revoked).status_code == 401, 5, "the key refused")


def _eventually_ok(serving: Serving, token: str) -> bool:
    wait_for(lambda: _call(serving, "iris", token).status_code == 200, 10, "the new key accepted")
    return True


def _call(serving: Serving, deployment: str, token: str, timeout: float = 5) -> httpx.Response:
    return httpx.post(
        f"{serving.gateway}/team/{deployment}/v2/models/{deployment}/infer",
        json=infer_body(ROWS),
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
    )


def _ready_replicas(serving: Serving, deployment: str) -> int:
    try:
        info = serving.client.get_deployment("team", deployment)
    except Exception:
        return 0
    return sum(p.state == "ready" for r in info.revisions for p in r.replicas)


def test_requests_served_while_the_control_plane_is_down_count_in_the_slos(
    serving: Serving, tmp_path: Path
) -> None:
    client = serving.client
    client.push("team/iris", iris_model(tmp_path / "v1"), VersionSpec(runtime="sklearn"))
    client.create_deployment("team", "iris", "iris@latest")
    client.wait_deployment("team", "iris", timeout=60)
    client.set_slos("team", "iris", [{"name": "up", "kind": "availability", "target": 0.99}])
    serving.platform.kill()
    for _ in range(25):
        assert _call(serving, "iris", serving.token).status_code == 200
    serving.restart()

    def counted() -> bool:
        status = serving.client.slo_status("team", "iris")
        return status.objectives[0].requests >= 25

    wait_for(counted, 30, "the outage's requests in the SLO", 0.2)
