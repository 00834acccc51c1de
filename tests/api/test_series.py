"""A deployment's series over the API: the stored minutes of the whole deployment, or one
revision's reports of the last hour, per step; what a key may not read, or asks badly, is refused
with a message that says what to do."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.errors import Forbidden, InvalidInput, NotFound
from modelyard.telemetry.records import BUCKETS, TrafficMinute
from tests.ui.test_pages import deployed, traffic

PATH = "/namespaces/alpha/deployments/iris/series"


def test_series_of_the_deployment_and_of_one_revision(
    admin: Client, server: BackgroundServer, tmp_path: Path
) -> None:
    admin.create_namespace("alpha")
    deployed(admin, tmp_path)
    plane = server.plane
    with plane.db.read() as session:
        deployment_id = plane.deployments.row(session, "alpha", "iris").id
    (revision,) = admin.get_deployment("alpha", "iris").revisions
    now = plane.events.clock()
    fast = [0] * (len(BUCKETS) + 1)
    fast[BUCKETS.index(0.01)] = 58  # 58 answers of at most 10 ms
    plane.telemetry.record(
        TrafficMinute(deployment_id, now - dt.timedelta(minutes=m), 60, 2, fast) for m in (2, 3, 4)
    )
    whole = admin.request("GET", PATH, params={"minutes": 10, "step_s": 120})
    assert whole["deployment"] == "alpha/iris" and whole["revision"] is None
    assert sum(p["requests"] for p in whole["points"]) == 180
    assert sum(p["errors"] for p in whole["points"]) == 6
    assert {p["p99_ms"] for p in whole["points"]} == {10.0}

    traffic(plane, revision.id, deployment_id, 40)  # a gateway report, a moment ago
    one = admin.request("GET", PATH, params={"revision": revision.number, "minutes": 5})
    assert one["revision"] == revision.number and one["step_s"] == 60
    assert [(p["requests"], p["errors"], p["p99_ms"]) for p in one["points"]] == [(40, 1, 9.0)]

    with pytest.raises(InvalidInput, match="minutes <= 60"):
        admin.request("GET", PATH, params={"revision": revision.number, "minutes": 61})
    with pytest.raises(NotFound, match="no revision 7"):
        admin.request("GET", PATH, params={"revision": 7})
    with pytest.raises(NotFound, match="alpha/gone"):
        admin.request("GET", "/namespaces/alpha/deployments/gone/series")
    admin.create_namespace("beta")
    _, token = admin.create_key("beta-viewer", {"beta": "viewer"})
    with Client(server.url, token, cache_dir=tmp_path / "beta") as beta, pytest.raises(Forbidden):
        beta.request("GET", PATH)
