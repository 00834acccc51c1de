"""The gateway as users meet it: a real ``modelyard up`` (control plane, gateway, replicas) and a
real HTTP client."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest

from modelyard.registry.records import VersionSpec
from modelyard.serving.records import DeploymentInfo, ReplicaInfo
from modelyard.serving.replica_headers import TOKEN_HEADER
from modelyard.testing import wait_for
from modelyard.types import Role
from tests.conftest import Serving, infer_body, iris_model

pytestmark = pytest.mark.slow
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
SKLEARN = VersionSpec(runtime="sklearn")


def deploy(serving: Serving, tmp_path: Path, name: str = "iris", **spec: object) -> DeploymentInfo:
    serving.client.push("team/iris", iris_model(tmp_path / "v1"), VersionSpec(runtime="sklearn"))
    serving.client.create_deployment("team", name, "iris@latest", **spec)
    return serving.client.wait_deployment("team", name, timeout=60)


def expected(tmp_path: Path) -> list[int]:
    model = joblib.load(tmp_path / "v1" / "model.joblib")
    return [int(x) for x in model.predict(np.array(ROWS))]


def test_infers_over_oip_v2_and_v1_on_prefixed_and_bare_paths(
    serving: Serving, tmp_path: Path
) -> None:
    deploy(serving, tmp_path, max_body_mb=0.01)
    answer = serving.infer("iris", ROWS)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-modelyard-revision"] == "iris-00001"
    body = answer.json()
    assert body["model_name"] == "iris" and body["model_version"] == "1"
    assert body["outputs"][0]["data"] == expected(tmp_path)

    bare = serving.http.post(
        "/v2/models/iris/infer", json=infer_body(ROWS), headers={"X-Modelyard-Namespace": "team"}
    )
    assert bare.json()["outputs"][0]["data"] == expected(tmp_path)
    v1 = serving.http.post("/team/iris/v1/models/iris:predict", json={"instances": ROWS})
    assert v1.json() == {"predictions": expected(tmp_path)}
    metadata = serving.http.get("/team/iris/v2/models/iris").json()
    assert metadata["inputs"][0]["shape"] == [-1, 4]

    no_namespace = serving.http.post("/v2/models/iris/infer", json=infer_body(ROWS))
    assert no_namespace.status_code == 400 and "X-Modelyard-Namespace" in no_namespace.text
    assert serving.infer("nope", ROWS).status_code == 404
    malformed = serving.http.post("/team/iris/v2/models/iris/infer", content=b"{not json")
    assert malformed.status_code == 400 and "error" in malformed.json()
    wrong_shape = serving.http.post(
        "/team/iris/v2/models/iris/infer",
        json={
            "inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]
        },
    )
    assert wrong_shape.status_code == 400
    too_big = serving.infer("iris", [[1.0, 2.0, 3.0, 4.0]] * 1000)
    assert too_big.status_code == 413 and "max_body_mb" in too_big.json()["error"]

    metrics = httpx.get(f"{serving.gateway}/metrics").text
    assert (
        'modelyard_requests_total{namespace="team",deployment="iris",revision="iris-00001",'
        'code="200"} 4' in metrics
    )
    assert 'code="400"} 2' in metrics
    assert "modelyard_request_duration_seconds_bucket" in metrics

    serving.client.delete_deployment("team", "iris")
    wait_for(lambda: serving.infer("iris", ROWS).status_code == 404, 10, "the route gone", 0.05)
    home = serving.platform.home
    wait_for(lambda: not list(home.glob("replicas/*.json")), 30, "the replicas stopped", 0.1)


def test_keys_need_a_role_in_the_namespace(serving: Serving, tmp_path: Path) -> None:
    deploy(serving, tmp_path)
    serving.client.create_namespace("other")
    _, outsider = serving.client.create_key("outsider", {"other": Role.INVOKER})
    invoker_info, invoker = serving.client.create_key("caller", {"team": Role.INVOKER})
    _, viewer = serving.client.create_key("viewer", {"team": Role.VIEWER})

    def call(token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(
            f"{serving.gateway}/team/iris/v2/models/iris/infer",
            json=infer_body(ROWS),
            headers=headers,
        )

    # keys reach the gateway with its next routing table
    wait_for(lambda: call(invoker).status_code == 200, 10, "the new key to be accepted")
    assert call(viewer).status_code == 200
    assert call(None).status_code == 401
    assert call("my_nothere_secret").status_code == 401
    denied = call(outsider)
    assert denied.status_code == 403 and "no invoker role" in denied.json()["error"]
    # same answer for a namespace that does not exist: nothing is revealed
    missing = httpx.post(
        f"{serving.gateway}/ghost/iris/v2/models/iris/infer",
        json=infer_body(ROWS),
        headers={"Authorization": f"Bearer {outsider}"},
    )
    assert missing.status_code == 403
    serving.client.revoke_key(invoker_info.id)
    wait_for(lambda: call(invoker).status_code == 401, 10, "the revoked key to be refused")


def test_a_replica_killed_under_load_fails_no_request(serving: Serving, tmp_path: Path) -> None:
    info = deploy(
        serving, tmp_path, autoscaling={"min_replicas": 2, "max_replicas": 2, "initial_replicas": 2}
    )
    wait_for(lambda: len(_ready(serving)) == 2, 30, "two ready replicas")
    assert info.revisions[0].replicas
    with serving.load("iris", ROWS, workers=4) as load:
        wait_for(lambda: load.answered > 200, 30, "load to run")
        victim = _ready(serving)[0]
        os.kill(victim.pid or 0, signal.SIGKILL)
        before = load.answered
        wait_for(lambda: load.answered > before + 500, 30, "requests after the kill")
        wait_for(
            lambda: len(_ready(serving)) == 2 and victim.id not in {r.id for r in _ready(serving)},
            30,
            "a replacement replica",
            0.1,
        )
    assert load.failures == []


def test_keeps_serving_while_the_control_plane_is_down(serving: Serving, tmp_path: Path) -> None:
    deploy(serving, tmp_path)
    replicas = {r.pid for r in _ready(serving)}
    serving.platform.kill()
    for _ in range(20):
        answer = serving.infer("iris", ROWS)
        assert answer.status_code == 200, answer.text
    # a new control plane adopts the gateway and the replicas that kept running
    serving.restart()
    wait_for(lambda: {r.pid for r in _ready(serving)} == replicas, 30, "the replicas adopted")
    assert serving.infer("iris", ROWS).status_code == 200
    # it routes to them with the token they were started with, and they still answer no one else
    (replica,) = _ready(serving)
    assert (
        httpx.post(f"{replica.url}/v2/models/iris/infer", json=infer_body(ROWS)).status_code == 401
    )


def test_replicas_answer_only_the_gateway(serving: Serving, tmp_path: Path) -> None:
    deploy(serving, tmp_path)
    (replica,) = _ready(serving)
    url = f"{replica.url}/v2/models/iris/infer"
    with sqlite3.connect(tmp_path / "serving.db") as db:
        (token,) = db.execute("SELECT replica_token FROM revisions").fetchone()
    header = TOKEN_HEADER.decode()
    for headers in ({}, {header: token[::-1]}, {"authorization": f"Bearer {serving.token}"}):
        refused = httpx.post(url, json=infer_body(ROWS), headers=headers)
        assert refused.status_code == 401
        assert set(refused.json()) == {"error"}
        assert "through the gateway" in refused.json()["error"]
    for probe in ("/v2/health/live", "/v2/health/ready"):  # the supervisor's, with no token
        assert httpx.get(replica.url + probe).status_code == 200
    answer = serving.infer("iris", ROWS)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == expected(tmp_path)
    assert httpx.post(url, json=infer_body(ROWS), headers={header: token}).status_code == 200
    # The token is in no answer of the API, no command line or environment, no log.
    api = f"http://127.0.0.1:{serving.platform.port}/api/v1/namespaces/team/deployments/iris"
    shown = httpx.get(api, headers={"Authorization": f"Bearer {serving.token}"})
    assert shown.status_code == 200 and token not in shown.text
    for name in ("cmdline", "environ"):
        assert token.encode() not in Path(f"/proc/{replica.pid}/{name}").read_bytes()
    for log in serving.platform.home.rglob("*.log"):
        assert token not in log.read_text(errors="replace"), log
    # The gateway keeps its last table (tokens included) where only this user can read it.
    saved = serving.platform.home / "gateway"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o700


def _ready(serving: Serving) -> list[ReplicaInfo]:
    info = serving.client.get_deployment("team", "iris")
    return [p for r in info.revisions for p in r.replicas if p.state == "ready"]


def test_traffic_splits_by_percent_and_a_tag_pins_a_revision(
    serving: Serving, tmp_path: Path
) -> None:
    deploy(serving, tmp_path)
    serving.client.push("team/iris", iris_model(tmp_path / "v2", max_iter=3), SKLEARN)
    serving.client.wait_deployment("team", "iris", version=2, timeout=60)
    serving.client.set_traffic(
        "team", "iris", [{"revision": 1, "percent": 50, "tag": "old"}, {"percent": 50}]
    )
    # the gateway learns the tag with its next routing table; revision 1 was retired (no
    # replicas), so the first request for it waits while one starts
    wait_for(
        lambda: serving.infer("iris", ROWS, headers={"X-Modelyard-Tag": "old"}).status_code == 200,
        60,
        "the tag to route",
        0.05,
    )
    pinned = [serving.infer("iris", ROWS, headers={"X-Modelyard-Tag": "old"}) for _ in range(10)]
    assert {p.json()["model_version"] for p in pinned} == {"1"}
    assert {p.headers["x-modelyard-revision"] for p in pinned} == {"iris-00001"}
    versions = [serving.infer("iris", ROWS).json()["model_version"] for _ in range(200)]
    assert 60 < versions.count("1") < 140  # 50/50 by percent: 100 +- 40 is ~6 sigma
    unknown = serving.infer("iris", ROWS, headers={"X-Modelyard-Tag": "nope"})
    assert unknown.status_code == 404 and "no revision tagged 'nope'" in unknown.text


MODEL_PY = """
import time

import numpy as np


def predict(inputs):
    x = next(iter(inputs.values()))
    if (x == 13).any():
        raise ValueError("13 is unlucky")
    if (x == 7).any():
        time.sleep(2)
    return {"y": np.asarray(x) * 2}
"""


def test_model_errors_and_slow_answers(serving: Serving, tmp_path: Path) -> None:
    folder = tmp_path / "py"
    folder.mkdir()
    (folder / "model.py").write_text(MODEL_PY)
    serving.client.push("team/doubler", folder, VersionSpec(runtime="python"))
    serving.client.create_deployment("team", "doubler", "doubler@latest", timeout_s=0.5)
    serving.client.wait_deployment("team", "doubler", timeout=60)

    def call(value: float) -> httpx.Response:
        body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [value]}]}
        return serving.http.post("/team/doubler/v2/models/doubler/infer", json=body)

    assert call(2).json()["outputs"][0]["data"] == [4.0]
    failed = call(13)
    assert failed.status_code == 500
    error_id = failed.json()["error"].split("error id ")[1].split(")")[0]
    logs = "".join(p.read_text() for p in serving.platform.home.glob("replicas/*.log"))
    assert error_id in logs and "13 is unlucky" in logs
    assert call(3).status_code == 200  # the replica keeps serving
    slow = call(7)
    assert slow.status_code == 504 and "timeout_s" in slow.json()["error"]
