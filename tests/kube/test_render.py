"""Rendering revisions to manifests: pure functions, checked field by field."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from modelyard.kube import pods, render
from modelyard.serving.deployments import Revision
from modelyard.serving.records import DeploymentSpec
from modelyard.serving.replica_command import replica_environment
from modelyard.serving.replica_headers import TOKEN_ENV
from modelyard.serving.states import Workload
from tests.kube import schemas

OWNER = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "modelyard-iris", "uid": "uid-1"},
}
BASE_ENV = {"MODELYARD_URL": "http://api:8700", "MODELYARD_API_KEY": "key-secret"}


def revision(**spec: Any) -> Revision:
    return Revision(
        id="a" * 32,
        number=3,
        name="iris-00003",
        namespace="team",
        deployment="iris",
        deployment_id="d1",
        model="team/iris@7",
        spec=DeploymentSpec(model="iris@7", **spec),
        state="deploying",
        token="t" * 64,
    )


def manifest(rev: Revision, **options: Any) -> dict[str, Any]:
    env = replica_environment(rev, BASE_ENV)
    return render.deployment(rev, env, "ml-team", OWNER, image="img:1", **options)


def test_deployment_is_named_labelled_and_owned() -> None:
    obj = manifest(revision(), replicas=2)
    meta = obj["metadata"]
    assert (obj["apiVersion"], obj["kind"]) == ("apps/v1", "Deployment")
    assert (meta["name"], meta["namespace"]) == ("iris-r3", "ml-team")
    assert meta["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "modelyard-iris", "uid": "uid-1"}
    ]
    assert meta["labels"][render.REVISION_ID_LABEL] == "a" * 32
    assert meta["labels"][render.REVISION_LABEL] == "3"
    assert obj["spec"]["replicas"] == 2
    selector = obj["spec"]["selector"]["matchLabels"]
    template_labels = obj["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()


def test_replicas_only_when_creating() -> None:
    assert "replicas" not in manifest(revision())["spec"]


def test_init_container_pulls_into_the_shared_volume_the_server_reads() -> None:
    pod = manifest(revision())["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (server,) = pod["containers"]
    assert init["command"] == ["python", "-m", "modelyard", "models", "pull", "team/iris@7"]
    assert init["volumeMounts"] == server["volumeMounts"]
    assert pod["volumes"] == [{"name": "models", "emptyDir": {}}]
    assert server["command"][:3] == ["python", "-m", "modelyard.serving.server"]
    assert "--model" in server["command"] and "team/iris@7" in server["command"]
    assert server["args"] == ["--host", "0.0.0.0", "--port", "8080"]
    for container in (init, server):
        env = {e["name"]: e for e in container["env"]}
        assert env["MODELYARD_CACHE_DIR"]["value"] == render.MODELS_PATH


def realtime_revision(model: str | None) -> Revision:
    realtime = {"stream": "clicks", "function": "shop:score", "rule": {"types": ["cart"]}}
    return Revision(
        id="b" * 32,
        number=2,
        name="scorer-00002",
        namespace="team",
        deployment="scorer",
        deployment_id="d2",
        model=f"team/{model}" if model else "",
        spec=DeploymentSpec.model_validate({"model": model, "realtime": realtime}),
        state="deploying",
        workload=Workload.REALTIME_WORKER,
        token="t" * 64,
    )


def test_a_realtime_revision_runs_the_worker_with_its_pinned_version() -> None:
    pod = manifest(realtime_revision("iris@4"))["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (worker,) = pod["containers"]
    assert init["command"][-1] == "team/iris@4"
    command = worker["command"]
    assert command[:3] == ["python", "-m", "modelyard.realtime.worker"]
    assert command[command.index("--deployment") + 1] == "team/scorer"
    assert command[command.index("--model") + 1] == "team/iris@4"
    spec = json.loads(command[command.index("--spec") + 1])
    assert (spec["stream"], spec["function"], spec["rule"]["types"]) == (
        "clicks",
        "shop:score",
        ["cart"],
    )
    # the worker answers the health probes on the same port, nothing else
    assert worker["args"] == ["--host", "0.0.0.0", "--port", "8080"]
    assert worker["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # without a model there is nothing to pull
    bare = manifest(realtime_revision(None))["spec"]["template"]["spec"]
    assert bare["initContainers"] == []
    assert "--model" not in bare["containers"][0]["command"]
    schemas.check(manifest(realtime_revision(None), replicas=1))


def test_secrets_come_from_the_secret_never_the_manifest() -> None:
    rev = revision(env={"LOG_LEVEL": "debug"})
    obj = manifest(rev)
    text = repr(obj)
    assert rev.token not in text and "key-secret" not in text
    pod = obj["spec"]["template"]["spec"]
    server_env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert server_env[TOKEN_ENV]["valueFrom"]["secretKeyRef"] == {
        "name": "iris-r3",
        "key": TOKEN_ENV,
    }
    assert server_env["LOG_LEVEL"] == {"name": "LOG_LEVEL", "value": "debug"}
    init_env = {e["name"] for e in pod["initContainers"][0]["env"]}
    assert TOKEN_ENV not in init_env and "MODELYARD_API_KEY" in init_env
    secret = render.secret(rev, replica_environment(rev, BASE_ENV), "ml-team", OWNER)
    assert secret["stringData"] == {"MODELYARD_API_KEY": "key-secret", TOKEN_ENV: rev.token}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_spec_env_cannot_replace_the_token() -> None:
    rev = revision(env={TOKEN_ENV: "mine"})
    assert replica_environment(rev, BASE_ENV)[TOKEN_ENV] == rev.token


def test_probes_on_the_inference_protocol_health_routes() -> None:
    server = manifest(revision())["spec"]["template"]["spec"]["containers"][0]
    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert server["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    # a crash's status message is its log's tail: the failure() of the revision quotes it
    assert server["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_resources_node_selector_and_tolerations() -> None:
    rev = revision(
        resources={"cpu": 0.5, "memory_mb": 2048, "gpu": 1},
        node_selector={"pool": "gpu"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    pod = manifest(rev)["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "500m", "memory": "2048Mi", "nvidia.com/gpu": "1"},
        "limits": {"memory": "2048Mi", "nvidia.com/gpu": "1"},
    }
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_no_resources_no_scheduling_constraints_by_default() -> None:
    pod = manifest(revision())["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {}
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert pod["automountServiceAccountToken"] is False


def test_anchor_and_scale() -> None:
    anchor = render.anchor(revision(), "ml-team")
    assert (anchor["kind"], anchor["metadata"]["name"]) == ("ConfigMap", "modelyard-iris")
    assert anchor["metadata"]["labels"][render.DEPLOYMENT_LABEL] == "iris"
    assert render.scale(0) == {"spec": {"replicas": 0}}


def pod(status: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "iris-r3-abc",
            "labels": {render.REVISION_ID_LABEL: "a" * 32},
            "creationTimestamp": "2026-01-01T00:00:00Z",
            **meta,
        },
        "status": status,
    }


def test_pod_states() -> None:
    ready = {"podIP": "10.0.0.7", "conditions": [{"type": "Ready", "status": "True"}]}
    assert pods.state(pod({"phase": "Pending"})) == "starting"
    assert pods.state(pod(ready)) == "ready"
    assert pods.state(pod(ready, deletionTimestamp="2026-01-01T00:00:01Z")) == "terminating"
    info = pods.replica(pod(ready))
    assert (info.id, info.url, info.pid) == ("iris-r3-abc", "http://10.0.0.7:8080", None)
    assert pods.revision_id(pod(ready)) == "a" * 32


def test_pod_failures_in_kubernetes_words() -> None:
    pulling = {
        "containerStatuses": [
            {
                "name": "server",
                "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}},
            }
        ]
    }
    assert pods.failure(pod(pulling)) == (
        "pod iris-r3-abc, container server: ImagePullBackOff: not found"
    )
    crashing = {
        "initContainerStatuses": [
            {
                "name": "pull",
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
            }
        ]
    }
    reason = pods.failure(pod(crashing))
    assert reason is not None and "OOMKilled" in reason and "container pull" in reason
    once = {
        "containerStatuses": [
            {
                "name": "server",
                "restartCount": 1,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            }
        ]
    }
    assert pods.failure(pod(once)) is None
    unschedulable = {
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available",
            }
        ]
    }
    assert pods.failure(pod(unschedulable)) is None
    assert pods.pending_reason(pod(unschedulable)) == "Unschedulable: 0/3 nodes are available"
    since = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    unschedulable["conditions"][0]["lastTransitionTime"] = "2026-01-01T00:00:00Z"
    waiting = pod(unschedulable)
    assert pods.failure(waiting, since + dt.timedelta(minutes=9)) is None
    assert pods.failure(waiting, since + dt.timedelta(minutes=10)) == (
        "pod iris-r3-abc: Unschedulable for 10 min: 0/3 nodes are available"
    )


def test_every_manifest_is_valid_for_kubernetes() -> None:
    full = revision(
        resources={"cpu": 2, "memory_mb": 4096, "gpu": 2},
        node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        batching={"max_batch_size": 8, "max_wait_ms": 2},
        env={"OMP_NUM_THREADS": "2"},
    )
    env = replica_environment(full, BASE_ENV)
    for rev in (revision(), full):
        schemas.check(render.anchor(rev, "ml-team"))
        schemas.check(render.secret(rev, env, "ml-team", OWNER))
        schemas.check(manifest(rev, replicas=0, service_account="runner"))
        schemas.check(manifest(rev))
