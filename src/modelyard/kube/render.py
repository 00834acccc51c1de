"""Revisions as Kubernetes manifests: pure functions, a spec in, plain dicts out.

One modelyard deployment is, in its Kubernetes namespace:

- an anchor ConfigMap ``modelyard-<deployment>`` that owns everything below, so that deleting it
  (which the orchestrator does when the deployment's last revision goes) removes all of it by
  Kubernetes' garbage collection;
- per revision a Secret ``<deployment>-r<N>`` with the replica token and the API key, and one
  immutable Deployment ``<deployment>-r<N>``: an init container pulls the revision's model version
  with the platform's own verified pull (``modelyard models pull``) into an ``emptyDir``, the server
  container serves it from there (the same cache folder, found complete and verified), probes on
  the inference protocol's health routes, resources, node selector and tolerations from the spec.
  A realtime revision's container is the realtime worker (`replica_command.WORKLOADS`), which
  answers only those health routes; the gateway never routes requests to its pods.

The Deployment's ``replicas`` is set only when it is created: after that the scale subresource
owns it, and a re-apply must not fight the autoscaler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelyard.serving.deployments import Revision
from modelyard.serving.replica_command import SECRET_ENV, replica_command
from modelyard.serving.replica_headers import TOKEN_ENV

PORT = 8080
MODELS_PATH = "/var/lib/modelyard/models"
MANAGED_BY = "app.kubernetes.io/managed-by"
NAMESPACE_LABEL = "modelyard.io/namespace"
DEPLOYMENT_LABEL = "modelyard.io/deployment"
REVISION_LABEL = "modelyard.io/revision"
REVISION_ID_LABEL = "modelyard.io/revision-id"
SELECTOR = f"{MANAGED_BY}=modelyard,{REVISION_ID_LABEL}"
"""Every replica pod of modelyard (label selector syntax)."""
TERMINATION_GRACE_SECONDS = 35  # the server's own grace (30 s) and a margin


def object_name(revision: Revision) -> str:
    """``<deployment>-r<N>``: the revision's Deployment and Secret (and its pods' prefix)."""
    return f"{revision.deployment}-r{revision.number}"


def anchor_name(deployment: str) -> str:
    return f"modelyard-{deployment}"


def deployment_labels(namespace: str, deployment: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelyard-replica",
        MANAGED_BY: "modelyard",
        NAMESPACE_LABEL: namespace,
        DEPLOYMENT_LABEL: deployment,
    }


def revision_labels(revision: Revision) -> dict[str, str]:
    return {
        **deployment_labels(revision.namespace, revision.deployment),
        REVISION_LABEL: str(revision.number),
        REVISION_ID_LABEL: revision.id,
    }


def anchor(revision: Revision, kube_namespace: str) -> dict[str, Any]:
    """The ConfigMap that owns every object of the revision's deployment."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": anchor_name(revision.deployment),
            "namespace": kube_namespace,
            "labels": deployment_labels(revision.namespace, revision.deployment),
        },
        "data": {"namespace": revision.namespace, "deployment": revision.deployment},
    }


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """A reference to ``owner`` (an object as the API server returned it, with its uid)."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
    }


def secret(
    revision: Revision, env: Mapping[str, str], kube_namespace: str, owner: Mapping[str, Any]
) -> dict[str, Any]:
    """The revision's secret values (`SECRET_ENV` among ``env``), never in the Deployment."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": object_name(revision),
            "namespace": kube_namespace,
            "labels": revision_labels(revision),
            "ownerReferences": [owner_reference(owner)],
        },
        "type": "Opaque",
        "stringData": {k: v for k, v in sorted(env.items()) if k in SECRET_ENV},
    }


def deployment(
    revision: Revision,
    env: Mapping[str, str],
    kube_namespace: str,
    owner: Mapping[str, Any],
    *,
    image: str,
    replicas: int | None = None,
    image_pull_policy: str = "IfNotPresent",
    service_account: str | None = None,
) -> dict[str, Any]:
    """The revision's Deployment; ``replicas`` only when creating it (see the module's note).
    ``env`` is the replica's whole environment (`replica_command.replica_environment`)."""
    spec = revision.spec
    labels = revision_labels(revision)
    plain = {k: v for k, v in env.items() if k not in SECRET_ENV}
    plain["MODELYARD_CACHE_DIR"] = MODELS_PATH
    secret_refs = sorted(k for k in env if k in SECRET_ENV)
    module, arguments = replica_command(revision)
    container_env = [{"name": k, "value": v} for k, v in sorted(plain.items())] + [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": object_name(revision), "key": k}}}
        for k in secret_refs
    ]
    # The init container reaches the repository, nothing else: no replica token.
    init_env = [e for e in container_env if e["name"] != TOKEN_ENV]
    mount = [{"name": "models", "mountPath": MODELS_PATH}]
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "volumes": [{"name": "models", "emptyDir": {}}],
        # A realtime revision without a model has nothing to pull.
        "initContainers": [
            {
                "name": "pull",
                "image": image,
                "imagePullPolicy": image_pull_policy,
                "command": ["python", "-m", "modelyard", "models", "pull", revision.model],
                "env": init_env,
                "volumeMounts": mount,
                "resources": resources(revision),
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ]
        if revision.model
        else [],
        "containers": [
            {
                "name": "server",
                "image": image,
                "imagePullPolicy": image_pull_policy,
                "command": ["python", "-m", module, *arguments],
                "args": ["--host", "0.0.0.0", "--port", str(PORT)],
                "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
                "env": container_env,
                "volumeMounts": mount,
                "resources": resources(revision),
                # A model that does not load prints its traceback: the pod's status carries it.
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "readinessProbe": _probe("/v2/health/ready", period=2, failures=1),
                "livenessProbe": _probe("/v2/health/live", period=10, failures=3),
            }
        ],
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(spec.node_selector.items()))
    if spec.tolerations:
        pod_spec["tolerations"] = [t.model_dump(exclude_none=True) for t in spec.tolerations]
    body: dict[str, Any] = {
        "selector": {"matchLabels": {MANAGED_BY: "modelyard", REVISION_ID_LABEL: revision.id}},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if replicas is not None:
        body = {"replicas": replicas, **body}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": object_name(revision),
            "namespace": kube_namespace,
            "labels": labels,
            "annotations": {"modelyard.io/model": revision.model},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": body,
    }


def resources(revision: Revision) -> dict[str, Any]:
    """Requests (and limits where they protect the node: memory, GPUs) from the spec. CPU gets
    no limit: a throttled replica answers slowly long before it would be unfair."""
    wanted = revision.spec.resources
    return container_resources(wanted.cpu, wanted.memory_mb, wanted.gpu)


def container_resources(
    cpu: float | None, memory_mb: int | None, gpu: int | None = None
) -> dict[str, Any]:
    """A container's ``resources``: CPU as a request, memory and GPUs as request and limit (an
    OOM kill, not a starved node)."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if cpu is not None:
        requests["cpu"] = f"{max(1, round(cpu * 1000))}m"
    if memory_mb is not None:
        requests["memory"] = limits["memory"] = f"{memory_mb}Mi"
    if gpu is not None:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(gpu)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def scale(replicas: int) -> dict[str, Any]:
    """A merge patch of the scale subresource."""
    return {"spec": {"replicas": replicas}}


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }
