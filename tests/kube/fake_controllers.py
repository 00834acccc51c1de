"""The controllers of the fake API server (`tests.kube.fake_apiserver`), called with its lock
held: a Deployment's ``replicas`` become Pods (owned by the Deployment directly, no ReplicaSet);
a Job gets one Pod (``backoffLimit`` and ``parallelism`` are not modelled: one pod, never
retried) and its status follows that pod's phase (``active``, ``succeeded``, ``failed``, the
``Complete`` or ``Failed`` condition). Pods go to the server's kubelet, if it has one.
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.kube.fake_apiserver import FakeApiServer, Key

JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready_status(ip: str, restarts: int = 0) -> dict[str, Any]:
    return {
        "phase": "Running",
        "podIP": ip,
        "startTime": now(),
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
        "containerStatuses": [
            {
                "name": "server",
                "ready": True,
                "restartCount": restarts,
                "state": {"running": {"startedAt": now()}},
            }
        ],
    }


def after_write(server: FakeApiServer, key: Key, created: bool) -> None:
    if key[0] == "deployments":
        reconcile(server, server._objects[key])
    elif key[0] == "jobs" and created:
        start_job(server, server._objects[key])


def owned_pods(server: FakeApiServer, owner: dict[str, Any]) -> list[tuple[Key, dict[str, Any]]]:
    uid, namespace = owner["metadata"]["uid"], owner["metadata"]["namespace"]
    return [
        (k, o)
        for k, o in server._objects.items()
        if k[0] == "pods"
        and k[1] == namespace
        and any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
    ]


def _new_pod(
    server: FakeApiServer, owner: dict[str, Any], name: str, labels: dict[str, str]
) -> tuple[Key, dict[str, Any]]:
    meta = owner["metadata"]
    template = owner["spec"].get("template") or {}
    key: Key = ("pods", meta["namespace"], name)
    pod = {
        "metadata": {
            "labels": {**((template.get("metadata") or {}).get("labels") or {}), **labels},
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": copy.deepcopy(template.get("spec") or {}),
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
        },
    }
    server._create(key, pod)
    server._changed("ADDED", key)
    if server.kubelet is not None:
        server.kubelet.run_pod(server, copy.deepcopy(pod))
    return key, pod


def reconcile(server: FakeApiServer, deployment: dict[str, Any]) -> None:
    meta, spec = deployment["metadata"], deployment["spec"]
    live = owned_pods(server, deployment)
    wanted = int(spec.get("replicas", 1))
    for key, _ in sorted(live, key=lambda kp: kp[1]["metadata"]["creationTimestamp"])[wanted:]:
        server.delete(key, "Background")
    for _ in range(wanted - len(live)):
        name = f"{meta['name']}-{uuid.uuid4().hex[:10]}-{uuid.uuid4().hex[:5]}"
        key, pod = _new_pod(server, deployment, name, {})
        if server.kubelet is None and server.auto_ready:
            server._ips += 1
            pod["status"] = ready_status(f"10.0.{server._ips // 250}.{server._ips % 250 + 1}")
            server._changed("MODIFIED", key)
    sync_deployment(server, deployment)


def start_job(server: FakeApiServer, job: dict[str, Any]) -> None:
    meta = job["metadata"]
    job.setdefault("status", {}).update(startTime=now(), active=1)
    server._changed("MODIFIED", ("jobs", meta["namespace"], meta["name"]))
    labels = {label: meta["name"] for label in JOB_NAME_LABELS}
    labels["controller-uid"] = meta["uid"]
    _new_pod(server, job, f"{meta['name']}-{uuid.uuid4().hex[:5]}", labels)


def sync_owner_status(server: FakeApiServer, pod: dict[str, Any]) -> None:
    for ref in pod["metadata"].get("ownerReferences") or []:
        plural = {"Deployment": "deployments", "Job": "jobs"}.get(ref.get("kind"), "")
        owner = server._objects.get((plural, pod["metadata"]["namespace"], ref["name"]))
        if owner is not None and plural == "deployments":
            sync_deployment(server, owner)
        elif owner is not None:
            sync_job(server, owner, pod)


def sync_deployment(server: FakeApiServer, deployment: dict[str, Any]) -> None:
    pods = [p for _, p in owned_pods(server, deployment)]
    ready = sum(
        any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
        for p in pods
    )
    status = {
        "observedGeneration": deployment["metadata"].get("generation", 1),
        "replicas": len(pods),
        "readyReplicas": ready,
        "availableReplicas": ready,
    }
    if deployment.get("status") != status:
        deployment["status"] = status
        meta = deployment["metadata"]
        server._changed("MODIFIED", ("deployments", meta["namespace"], meta["name"]))


def sync_job(server: FakeApiServer, job: dict[str, Any], pod: dict[str, Any]) -> None:
    phase = (pod.get("status") or {}).get("phase")
    status = job.setdefault("status", {})
    if phase not in ("Succeeded", "Failed") or status.get("conditions"):
        return
    status.pop("active", None)
    condition = {"status": "True", "lastTransitionTime": now()}
    if phase == "Succeeded":
        status.update(succeeded=1, completionTime=now())
        status["conditions"] = [{"type": "Complete", **condition}]
    else:
        status["failed"] = 1
        status["conditions"] = [
            {
                "type": "Failed",
                **condition,
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }
        ]
    meta = job["metadata"]
    server._changed("MODIFIED", ("jobs", meta["namespace"], meta["name"]))
