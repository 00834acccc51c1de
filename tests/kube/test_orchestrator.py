"""The Kubernetes orchestrator against the fake API server: real HTTP, real watches."""

from __future__ import annotations

import re

from modelyard.kube import render
from modelyard.kube.api import CONFIGMAPS, KubeApi
from modelyard.kube.config import Cluster, KubernetesSettings
from modelyard.kube.orchestrator import KubeOrchestrator
from modelyard.serving.deployments import Revision
from modelyard.serving.records import DeploymentSpec
from modelyard.testing import wait_for
from tests.deploy.test_helm_chart import ORCHESTRATOR_RULES
from tests.kube.fake_apiserver import FakeApiServer, ready_status

SELECTOR = f"{render.DEPLOYMENT_LABEL}=iris"


def spec_replicas(apiserver: FakeApiServer, name: str) -> int:
    """The replicas the Deployment ``name`` asks for (it must exist)."""
    found = apiserver.get("deployments", "ml-team", name)
    assert found is not None, f"no Deployment {name}"
    return int(found["spec"]["replicas"])


def revision(number: int = 1, namespace: str = "team") -> Revision:
    return Revision(
        id=f"{number:032x}",
        number=number,
        name=f"iris-{number:05d}",
        namespace=namespace,
        deployment="iris",
        deployment_id="d1",
        model=f"{namespace}/iris@{number}",
        spec=DeploymentSpec(model=f"iris@{number}"),
        state="deploying",
        token="t" * 64,
    )


def pod_lists(apiserver: FakeApiServer) -> list[str]:
    return [p for m, p in apiserver.requests if m == "GET" and "/pods?" in p and "watch" not in p]


def ready(orch: KubeOrchestrator, rev: Revision, count: int) -> bool:
    return sum(r.state == "ready" for r in orch.replicas(rev.id)) == count


def test_create_applies_anchor_secret_and_deployment(
    apiserver: FakeApiServer, orchestrator: KubeOrchestrator
) -> None:
    rev = revision()
    orchestrator.scale(rev, 2)
    deployment = apiserver.get("deployments", "ml-team", "iris-r1")
    anchor = apiserver.get("configmaps", "ml-team", "modelyard-iris")
    secret = apiserver.get("secrets", "ml-team", "iris-r1")
    assert deployment is not None and anchor is not None and secret is not None
    assert deployment["spec"]["replicas"] == 2
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == anchor["metadata"]["uid"]
    assert secret["metadata"]["ownerReferences"][0]["uid"] == anchor["metadata"]["uid"]
    managers = {m["manager"] for m in deployment["metadata"]["managedFields"]}
    assert managers == {"modelyard"}
    applies = [p for m, p in apiserver.requests if m == "PATCH" and "fieldManager=modelyard" in p]
    assert len(applies) == 3 and all("force=true" in p for p in applies)
    wait_for(lambda: ready(orchestrator, rev, 2), what="two ready replicas")
    urls = {r.url for r in orchestrator.replicas(rev.id)}
    assert all(u.startswith("http://10.0.") and u.endswith(":8080") for u in urls)
    assert orchestrator.revisions() == {rev.id}


def test_scale_uses_the_subresource_and_nothing_is_reapplied(
    apiserver: FakeApiServer, orchestrator: KubeOrchestrator
) -> None:
    rev = revision()
    orchestrator.scale(rev, 1)
    wait_for(lambda: ready(orchestrator, rev, 1))
    calls = orchestrator.api.calls
    for _ in range(20):
        orchestrator.scale(rev, 1)  # the controller's every tick
    assert orchestrator.api.calls == calls
    orchestrator.scale(rev, 3)
    assert orchestrator.api.calls == calls + 1
    assert (
        apiserver.requests[-1][0] == "PATCH"
        and "/deployments/iris-r1/scale" in (apiserver.requests[-1][1])
    )
    wait_for(lambda: ready(orchestrator, rev, 3), what="three ready replicas")


def test_scale_to_zero_and_back(apiserver: FakeApiServer, orchestrator: KubeOrchestrator) -> None:
    rev = revision()
    orchestrator.scale(rev, 2)
    wait_for(lambda: ready(orchestrator, rev, 2))
    orchestrator.scale(rev, 0)
    wait_for(lambda: orchestrator.replicas(rev.id) == [], what="no replicas")
    assert spec_replicas(apiserver, "iris-r1") == 0
    assert apiserver.list("pods", "ml-team") == []
    orchestrator.scale(rev, 1)
    wait_for(lambda: ready(orchestrator, rev, 1))


def test_pod_gets_ready_later(apiserver: FakeApiServer, orchestrator: KubeOrchestrator) -> None:
    apiserver.auto_ready = False
    changes: list[int] = []
    orchestrator.on_change = lambda: changes.append(1)
    rev = revision()
    orchestrator.scale(rev, 1)
    wait_for(lambda: len(orchestrator.replicas(rev.id)) == 1)
    assert orchestrator.replicas(rev.id)[0].state == "starting"
    (pod,) = apiserver.list("pods", "ml-team")
    before = len(changes)
    apiserver.set_pod_status("ml-team", pod["metadata"]["name"], ready_status("10.1.2.3"))
    wait_for(lambda: ready(orchestrator, rev, 1), what="the replica to turn ready")
    assert orchestrator.replicas(rev.id)[0].url == "http://10.1.2.3:8080"
    assert len(changes) > before


def test_relists_after_the_watch_expired(
    apiserver: FakeApiServer, orchestrator: KubeOrchestrator
) -> None:
    apiserver.auto_ready = False
    rev = revision()
    orchestrator.scale(rev, 1)
    wait_for(lambda: len(orchestrator.replicas(rev.id)) == 1)
    lists = sum(
        1 for m, p in apiserver.requests if m == "GET" and "/pods?" in p and "watch" not in p
    )
    (pod,) = apiserver.list("pods", "ml-team")
    apiserver.expire_watches()
    apiserver.set_pod_status("ml-team", pod["metadata"]["name"], ready_status("10.9.9.9"))
    wait_for(lambda: ready(orchestrator, rev, 1), what="the state after the relist")
    relists = [
        m for m, p in apiserver.requests if m == "GET" and "/pods?" in p and "watch" not in p
    ]
    assert len(relists) > lists


def test_stop_revision_and_the_last_one_removes_everything(
    apiserver: FakeApiServer, orchestrator: KubeOrchestrator
) -> None:
    first, second = revision(1), revision(2)
    orchestrator.scale(first, 1)
    orchestrator.scale(second, 1)
    wait_for(lambda: ready(orchestrator, first, 1) and ready(orchestrator, second, 1))
    orchestrator.stop_revision(first.id)
    assert apiserver.get("deployments", "ml-team", "iris-r1") is None
    assert apiserver.get("secrets", "ml-team", "iris-r1") is None
    assert apiserver.get("configmaps", "ml-team", "modelyard-iris") is not None
    wait_for(lambda: orchestrator.replicas(first.id) == [])
    orchestrator.stop_revision(second.id)
    for plural in ("deployments", "secrets", "configmaps", "pods"):
        assert apiserver.list(plural, "ml-team") == [], plural
    wait_for(lambda: orchestrator.revisions() == set(), what="no revisions left")


def test_deleting_the_anchor_garbage_collects_all(
    apiserver: FakeApiServer, orchestrator: KubeOrchestrator
) -> None:
    orchestrator.scale(revision(1), 1)
    orchestrator.scale(revision(2), 2)
    wait_for(lambda: len(apiserver.list("pods", "ml-team")) == 3)
    orchestrator.api.delete(CONFIGMAPS, "ml-team", "modelyard-iris")
    for plural in ("deployments", "secrets", "pods"):
        assert apiserver.list(plural, "ml-team") == [], plural


def test_missing_namespace_fails_the_revision_with_kubernetes_reason(
    orchestrator: KubeOrchestrator,
) -> None:
    rev = revision(namespace="nowhere")
    orchestrator.scale(rev, 1)
    reason = orchestrator.failure(rev.id)
    assert reason is not None and 'namespaces "nowhere" not found' in reason
    calls = orchestrator.api.calls
    orchestrator.scale(rev, 0)  # what the controller does next: nothing to undo
    orchestrator.scale(rev, 1)  # and it is not retried forever
    assert orchestrator.api.calls == calls


def test_crash_looping_pod_fails_the_revision(
    apiserver: FakeApiServer, orchestrator: KubeOrchestrator
) -> None:
    apiserver.auto_ready = False
    rev = revision()
    orchestrator.scale(rev, 1)
    wait_for(lambda: len(orchestrator.replicas(rev.id)) == 1)
    (pod,) = apiserver.list("pods", "ml-team")
    status = {
        "phase": "Running",
        "containerStatuses": [
            {
                "name": "server",
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"reason": "Error", "exitCode": 3}},
            }
        ],
    }
    apiserver.set_pod_status("ml-team", pod["metadata"]["name"], status)
    wait_for(lambda: orchestrator.failure(rev.id) is not None)
    assert "CrashLoopBackOff after 3 restarts" in (orchestrator.failure(rev.id) or "")


def test_a_new_control_plane_adopts_without_reapplying(
    apiserver: FakeApiServer, orchestrator: KubeOrchestrator
) -> None:
    rev = revision()
    orchestrator.scale(rev, 2)
    wait_for(lambda: ready(orchestrator, rev, 2))
    orchestrator.stop()  # pods are the cluster's: they keep serving
    assert len(apiserver.list("pods", "ml-team")) == 2
    settings = KubernetesSettings(namespaces={"team": "ml-team"}, image="img:1")
    successor = KubeOrchestrator(settings, KubeApi(Cluster(apiserver.url), "modelyard"))
    successor.start()
    try:
        wait_for(lambda: ready(successor, rev, 2))
        calls = successor.api.calls
        successor.scale(rev, 2)
        assert successor.api.calls == calls
        assert successor.revisions() == {rev.id}
    finally:
        successor.stop()


def test_server_side_apply_conflicts_without_force(apiserver: FakeApiServer) -> None:
    """The fake is faithful where the orchestrator relies on it: another manager's field."""
    api = KubeApi(Cluster(apiserver.url), "someone-else")
    mine = KubeApi(Cluster(apiserver.url), "modelyard")
    try:
        owner = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "uid": "u"}}
        rev = revision()
        obj = render.deployment(rev, {}, "ml-team", owner, image="img:1", replicas=1)
        api.apply(obj)
        api.scale("ml-team", "iris-r1", 4)  # ownership of spec.replicas moves to the scaler
        try:
            mine.apply(obj, force=False)
        except Exception as exc:
            assert "409" in str(exc) and "spec.replicas" in str(exc)
        else:
            raise AssertionError("expected a conflict")
        mine.apply(obj, force=True)
        assert spec_replicas(apiserver, "iris-r1") == 1
    finally:
        mine.close()
        api.close()


def test_the_orchestrator_needs_no_more_than_its_role(
    apiserver: FakeApiServer, orchestrator: KubeOrchestrator
) -> None:
    """Every request of a whole life (create, scale, adopt, delete) is one the chart's Role
    grants: RBAC is not enforced by the fake, so this is where least privilege is checked."""
    first, second = revision(1), revision(2)
    orchestrator.scale(first, 1)
    orchestrator.scale(second, 1)
    orchestrator.scale(second, 0)
    wait_for(lambda: ready(orchestrator, first, 1))
    successor = KubeOrchestrator(orchestrator.settings, KubeApi(Cluster(apiserver.url), "m"))
    successor.start()
    successor.stop()
    orchestrator.stop_revision(first.id)
    orchestrator.stop_revision(second.id)
    allowed = {
        (group, resource, verb)
        for groups, resources, verbs in ORCHESTRATOR_RULES
        for group in groups
        for resource in resources
        for verb in verbs
    }
    pattern = re.compile(r"^/(api/v1|apis/apps/v1)/namespaces/[^/]+/(\w+)(/[^/?]+)?(/scale)?")
    for method, path in apiserver.requests:
        match = pattern.match(path)
        assert match is not None, path
        group = "apps" if match[1] == "apis/apps/v1" else ""
        resource = match[2] + ("/scale" if match[4] else "")
        if method == "GET":
            verbs = {"watch"} if "watch=true" in path else {"get" if match[3] else "list"}
        elif method == "PATCH" and "force=" in path:
            verbs = {"patch", "create"}  # server-side apply creates what is not there yet
        else:
            verbs = {{"PATCH": "patch", "DELETE": "delete", "POST": "create"}[method]}
        for verb in verbs:
            assert (group, resource, verb) in allowed, f"{method} {path} needs {verb}"
