"""``modelyard up`` with ``orchestrator = "kubernetes"`` against the fake API server, whose kubelet
runs pods as local processes: a deployment becomes a pod that pulls its version in an init
container, serves a real inference through the gateway, is replaced by a new revision of two
pods, scales to zero and back for a request, and is gone when deleted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelyard.registry.records import VersionSpec
from modelyard.testing import Platform, wait_for
from tests.conftest import infer_body, iris_model
from tests.kube.fake_apiserver import FakeApiServer
from tests.kube.kubelet import ProcessKubelet

pytestmark = pytest.mark.slow
ROWS = [[5.1, 3.5, 1.4, 0.2]]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[FakeApiServer, ProcessKubelet]]:
    kubelet = ProcessKubelet(tmp_path / "node")
    server = FakeApiServer(namespaces=("ml-team",), kubelet=kubelet).start()
    yield server, kubelet
    kubelet.close()
    server.stop()


def on_kubernetes(apiserver: FakeApiServer, platforms: list[Platform], tmp_path: Path) -> Platform:
    """``modelyard up`` (not started yet) with its replicas on the fake cluster."""
    platform = Platform(tmp_path / "home", f"sqlite:///{tmp_path / 'modelyard.db'}")
    platform.env["MODELYARD_ORCHESTRATOR"] = "kubernetes"
    platform.env["MODELYARD_KUBERNETES"] = json.dumps(
        {
            "api_url": apiserver.url,
            "namespaces": {"team": "ml-team"},
            "control_plane_url": f"http://127.0.0.1:{platform.port}",
        }
    )
    platforms.append(platform)
    return platform


def test_a_pod_serves_through_the_gateway(
    cluster: tuple[FakeApiServer, ProcessKubelet], platforms: list[Platform], tmp_path: Path
) -> None:
    apiserver, kubelet = cluster
    platform = on_kubernetes(apiserver, platforms, tmp_path)
    with platform.start() as client:
        client.create_namespace("team")
        client.push("team/iris", iris_model(tmp_path / "v1"), VersionSpec(runtime="sklearn"))
        client.create_deployment("team", "iris", "iris@latest")
        wait_for(lambda: client.get_deployment("team", "iris").ready, 120, "the pod to serve")
        (pod,) = apiserver.list("pods", "ml-team")
        ip = kubelet.addresses[pod["metadata"]["name"]]
        (replica,) = client.get_deployment("team", "iris").revisions[0].replicas
        assert replica.url == f"http://{ip}:8080"
        auth = {"Authorization": f"Bearer {client.api_key}"}
        with httpx.Client(base_url=platform.gateway, headers=auth, timeout=30) as http:

            def infer() -> list[int]:
                answer = http.post("/team/iris/v2/models/iris/infer", json=infer_body(ROWS))
                assert answer.status_code == 200, answer.text
                return list(answer.json()["outputs"][0]["data"])

            assert infer() == [0]
            # a new revision (its own Deployment, two pods) takes the traffic
            client.update_deployment("team", "iris", autoscaling={"min_replicas": 2})

            def second_ready() -> int:
                revisions = client.get_deployment("team", "iris").revisions
                if len(revisions) < 2 or revisions[1].state != "ready":
                    return 0
                return sum(r.state == "ready" for r in revisions[1].replicas)

            wait_for(lambda: second_ready() == 2, 120, "revision 2 ready on two pods")
            second = apiserver.get("deployments", "ml-team", "iris-r2")
            assert second is not None and second["spec"]["replicas"] == 2
            assert infer() == [0]

            # to zero through the scale subresource, and back for a request the gateway holds
            scaling = {
                "scale_to_zero": True,
                "min_replicas": 0,
                "max_replicas": 1,
                "stable_window_s": 2,
                "scale_to_zero_grace_s": 1,
            }
            client.update_deployment("team", "iris", autoscaling=scaling)

            def at_zero() -> bool:
                third = apiserver.get("deployments", "ml-team", "iris-r3")
                running = apiserver.list("pods", "ml-team")
                return third is not None and third["spec"]["replicas"] == 0 and not running

            wait_for(at_zero, 120, "every revision at zero pods", 0.2)
            assert infer() == [0]
            third = apiserver.get("deployments", "ml-team", "iris-r3")
            assert third is not None and third["spec"]["replicas"] == 1
        client.delete_deployment("team", "iris")
        wait_for(
            lambda: all(
                apiserver.list(kind, "ml-team") == []
                for kind in ("deployments", "secrets", "configmaps", "pods")
            ),
            30,
            "every object gone",
        )


def test_a_model_that_does_not_load_fails_its_revision_with_the_pods_reason(
    cluster: tuple[FakeApiServer, ProcessKubelet], platforms: list[Platform], tmp_path: Path
) -> None:
    apiserver, _ = cluster
    platform = on_kubernetes(apiserver, platforms, tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.py").write_text("raise RuntimeError('the weights are missing')\n")
    with platform.start() as client:
        client.create_namespace("team")
        client.push("team/broken", broken, VersionSpec(runtime="python"))
        client.create_deployment("team", "broken", "broken@latest")

        def failed() -> str | None:
            revision = client.get_deployment("team", "broken").revisions[0]
            return revision.reason if revision.state == "failed" else None

        wait_for(lambda: failed() is not None, 120, "the revision to fail")
        reason = failed() or ""
        assert "CrashLoopBackOff" in reason and "the weights are missing" in reason
        wait_for(lambda: apiserver.list("pods", "ml-team") == [], 30, "its pods gone")


def test_a_realtime_deployment_runs_its_worker_in_a_pod(
    cluster: tuple[FakeApiServer, ProcessKubelet], platforms: list[Platform], tmp_path: Path
) -> None:
    """A realtime revision is a Deployment whose pod runs the worker (nothing to pull without a
    model, ready on its health endpoint); the gateway routes no requests to it, and its
    predictions are read through the gateway."""
    apiserver, _ = cluster
    platform = on_kubernetes(apiserver, platforms, tmp_path)
    with platform.start() as client:
        client.gateway_url = platform.gateway
        client.create_namespace("team")
        client.realtime.create_stream("team", "clicks")
        # the pod's image would hold the function's module; here it is this checkout's
        client.realtime.create(
            "team",
            "scorer",
            stream="clicks",
            function="tests.realtime.functions:score",
            env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )

        def running() -> bool:
            (revision,) = client.get_deployment("team", "scorer").revisions
            return revision.state == "ready" and len(revision.replicas) == 1

        wait_for(running, 120, "the worker's pod ready")
        deployment = apiserver.get("deployments", "ml-team", "scorer-r1")
        assert deployment is not None
        pod = deployment["spec"]["template"]["spec"]
        assert pod["initContainers"] == []
        assert pod["containers"][0]["command"][:3] == ["python", "-m", "modelyard.realtime.worker"]
        auth = {"Authorization": f"Bearer {client.api_key}"}
        with httpx.Client(base_url=platform.gateway, headers=auth, timeout=30) as http:
            event = {"event_id": "e1", "user_id": "u1", "type": "cart", "n": 1}

            def sent() -> bool:  # the gateway learns the stream with its next routing table
                return http.post("/team/streams/clicks/events", json=event).status_code == 200

            wait_for(sent, 30, "the stream at the gateway")
            wait_for(
                lambda: http.get("/team/predictions/scorer/u1").status_code == 200,
                60,
                "the worker's prediction",
            )
            assert http.get("/team/predictions/scorer/u1").json()["value"]["n"] == 1
            assert http.post("/team/scorer/v2/models/scorer/infer", json={}).status_code == 404
        client.realtime.delete("team", "scorer")
        wait_for(lambda: apiserver.list("pods", "ml-team") == [], 30, "the worker's pod gone")
