"""Pipeline step attempts as Kubernetes Jobs: pure functions, an attempt in, plain dicts out, and
what a Job's pod says about how the attempt ended.

One attempt is, in the run's Kubernetes namespace:

- a Job (``backoffLimit: 0``, ``restartPolicy: Never``: the executor keeps its own retries,
  timeouts and caching, so Kubernetes retries nothing and sets no deadline) whose one container
  runs the platform image's ``python -m modelyard.pipelines.runner`` on the task spec, in an
  ``emptyDir`` working folder. A step that names its own image runs in it instead: an init
  container of the platform image copies the runner into a shared ``emptyDir``
  (:mod:`modelyard.pipelines.runner_bundle`, as Kubeflow's launcher is brought in), and the step's
  container runs it with the image's ``python3``;
- a Secret of the same name, owned by the Job (garbage collected with it), holding the task spec
  (mounted as ``task.json``: it may carry the blob store's options) and the step's environment
  (which may hold an API key: never in the Job itself).

The runner writes its result (:class:`modelyard.pipelines.task.StepResult`) to ``result.json`` in
its working folder, which is the container's ``terminationMessagePath``: the API server hands it
back in the pod's status, so nothing but the API server is read. Kubernetes keeps 4 KiB of it,
so a longer result goes to the blob store and the message says where (the task's
``result_limit``, set by :mod:`modelyard.kube.jobs`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from modelyard.kube import pods
from modelyard.kube.render import (
    MANAGED_BY,
    NAMESPACE_LABEL,
    container_resources,
    owner_reference,
)
from modelyard.pipelines.backends import StepLaunch

RUN_LABEL = "modelyard.io/run"
NODE_LABEL = "modelyard.io/node"
ATTEMPT_LABEL = "modelyard.io/attempt"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
SELECTOR = f"{MANAGED_BY}=modelyard,{RUN_LABEL}"
"""Every pod of a modelyard step (label selector syntax)."""
CONTAINER = "step"
RUNNER_CONTAINER = "runner"
"""The init container that brings the runner into a step's own image."""
RUNNER_DIR = "/var/run/modelyard/runner"
TASK_DIR = "/var/run/modelyard/task"
WORK_DIR = "/var/lib/modelyard/step"
RESULT_PATH = f"{WORK_DIR}/result.json"
MESSAGE_LIMIT = 4096
"""What Kubernetes keeps of a termination message."""
TTL_SECONDS = 86400
"""A Job whose control plane died before deleting it goes after a day."""


def job_name(launch: StepLaunch) -> str:
    """``<node>-<run>-a<attempt>-<random>``: a DNS label (the Job's pod names extend it), unique
    per attempt (a Job's template is immutable, so a name is never applied twice)."""
    return f"{_slug(launch.node)[:24]}-{launch.run_id[:8]}-a{launch.attempt}-{secrets.token_hex(3)}"


def labels(namespace: str, launch: StepLaunch) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelyard-step",
        MANAGED_BY: "modelyard",
        NAMESPACE_LABEL: namespace,
        RUN_LABEL: launch.run_id[:63],
        NODE_LABEL: _slug(launch.node)[:63],
        ATTEMPT_LABEL: str(launch.attempt),
    }


def job(
    launch: StepLaunch,
    name: str,
    namespace: str,
    kube_namespace: str,
    *,
    image: str,
    image_pull_policy: str = "IfNotPresent",
    service_account: str | None = None,
    grace_seconds: float = 30.0,
) -> dict[str, Any]:
    """The attempt's Job; its environment comes from the Secret `secret` renders. Kubernetes
    kills the step ``grace_seconds`` after asking it to stop, as the executor would."""
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"}] + [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": name, "key": f"env.{key}"}}}
        for key in sorted(launch.env)
    ]
    pod_labels = labels(namespace, launch)
    mounts = [
        {"name": "task", "mountPath": TASK_DIR, "readOnly": True},
        {"name": "work", "mountPath": WORK_DIR},
    ]
    command = ["python", "-m", "modelyard.pipelines.runner", f"{TASK_DIR}/task.json"]
    volumes: list[dict[str, Any]] = [
        {
            "name": "task",
            "secret": {"secretName": name, "items": [{"key": "task.json", "path": "task.json"}]},
        },
        {"name": "work", "emptyDir": {}},
    ]
    init_containers = []
    if launch.image and launch.image != image:
        # The step's own image: the platform image's init container brings the runner along.
        protocol = urlsplit(launch.task["blobs"]["url"]).scheme or "file"
        init_containers.append(
            {
                "name": RUNNER_CONTAINER,
                "image": image,
                "imagePullPolicy": image_pull_policy,
                "command": ["python", "-m", "modelyard.pipelines.runner_bundle", RUNNER_DIR],
                "args": [protocol],
                "volumeMounts": [{"name": "runner", "mountPath": RUNNER_DIR}],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        )
        volumes.append({"name": "runner", "emptyDir": {}})
        mounts.append({"name": "runner", "mountPath": RUNNER_DIR, "readOnly": True})
        command = ["python3", f"{RUNNER_DIR}/launch.py", f"{TASK_DIR}/task.json"]
        image = launch.image
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": command,
        "workingDir": WORK_DIR,
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePath": RESULT_PATH,
        "terminationMessagePolicy": "File",
    }
    if wanted := resources(launch):
        container["resources"] = wanted
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": max(1, math.ceil(grace_seconds)),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "volumes": volumes,
        "containers": [container],
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": kube_namespace,
            "labels": pod_labels,
            "annotations": {"modelyard.io/run": launch.run_id, "modelyard.io/node": launch.node},
        },
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": TTL_SECONDS,
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


def secret(
    launch: StepLaunch, name: str, namespace: str, kube_namespace: str, owner: Mapping[str, Any]
) -> dict[str, Any]:
    """The task spec and the step's environment, owned by the Job ``owner`` (as applied)."""
    data = {"task.json": json.dumps(launch.task)}
    data.update({f"env.{key}": value for key, value in sorted(launch.env.items())})
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": kube_namespace,
            "labels": labels(namespace, launch),
            "ownerReferences": [owner_reference(owner)],
        },
        "type": "Opaque",
        "stringData": data,
    }


def resources(launch: StepLaunch) -> dict[str, Any]:
    """Memory as request and limit (an OOM kill, not a starved node), CPU as a request."""
    return container_resources(launch.cpu, launch.memory_mb)


def ended(
    pod: Mapping[str, Any], now: dt.datetime | None = None
) -> tuple[int, dict[str, Any]] | None:
    """How the attempt whose pod this is ended: its exit code and the runner's result (an
    ``error`` of Kubernetes' own words when the pod could not run it); None while it may run."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        for container in status.get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated")
            if container.get("name") == CONTAINER and terminated:
                return _terminated(terminated)
        for init in status.get("initContainerStatuses") or []:
            done = (init.get("state") or {}).get("terminated") or {}
            if done.get("exitCode", 0) != 0:  # the runner could not be brought in
                said = (done.get("message") or "").strip()[-500:]
                why = f"{done.get('reason') or 'Error'} (exit code {done['exitCode']})"
                where = f"pod {pod['metadata']['name']}, init container {init.get('name')}"
                return 1, {"error": f"{where}: {why}" + (f": {said}" if said else "")}
        why = ": ".join(filter(None, (status.get("reason"), status.get("message"))))
        return 1, {"error": f"pod {pod['metadata']['name']} failed: {why or 'no reason given'}"}
    reason = pods.failure(pod, now)
    return (1, {"error": reason}) if reason else None


def _terminated(terminated: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    code = int(terminated.get("exitCode", 1))
    reason = terminated.get("reason") or ""
    message = terminated.get("message") or ""
    try:
        result = json.loads(message) if message.strip() else {}
        if not isinstance(result, dict):
            raise ValueError("not an object")
    except ValueError:
        if code != 0:  # not the runner's: the container runtime's own words
            return code, {"error": f"{reason or 'Error'} (exit code {code}): {message[:500]}"}
        result = {
            "error": f"the step's result cannot be read back: Kubernetes keeps the first "
            f"{MESSAGE_LIMIT} bytes of it ({len(message.encode())} came back)"
        }
        code = 1
    if reason == "OOMKilled":
        result = {"error": f"OOMKilled: the step went over its memory limit (exit code {code})"}
    elif code != 0 and "error" not in result and reason not in ("", "Error", "Completed"):
        result = {**result, "error": f"{reason} (exit code {code})"}
    return code, result


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "step"
