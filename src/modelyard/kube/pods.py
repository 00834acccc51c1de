"""What a Pod says about a replica: pure functions over the API server's Pod objects.

A pod is ``ready`` when its Ready condition is true, ``terminating`` once it has a deletion
timestamp, else ``starting``. A revision has failed, with Kubernetes' own reason, when one of its
pods cannot ever start by itself (an image that cannot be pulled, a bad config, a model that does
not load) or crashed ``CRASH_LIMIT`` times. An unschedulable pod fails it only after
``UNSCHEDULABLE_SECONDS``: a cluster autoscaler or node auto-provisioning may be adding a node.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from modelyard.kube.render import PORT, REVISION_ID_LABEL
from modelyard.serving.records import ReplicaInfo
from modelyard.serving.states import ReplicaState

CRASH_LIMIT = 3
UNSCHEDULABLE_SECONDS = 600.0
HOPELESS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)


def revision_id(pod: Mapping[str, Any]) -> str | None:
    labels = pod.get("metadata", {}).get("labels") or {}
    value = labels.get(REVISION_ID_LABEL)
    return value if isinstance(value, str) else None


def state(pod: Mapping[str, Any]) -> ReplicaState:
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return ReplicaState.TERMINATING
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return ReplicaState.TERMINATING
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return ReplicaState.READY if status.get("podIP") else ReplicaState.STARTING
    return ReplicaState.STARTING


def replica(pod: Mapping[str, Any]) -> ReplicaInfo:
    meta, status = pod["metadata"], pod.get("status") or {}
    started = status.get("startTime") or meta.get("creationTimestamp")
    return ReplicaInfo(
        id=meta["name"],
        url=f"http://{_host(status.get('podIP') or '0.0.0.0')}:{PORT}",
        state=state(pod),
        pid=None,
        started_at=_time(started),
        restarts=sum(c.get("restartCount", 0) for c in status.get("containerStatuses") or []),
    )


def failure(pod: Mapping[str, Any], now: dt.datetime | None = None) -> str | None:
    """Why the pod will not get ready by itself, in Kubernetes' words; None while it may."""
    status = pod.get("status") or {}
    name = pod.get("metadata", {}).get("name", "?")
    found = _unschedulable(pod)
    if found is not None:
        since, condition = found
        waited = (now or dt.datetime.now(dt.UTC)) - since
        if waited.total_seconds() >= UNSCHEDULABLE_SECONDS:
            return (
                f"pod {name}: Unschedulable for {waited.total_seconds() / 60:.0f} min: "
                f"{condition.get('message', '')}"
            )
    for kind in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(kind) or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            last = (container.get("lastState") or {}).get("terminated") or {}
            reason = waiting.get("reason")
            restarts = container.get("restartCount", 0)
            what = f"pod {name}, container {container.get('name')}"
            if reason in HOPELESS:
                return f"{what}: {reason}: {waiting.get('message', '')}".rstrip(": ")
            if reason == "CrashLoopBackOff" and restarts >= CRASH_LIMIT:
                cause = last.get("reason") or "Error"
                code = last.get("exitCode")
                message = (last.get("message") or "").strip()
                return (
                    f"{what}: CrashLoopBackOff after {restarts} restarts "
                    f"(last: {cause}, exit code {code}){': ' + message if message else ''}"
                )
    return None


def unschedulable_since(pod: Mapping[str, Any]) -> dt.datetime | None:
    """When the pod was found to fit no node, if it does not (`failure` gives up on it
    ``UNSCHEDULABLE_SECONDS`` later)."""
    found = _unschedulable(pod)
    return found[0] if found is not None else None


def _unschedulable(pod: Mapping[str, Any]) -> tuple[dt.datetime, Mapping[str, Any]] | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
            and condition.get("lastTransitionTime")
        ):
            return _time(condition["lastTransitionTime"]), condition
    return None


def pending_reason(pod: Mapping[str, Any]) -> str | None:
    """Why a pod waits for a node (``Unschedulable: 0/3 nodes ...``), for logs; None if not."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{condition.get('reason')}: {condition.get('message', '')}"
    return None


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _time(value: str | None) -> dt.datetime:
    if not value:
        return dt.datetime.now(dt.UTC)
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
