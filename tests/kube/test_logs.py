"""Replica logs from pods: the Kubernetes orchestrator reads and follows pod logs (stamped,
merged, tailed) through the real API calls against the fake API server."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelyard.errors import NotFound
from modelyard.kube.api import KubeApi
from modelyard.kube.config import Cluster, KubernetesSettings
from modelyard.kube.orchestrator import KubeOrchestrator
from modelyard.registry.records import VersionSpec
from modelyard.serving.logs import LogLine
from modelyard.testing import Platform, wait_for
from tests.conftest import iris_model
from tests.kube.fake_apiserver import FakeApiServer
from tests.kube.fake_controllers import ready_status
from tests.kube.kubelet import ProcessKubelet
from tests.kube.test_end_to_end import cluster, on_kubernetes
from tests.kube.test_orchestrator import ready, revision

__all__ = ["cluster"]  # a fixture this module uses: pods as processes


class WritingKubelet:
    """Pods ready at once whose container output the test writes (what their server would)."""

    def __init__(self) -> None:
        self.output: dict[str, str] = {}
        self._lock = threading.Lock()

    def run_pod(self, server: FakeApiServer, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with self._lock:
            self.output[meta["name"]] = ""
            ip = f"10.0.0.{len(self.output)}"
        server.set_pod_status(meta["namespace"], meta["name"], ready_status(ip))

    def stop_pod(self, namespace: str, name: str) -> None:
        with self._lock:
            self.output.pop(name, None)

    def pod_log(self, namespace: str, name: str) -> str | None:
        with self._lock:
            return self.output.get(name)

    def write(self, pod: str, text: str) -> None:
        with self._lock:
            self.output[pod] += text


@pytest.fixture
def written() -> Iterator[tuple[FakeApiServer, WritingKubelet, KubeOrchestrator]]:
    kubelet = WritingKubelet()
    server = FakeApiServer(namespaces=("ml-team",), kubelet=kubelet).start()
    settings = KubernetesSettings(namespaces={"team": "ml-team"}, image="img:1")
    orch = KubeOrchestrator(settings, KubeApi(Cluster(server.url), "modelyard"))
    orch.start()
    yield server, kubelet, orch
    orch.stop()
    server.stop()


def texts(lines: list[LogLine]) -> list[str]:
    return [f"{line.replica}:{line.text}" for line in lines]


def test_pod_logs_merged_tailed_filtered_and_followed(
    written: tuple[FakeApiServer, WritingKubelet, KubeOrchestrator],
) -> None:
    server, kubelet, orch = written
    rev = revision()
    orch.scale(rev, 2)
    wait_for(lambda: ready(orch, rev, 2), 10, "two ready pods")
    a, b = sorted(r.id for r in orch.replicas(rev.id))

    def now(**options: Any) -> list[LogLine]:
        return next(iter(orch.logs([rev.id], **options)))

    # the fake stamps a line when its log is first read after it was written
    for pod, text in [(a, "first a\n"), (b, "then b\n"), (a, "Traceback:\n  File x\n")]:
        kubelet.write(pod, text)
        now()
    lines = now()
    assert texts(lines) == [f"{a}:first a", f"{b}:then b", f"{a}:Traceback:", f"{a}:  File x"]
    assert all(x.time <= y.time for x, y in itertools.pairwise(lines))
    assert texts(now(tail=2)) == [f"{a}:Traceback:", f"{a}:  File x"]
    assert texts(now(since=lines[1].time)) == texts(lines[1:])
    assert texts(now(replica=b)) == [f"{b}:then b"]
    with pytest.raises(NotFound, match="nobody"):
        now(replica="nobody")
    assert any("timestamps=true" in path and "/log?" in path for _, path in server.requests)

    following = orch.logs([rev.id], tail=0, follow=True)
    assert next(following) == []
    seen: list[str] = []

    def saw(line: str) -> bool:
        seen.extend(texts(next(following)))
        return line in seen

    kubelet.write(b, "live b\n")
    wait_for(lambda: saw(f"{b}:live b"), 10, "the new line of a followed pod")
    orch.scale(rev, 3)
    wait_for(lambda: ready(orch, rev, 3), 10, "a third pod")
    (c,) = {r.id for r in orch.replicas(rev.id)} - {a, b}
    kubelet.write(c, "newcomer\n")
    wait_for(lambda: saw(f"{c}:newcomer"), 10, "the line of a pod that started meanwhile")
    assert f"{a}:first a" not in seen  # only what was written after the follower started
    following.close()  # type: ignore[attr-defined]
    assert sum("follow=true" in path for _, path in server.requests) >= 3


@pytest.mark.slow
def test_deployment_logs_through_the_api_come_from_the_pods(
    cluster: tuple[FakeApiServer, ProcessKubelet],
    platforms: list[Platform],
    tmp_path: Path,
) -> None:
    apiserver, _ = cluster
    platform = on_kubernetes(apiserver, platforms, tmp_path)
    with platform.start() as client:
        client.create_namespace("team")
        client.push("team/iris", iris_model(tmp_path / "v1"), VersionSpec(runtime="sklearn"))
        client.create_deployment("team", "iris", "iris@latest")
        wait_for(lambda: client.get_deployment("team", "iris").ready, 120, "the pod to serve")
        (pod,) = apiserver.list("pods", "ml-team")
        name = pod["metadata"]["name"]

        def loaded() -> list[LogLine]:
            lines = list(client.deployment_logs("team", "iris"))
            return [line for line in lines if "loaded from" in line.text]

        wait_for(loaded, 30, "the server's first line in the pod's log", 0.1)
        (line,) = loaded()
        assert line.replica == name
        assert list(client.deployment_logs("team", "iris", tail=1, replica=name))
        with pytest.raises(NotFound, match="nobody"):
            list(client.deployment_logs("team", "iris", replica="nobody"))
    assert any("/log?" in path and "timestamps=true" in path for _, path in apiserver.requests)
