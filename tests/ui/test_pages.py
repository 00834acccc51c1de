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
from modelyard.realtime.predictions import Prediction
from modelyard.realtime.streams import NewEvent
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


def ingest(plane: ControlPlane, count: int, *, predicted: int, first: int = 0) -> None:
    """What the gateway's ingest writes (``count`` events of ``alpha/clicks``, 5 s ago), and what
    a worker of ``alpha/scorer`` writes for the last ``predicted`` of them: a prediction each,
    250 ms after its event's ingest."""
    stores = plane.realtime_stores
    now = time.time()
    made = [
        NewEvent(f"e{i}", f"u{i % 10}", "cart", now - 5, {"user_id": f"u{i % 10}"})
        for i in range(first, first + count)
    ]
    stores.events.append("alpha/clicks", made, now - 5)
    stored = stores.events.read("alpha/clicks", 0, 10_000)
    for event in stored[len(stored) - predicted :] if predicted else []:
        stores.predictions.put(
            Prediction(
                deployment="alpha/scorer",
                entity=event.entity,
                value=1.0,
                model=None,
                event_id=event.event_id,
                seq=event.seq,
                event_time=event.time,
                written_at=event.ingested_at + 0.25,
                expires_at=now + 3600,
            )
        )


def test_the_realtime_screen_shows_events_per_second_lag_and_trigger_to_prediction_latency(
    browser: httpx.Client, teams: Client, alpha_key: str, server: BackgroundServer
) -> None:
    teams.realtime.create_stream("alpha", "clicks")
    # a function that cannot load: no worker takes these events, so they stay pending (the lag)
    teams.realtime.create("alpha", "scorer", stream="clicks", function="tests.realtime.nowhere:f")
    ingest(server.plane, 30, predicted=10)
    sign_in(browser, alpha_key)
    page = browser.get("/ui/ns/alpha/realtime")
    assert page.status_code == 200, page.text
    assert 'data-live-value="realtime/stream/clicks:events_per_s">0.50<' in page.text  # 30 / 60 s
    assert 'data-live-value="realtime/stream/clicks:lag_events">30<' in page.text
    row = "realtime/deployment/scorer"
    assert f'data-live-value="{row}:lag_events">30<' in page.text
    assert f'data-live-value="{row}:predictions">10<' in page.text
    assert f'data-live-value="{row}:p50">250.0 ms<' in page.text
    assert f'data-live-value="{row}:p99">250.0 ms<' in page.text
