"""Every screen renders what the platform measured and recorded, escaped, for a signed-in key."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import httpx

from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.controlplane import ControlPlane
from modelyard.registry.records import VersionSpec
from modelyard.telemetry.records import TrafficMinute
from tests.conftest import iris_model
from tests.ui.conftest import sign_in


def traffic(plane: ControlPlane, revision_id: str, deployment_id: str, requests: int) -> None:
    """What the gateway reports about once a second (`modelyard.telemetry.window.Window`)."""
    plane.telemetry.add(
        {
            "at": time.time(),
            "revisions": {
                revision_id: {"requests": requests, "errors": 1, "latencies_ms": [3.0, 9.0]}
            },
            "deployments": {
                deployment_id: {"requests": requests, "errors": 1, "buckets": [0, requests - 1]}
            },
        }
    )


def deployed(teams: Client, tmp_path: Path) -> Any:
    teams.push("alpha/iris", iris_model(tmp_path / "v1"), VersionSpec(runtime="sklearn"))
    info = teams.create_deployment(
        "alpha", "iris", "iris@latest", autoscaling={"min_replicas": 0, "max_replicas": 1}
    )
    objective = {"name": "availability", "kind": "availability", "target": 0.99}
    teams.set_slos("alpha", "iris", [objective])
    return info


def test_the_deployment_page_shows_rates_charts_slos_and_revisions(
    browser: httpx.Client,
    teams: Client,
    alpha_key: str,
    tmp_path: Path,
    server: BackgroundServer,
) -> None:
    plane = server.plane
    deployed(teams, tmp_path)
    info = plane.serving.describe(plane.deployments.get("alpha", "iris"))
    revision = info.revisions[-1]
    with plane.db.read() as session:
        deployment_id = plane.deployments.row(session, "alpha", "iris").id
    traffic(plane, revision.id, deployment_id, 50)
    now = plane.events.clock()
    plane.telemetry.record(
        TrafficMinute(deployment_id, now - dt.timedelta(minutes=m), 60, 2, [10, 50])
        for m in range(1, 30)
    )
    sign_in(browser, alpha_key)

    page = browser.get("/ui/ns/alpha/deployments/iris?range=1h")
    assert page.status_code == 200, page.text
    assert f'data-live-value="{revision.id}:qps">5.00<' in page.text  # 50 requests in 10 s
    assert "<polyline" in page.text and "Latency percentiles" in page.text
    assert 'id="per-revision"' in page.text and "p99 latency, per revision" in page.text
    assert "availability" in page.text and "revision.created" in page.text
    assert browser.get("/ui/ns/alpha/deployments/iris?range=30d").status_code == 200
    assert browser.get("/ui/ns/alpha/deployments/iris?range=bogus").status_code == 200

    overview = browser.get("/ui/ns/alpha")
    assert "/ui/ns/alpha/deployments/iris" in overview.text and ">5.00<" in overview.text
    assert "/ui/ns/alpha/models/iris" in overview.text

    model = browser.get("/ui/ns/alpha/models/iris")
    assert model.status_code == 200 and "v1" in model.text
    spec = VersionSpec(runtime="sklearn", lineage={"run": "run-of-<b>", "step": "train"})
    teams.push("alpha/iris", iris_model(tmp_path / "v2", max_iter=20), spec)
    model = browser.get("/ui/ns/alpha/models/iris")
    assert "/ui/ns/alpha/runs/run-of-%3Cb%3E" in model.text and "step train" in model.text
    assert "run-of-<b>" not in model.text
    assert browser.get("/ui/ns/alpha/events?type=deployment.*").status_code == 200
    assert browser.get("/ui/ns/alpha/realtime").status_code == 200

    missing = browser.get("/ui/ns/alpha/deployments/gone")
    assert missing.status_code == 404 and "gone" in missing.text
    assert browser.get("/ui/ns/alpha/runs/nothing").status_code == 404
