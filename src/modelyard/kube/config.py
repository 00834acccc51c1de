"""Which cluster, which namespaces, which image: the ``kubernetes`` part of the settings, and
where the credentials come from.

In a pod (the Helm chart's control plane) the service account's files are used; elsewhere a
kubeconfig file and context (``KUBECONFIG`` or ``~/.kube/config``, its current context unless one
is named). Only what the orchestrator needs is read from a kubeconfig: the server, its CA, and a
bearer token or a client certificate; exec and auth-provider plug-ins are not run.
"""

from __future__ import annotations

import base64
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from modelyard.errors import ConfigError

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubernetesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_url: str | None = Field(
        None, description="The API server; default: in-cluster, else the kubeconfig's"
    )
    kubeconfig: Path | None = Field(None, description="Default: $KUBECONFIG or ~/.kube/config")
    context: str | None = Field(None, description="A kubeconfig context; default: its current")
    namespaces: dict[str, str] = Field(
        default_factory=dict,
        description="modelyard namespace -> Kubernetes namespace (default: the same name)",
    )
    image: str = Field("ghcr.io/modelyard/modelyard:latest", description="Image of every pod")
    image_pull_policy: str = Field("IfNotPresent", description="Always | IfNotPresent | Never")
    field_manager: str = Field("modelyard", description="Server-side apply field manager")
    service_account: str | None = Field(None, description="Service account of replica pods")
    control_plane_url: str | None = Field(
        None,
        description="How pods reach the API (the chart's Service); default: the url setting",
    )

    def namespace_for(self, namespace: str) -> str:
        return self.namespaces.get(namespace, namespace)


@dataclass(frozen=True)
class Cluster:
    """How to reach one API server."""

    server: str
    token: str | None = None
    verify: bool | str = True
    cert: tuple[str, str] | None = None
    token_file: Path | None = None
    """Re-read at each connection: projected service account tokens rotate."""

    def bearer(self) -> str | None:
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return self.token


def load_cluster(settings: KubernetesSettings) -> Cluster:
    """The cluster ``settings`` names, else in-cluster, else the kubeconfig; `ConfigError` says
    what is missing."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    in_cluster = host and (SERVICE_ACCOUNT / "token").is_file()
    if settings.api_url and not (settings.kubeconfig or settings.context):
        return Cluster(settings.api_url.rstrip("/"))
    if in_cluster and not (settings.kubeconfig or settings.context):
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        ca = SERVICE_ACCOUNT / "ca.crt"
        return Cluster(
            f"https://{host}:{port}",
            verify=str(ca) if ca.is_file() else True,
            token_file=SERVICE_ACCOUNT / "token",
        )
    return _from_kubeconfig(settings)


def _from_kubeconfig(settings: KubernetesSettings) -> Cluster:
    import yaml

    path = settings.kubeconfig or Path(
        os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
    )
    path = path.expanduser()
    try:
        config: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"no Kubernetes configuration: not in a cluster and kubeconfig {path} cannot be "
            f"read ({exc}); set kubernetes.kubeconfig or kubernetes.api_url"
        ) from exc
    name = settings.context or config.get("current-context")
    context = _named(config, "contexts", name, path)["context"]
    cluster = _named(config, "clusters", context.get("cluster"), path)["cluster"]
    user = _named(config, "users", context.get("user"), path).get("user") or {}
    server = settings.api_url or cluster.get("server")
    if not server:
        raise ConfigError(f"cluster {context.get('cluster')!r} in {path} has no server")
    verify: bool | str = not cluster.get("insecure-skip-tls-verify", False)
    if cluster.get("certificate-authority"):
        verify = str(cluster["certificate-authority"])
    elif cluster.get("certificate-authority-data"):
        verify = _data_file(cluster["certificate-authority-data"])
    cert = None
    if user.get("client-certificate") or user.get("client-certificate-data"):
        cert = (
            user.get("client-certificate") or _data_file(user["client-certificate-data"]),
            user.get("client-key") or _data_file(user["client-key-data"]),
        )
    token = user.get("token")
    if user.get("tokenFile"):
        return Cluster(
            server.rstrip("/"), verify=verify, cert=cert, token_file=Path(user["tokenFile"])
        )
    if token is None and cert is None and ("exec" in user or "auth-provider" in user):
        raise ConfigError(
            f"user {context.get('user')!r} in {path} authenticates with an exec or auth-provider "
            "plug-in, which modelyard does not run: use a token or a client certificate "
            "(e.g. a service account token)"
        )
    return Cluster(server.rstrip("/"), token=token, verify=verify, cert=cert)


def _named(config: dict[str, Any], kind: str, name: Any, path: Path) -> dict[str, Any]:
    for item in config.get(kind) or []:
        if item.get("name") == name:
            return dict(item)
    known = ", ".join(str(i.get("name")) for i in config.get(kind) or []) or "none"
    raise ConfigError(f"kubeconfig {path} has no {kind[:-1]} {name!r} (it has: {known})")


def _data_file(data: str) -> str:
    """httpx takes certificates as files: write the inline one to a private temporary file."""
    fd, name = tempfile.mkstemp(prefix="modelyard-kube-", suffix=".pem")
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64decode(data))
    return name
