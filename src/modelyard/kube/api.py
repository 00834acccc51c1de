"""The few Kubernetes API calls the orchestrator makes, over httpx.

Writes are server-side apply (``PATCH`` with ``application/apply-patch+yaml``, a JSON body, its
own ``fieldManager``, ``force`` since the control plane is the source of truth for what it
renders); scaling is a merge patch of the ``scale`` subresource; reads are list + watch from the
list's ``resourceVersion``. An expired version (410 Gone, as an HTTP status or as an ``ERROR``
event in the stream) raises `Expired`: the caller lists again. ``calls`` counts requests, for the
benchmark and for tests that check nothing is re-applied when nothing changed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from modelyard.errors import ModelyardError
from modelyard.kube.config import Cluster

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


class KubeApiError(ModelyardError):
    """The Kubernetes API refused a call; the message is its own ``Status`` (reason, message)."""

    http_status = 502
    exit_code = 7
    code = "kubernetes"

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"Kubernetes API: {status} {reason}: {message}")
        self.status, self.reason = status, reason


class Expired(KubeApiError):
    """410 Gone: the resource version is too old to watch from; list again."""


@dataclass(frozen=True)
class Kind:
    group_version: str
    plural: str

    def path(self, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        root = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        path = f"{root}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
        if sub is not None:
            path += f"/{sub}"
        return path


CONFIGMAPS = Kind("v1", "configmaps")
DEPLOYMENTS = Kind("apps/v1", "deployments")
JOBS = Kind("batch/v1", "jobs")
PODS = Kind("v1", "pods")
SECRETS = Kind("v1", "secrets")
KINDS = {
    "ConfigMap": CONFIGMAPS,
    "Deployment": DEPLOYMENTS,
    "Job": JOBS,
    "Pod": PODS,
    "Secret": SECRETS,
}


class KubeApi:
    def __init__(
        self,
        cluster: Cluster,
        field_manager: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.field_manager = field_manager
        self.calls = 0
        self._cluster = cluster
        self._lock = threading.Lock()
        self._streams: set[httpx.Response] = set()
        self._closed = False

        def auth(request: httpx.Request) -> httpx.Request:
            token = cluster.bearer()
            if token:
                request.headers["Authorization"] = f"Bearer {token}"
            return request

        self._http = httpx.Client(
            base_url=cluster.server,
            verify=cluster.verify,
            cert=cluster.cert,
            auth=auth,
            timeout=timeout,
            transport=transport,
        )

    def end_streams(self) -> None:
        """End the open watches and log follows at once, and any opened from now on (their
        reads are woken by shutting their sockets down: closing a socket another thread reads
        from would not wake it). Other requests still go."""
        with self._lock:
            self._closed = True
            streams, self._streams = list(self._streams), set()
        for response in streams:
            _wake(response)

    def close(self) -> None:
        """`end_streams`, and close the client."""
        self.end_streams()
        self._http.close()

    def _hold(self, response: httpx.Response) -> None:
        """Track an open stream, so that `close` ends it; one that opened while `close` ran is
        ended at once (it would else block its reader until the server ends it)."""
        with self._lock:
            self._streams.add(response)
            closed = self._closed
        if closed:
            _wake(response)

    def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        """Server-side apply ``obj``; the object as stored (with its uid)."""
        meta = obj["metadata"]
        kind = KINDS[obj["kind"]]
        params = {"fieldManager": self.field_manager, "force": "true" if force else "false"}
        return self._json(
            "PATCH",
            kind.path(meta["namespace"], meta["name"]),
            params=params,
            content=json.dumps(obj),
            headers={"Content-Type": APPLY},
        )

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._json("GET", kind.path(namespace, name))
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: Kind, namespace: str, selector: str) -> tuple[list[dict[str, Any]], str]:
        """The objects matching ``selector`` and the list's resource version (to watch from)."""
        body = self._json("GET", kind.path(namespace), params={"labelSelector": selector})
        return list(body.get("items") or []), str(body["metadata"]["resourceVersion"])

    def scale(self, namespace: str, name: str, replicas: int) -> dict[str, Any]:
        return self._json(
            "PATCH",
            DEPLOYMENTS.path(namespace, name, "scale"),
            params={"fieldManager": self.field_manager},
            content=json.dumps({"spec": {"replicas": replicas}}),
            headers={"Content-Type": MERGE},
        )

    def delete(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        *,
        propagation: str = "Background",
        grace_seconds: int | None = None,
    ) -> bool:
        """Delete, dependents as ``propagation`` says (``grace_seconds`` 0: kill the pods at
        once); False when it was gone already."""
        params = {"propagationPolicy": propagation}
        if grace_seconds is not None:
            params["gracePeriodSeconds"] = str(grace_seconds)
        try:
            self._json("DELETE", kind.path(namespace, name), params=params)
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def pod_log(self, namespace: str, name: str, container: str | None = None) -> str:
        """What the pod's container printed so far (the kubelet keeps the latest only)."""
        params = {"container": container} if container else {}
        return self._text(PODS.path(namespace, name, "log"), params)

    def read_log(
        self,
        namespace: str,
        name: str,
        container: str,
        *,
        since: str | None = None,
        tail: int | None = None,
    ) -> str:
        """A container's log, each line stamped (``timestamps=true``: RFC 3339 time, space,
        text): the lines since ``since`` (an RFC 3339 time), the last ``tail`` of them."""
        params = {"container": container, "timestamps": "true"}
        if since is not None:
            params["sinceTime"] = since
        if tail is not None:
            params["tailLines"] = str(tail)
        return self._text(PODS.path(namespace, name, "log"), params)

    def _text(self, path: str, params: dict[str, str]) -> str:
        return self._request("GET", path, params=params).text

    def follow_log(
        self, namespace: str, name: str, container: str, *, since: str | None = None
    ) -> LogFollow:
        """A container's log as it grows (``follow=true``, stamped like `read_log`), from
        ``since``; the stream ends when the container does, or at `LogFollow.close`."""
        params = {"container": container, "timestamps": "true", "follow": "true"}
        if since is not None:
            params["sinceTime"] = since
        self.calls += 1
        request = self._http.build_request(
            "GET",
            PODS.path(namespace, name, "log"),
            params=params,
            timeout=httpx.Timeout(10.0, read=None),
        )
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise KubeApiError(0, "Unreachable", f"{self._cluster.server}: {exc}") from exc
        if response.status_code >= 400:
            response.read()
            response.close()
            raise _error(response)
        self._hold(response)
        return LogFollow(self, response)

    def watch(
        self, kind: Kind, namespace: str, selector: str, resource_version: str, timeout: int
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, object) events after ``resource_version`` until the server ends the stream
        (after ``timeout`` seconds); `Expired` when that version is too old."""
        params = {
            "watch": "true",
            "labelSelector": selector,
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout),
            "allowWatchBookmarks": "true",
        }
        self.calls += 1
        read = httpx.Timeout(10.0, read=timeout + 30.0)
        with self._http.stream(
            "GET", kind.path(namespace), params=params, timeout=read
        ) as response:
            if response.status_code >= 400:
                response.read()
                raise _error(response)
            self._hold(response)
            try:
                yield from _events(response)
            finally:
                with self._lock:
                    self._streams.discard(response)

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._request(method, path, **kwargs).json()
        return result

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call, counted; `KubeApiError` for an unreachable server or an error answer."""
        self.calls += 1
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise KubeApiError(0, "Unreachable", f"{self._cluster.server}: {exc}") from exc
        if response.status_code >= 400:
            raise _error(response)
        return response


class LogFollow:
    """An open ``follow=true`` log stream: its lines, until it ends or `close` (from any
    thread: a read that waits is woken)."""

    def __init__(self, api: KubeApi, response: httpx.Response) -> None:
        self._api, self._response = api, response

    def lines(self) -> Iterator[str]:
        try:
            yield from self._response.iter_lines()
        except httpx.HTTPError:
            return  # closed, or the connection broke: the stream ended either way
        finally:
            with self._api._lock:
                self._api._streams.discard(self._response)
            self._response.close()

    def close(self) -> None:
        """End the stream: the thread reading `lines` sees it end and closes the response."""
        _wake(self._response)


def _wake(response: httpx.Response) -> None:
    """Shut the response's socket down: a read waiting on it returns (closing a socket another
    thread reads from would not wake it)."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    for line in response.iter_lines():
        if not line.strip():
            continue
        event = json.loads(line)
        obj = event.get("object") or {}
        if event.get("type") == "ERROR":
            code = int(obj.get("code") or 500)
            cls = Expired if code == 410 else KubeApiError
            raise cls(code, str(obj.get("reason")), str(obj.get("message")))
        yield str(event.get("type")), obj


def _error(response: httpx.Response) -> KubeApiError:
    try:
        status = response.json()
        reason, message = str(status.get("reason")), str(status.get("message"))
    except ValueError:
        reason, message = response.reason_phrase, response.text[:500]
    cls = Expired if response.status_code == 410 else KubeApiError
    return cls(response.status_code, reason, message)
