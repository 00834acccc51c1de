"""A small fake Kubernetes API server: a real HTTP server on a free port, for the orchestrator's
tests.

What it does, on the real REST paths and JSON shapes:
- namespaced ``v1`` ConfigMaps, Secrets, Services and Pods, ``apps/v1`` Deployments and
  ``batch/v1`` Jobs: get, list (equality and existence label selectors), create (POST), delete;
- server-side apply (``PATCH`` with ``application/apply-patch+yaml``; a ``fieldManager`` is
  required): field ownership per manager and operation over leaf fields, ``409 Conflict`` when
  another manager owns a field with a different value unless ``force=true``, fields a manager
  stops applying are removed, ``metadata.managedFields`` reported; ``stringData`` stored as
  ``data``; merge patches (``application/merge-patch+json``) as ``Update`` operations;
- the ``scale`` subresource of Deployments (``autoscaling/v1`` Scale: get, merge patch, put);
- watch streams (``?watch=true``) from a ``resourceVersion`` (or from "any": the current objects
  as ``ADDED`` first), ``timeoutSeconds``, and a ``410 Expired`` ``ERROR`` event for a version
  older than the retained history (`expire_watches` compacts it and ends open streams);
- creation in a namespace that does not exist: ``404 NotFound`` as the real server says it;
- deletion with ``propagationPolicy`` Background/Foreground (dependents found by
  ``ownerReferences`` uid, deleted at once, recursively) or Orphan;
- a Deployment and a Job controller (`tests.kube.fake_controllers`): a Deployment's ``replicas``
  become Pods; surplus pods go through a deletion timestamp (``MODIFIED``) before ``DELETED``;
  a Job gets one Pod and its status follows it;
- pod logs (``GET pods/NAME/log``, plain text) as the kubelet has them, ``400`` before the
  container started, with ``timestamps``, ``sinceTime``, ``tailLines`` and ``follow``
  (`tests.kube.podlogs`);
- a kubelet, one of three: by default pods turn Running and Ready at once with a fake pod IP;
  with ``auto_ready = False`` a test drives them with `set_pod_status`; with a ``kubelet``
  (`tests.kube.kubelet.ProcessKubelet`) their containers run as local processes.

What it does not model: authentication, RBAC and admission (every request is allowed); schema
validation and defaulting beyond ``replicas: 1``; ReplicaSets and rollout strategy; list merging
by key in server-side apply (lists are atomic leaves here) and the ``x-kubernetes-*`` markers;
scheduling, nodes, resources, probes and networking (pod IPs are fake and nothing listens on
them); grace periods (``gracePeriodSeconds``) and finalizers; Job retries (``backoffLimit``),
``parallelism``, ``activeDeadlineSeconds`` and ``ttlSecondsAfterFinished``; the log option
``previous``; pagination (``limit``/``continue``);
bookmarks; field selectors; cluster-scoped objects.
"""

from __future__ import annotations

import base64
import bisect
import copy
import json
import re
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import yaml

from tests.kube import fake_controllers as controllers
from tests.kube import fields, podlogs
from tests.kube.fake_controllers import now as _now
from tests.kube.fake_controllers import ready_status as ready_status

KINDS = {
    "configmaps": ("v1", "ConfigMap"),
    "secrets": ("v1", "Secret"),
    "services": ("v1", "Service"),
    "pods": ("v1", "Pod"),
    "deployments": ("apps/v1", "Deployment"),
    "jobs": ("batch/v1", "Job"),
}
GROUPS = {"deployments": "/apis/apps/v1", "jobs": "/apis/batch/v1"}
_PATH = re.compile(
    r"^/(?:api/v1|apis/apps/v1|apis/batch/v1)/namespaces/(?P<ns>[^/]+)/(?P<plural>[a-z]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>scale|log))?$"
)
Key = tuple[str, str, str]  # plural, namespace, name


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }


class Kubelet(Protocol):
    """Runs pods: called with the server's lock held, so both must return at once."""

    def run_pod(self, server: FakeApiServer, pod: dict[str, Any]) -> None: ...

    def stop_pod(self, namespace: str, name: str) -> None: ...

    def pod_log(self, namespace: str, name: str) -> str | None:
        """What the pod's container printed; None before it started."""


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.body = _status(code, reason, message)


class FakeApiServer:
    def __init__(
        self, namespaces: tuple[str, ...] = ("default",), kubelet: Kubelet | None = None
    ) -> None:
        self.namespaces = set(namespaces)
        self.auto_ready = True
        self.kubelet = kubelet
        self.requests: list[tuple[str, str]] = []
        """(method, path?query) of every request, in order."""
        self._objects: dict[Key, dict[str, Any]] = {}
        self._managers: dict[Key, dict[tuple[str, str], set[fields.FieldPath]]] = {}
        self._history: list[tuple[int, str, Key, dict[str, Any]]] = []
        self._version = 100
        self._oldest = 0
        self._epoch = 0  # bumped to end every open watch
        self._ips = 0
        self._cond = threading.Condition()
        self._closed = False
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def start(self) -> FakeApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._http.shutdown()
        self._http.server_close()

    # for tests ----------------------------------------------------------------------------------
    def list(self, plural: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        with self._cond:
            return [
                copy.deepcopy(o)
                for (p, ns, _), o in sorted(self._objects.items())
                if p == plural and ns == namespace and fields.matches(_labels(o), selector)
            ]

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._cond:
            obj = self._objects.get((plural, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def pod_log(self, namespace: str, name: str) -> str:
        pod = self._objects.get(("pods", namespace, name))
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found')
        text = self.kubelet.pod_log(namespace, name) if self.kubelet is not None else None
        if text is None:
            container = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("name")
            raise ApiError(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating',
            )
        return text

    def set_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """Replace a pod's status (as a kubelet would report it): a MODIFIED event. False when
        the pod is gone."""
        with self._cond:
            pod = self._objects.get(("pods", namespace, name))
            if pod is None:
                return False
            pod["status"] = copy.deepcopy(status)
            self._changed("MODIFIED", ("pods", namespace, name))
            self._sync_owner_status(pod)
            return True

    def expire_watches(self) -> None:
        """Compact the history (every version handed out so far is too old to watch from) and
        end every open watch, as an API server restart does: clients must list again."""
        with self._cond:
            # a list from now on hands out a version that can be watched from again
            self._version += 1
            self._oldest = self._version
            self._history.clear()
            self._epoch += 1
            self._cond.notify_all()

    # the store ----------------------------------------------------------------------------------
    def _changed(self, kind: str, key: Key) -> None:
        self._version += 1
        obj = self._objects[key]
        obj["metadata"]["resourceVersion"] = str(self._version)
        managers = self._managers.get(key, {})
        obj["metadata"]["managedFields"] = [
            {
                "manager": manager,
                "operation": operation,
                "apiVersion": obj["apiVersion"],
                "time": _now(),
                "fieldsType": "FieldsV1",
                "fieldsV1": fields.fields_v1(paths),
            }
            for (manager, operation), paths in sorted(managers.items())
            if paths
        ]
        self._history.append((self._version, kind, key, copy.deepcopy(obj)))
        if kind == "DELETED":
            del self._objects[key]
            self._managers.pop(key, None)
        self._cond.notify_all()

    def _create(self, key: Key, obj: dict[str, Any]) -> None:
        plural, namespace, name = key
        if namespace not in self.namespaces:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
        api_version, kind = KINDS[plural]
        obj.update(apiVersion=api_version, kind=kind)
        meta = obj.setdefault("metadata", {})
        meta.update(name=name, namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now())
        if plural == "deployments":
            obj.setdefault("spec", {}).setdefault("replicas", 1)
            meta["generation"] = 1
        self._objects[key] = obj

    def apply(self, key: Key, config: dict[str, Any], manager: str, force: bool) -> dict[str, Any]:
        _string_data(config)
        wanted = fields.leaves(config)
        current = self._objects.get(key)
        managers = self._managers.setdefault(key, {})
        mine = (manager, "Apply")
        conflicts = [
            (other[0], path)
            for other, paths in managers.items()
            if other[0] != manager
            for path in paths & wanted.keys()
            if current is not None and fields.get(current, path) != wanted[path]
        ]
        if conflicts and not force:
            listed = "; ".join(f'conflict with "{m}": .{".".join(p)}' for m, p in conflicts)
            raise ApiError(
                409, "Conflict", f"Apply failed with {len(conflicts)} conflict(s): {listed}"
            )
        if current is None:
            self._create(key, {})
            current = self._objects[key]
            kind = "ADDED"
        else:
            kind = "MODIFIED"
        for other, paths in managers.items():
            if other != mine:
                paths -= wanted.keys()
        others = set().union(*(p for m, p in managers.items() if m != mine))
        for path in managers.get(mine, set()) - wanted.keys() - others:
            fields.remove(current, path)
        for path, value in wanted.items():
            if path[:2] not in (("metadata", "name"), ("metadata", "namespace")):
                fields.set_(current, path, value)
        managers[mine] = set(wanted)
        self._bump_generation(key, current)
        self._changed(kind, key)
        self._after_write(key, created=kind == "ADDED")
        return copy.deepcopy(self._objects[key])

    def update(self, key: Key, patch: dict[str, Any], manager: str) -> dict[str, Any]:
        """A merge patch: ownership of the fields it changes moves to (manager, Update)."""
        current = self._objects.get(key)
        if current is None:
            raise ApiError(404, "NotFound", f'{key[0]} "{key[2]}" not found')
        changed = {p: v for p, v in fields.leaves(patch).items() if fields.get(current, p) != v}
        for path, value in changed.items():
            if value is None:
                fields.remove(current, path)
            else:
                fields.set_(current, path, value)
        managers = self._managers.setdefault(key, {})
        for paths in managers.values():
            paths -= changed.keys()
        managers.setdefault((manager or "unknown", "Update"), set()).update(
            p for p, v in changed.items() if v is not None
        )
        if changed:
            self._bump_generation(key, current)
            self._changed("MODIFIED", key)
            self._after_write(key)
        return copy.deepcopy(current)

    def delete(self, key: Key, propagation: str) -> None:
        obj = self._objects.get(key)
        if obj is None:
            raise ApiError(404, "NotFound", f'{key[0]} "{key[2]}" not found')
        uid = obj["metadata"]["uid"]
        if key[0] == "pods":
            obj["metadata"]["deletionTimestamp"] = _now()
            self._changed("MODIFIED", key)
            if self.kubelet is not None:
                self.kubelet.stop_pod(key[1], key[2])
        self._changed("DELETED", key)
        for other_key, other in list(self._objects.items()):
            refs = other["metadata"].get("ownerReferences") or []
            if other_key[1] != key[1] or not any(r.get("uid") == uid for r in refs):
                continue
            if propagation == "Orphan":
                other["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                self._changed("MODIFIED", other_key)
            elif other_key in self._objects:
                self.delete(other_key, propagation)
        if key[0] == "pods":
            self._sync_owner_status(obj)

    def _bump_generation(self, key: Key, obj: dict[str, Any]) -> None:
        if key[0] == "deployments":
            obj["metadata"]["generation"] = obj["metadata"].get("generation", 0) + 1

    # the controllers (tests.kube.fake_controllers) ----------------------------------------------
    def _after_write(self, key: Key, created: bool = False) -> None:
        controllers.after_write(self, key, created)

    def _sync_owner_status(self, pod: dict[str, Any]) -> None:
        controllers.sync_owner_status(self, pod)

    # watches ------------------------------------------------------------------------------------
    def watch(
        self, plural: str, namespace: str, selector: str, since: str, timeout: float
    ) -> Iterator[dict[str, Any]]:
        deadline = threading.Event()

        def expire() -> None:
            deadline.set()
            self._notify()

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            with self._cond:
                epoch = self._epoch
                if since in ("", "0"):
                    position = self._version
                    initial = [
                        {"type": "ADDED", "object": copy.deepcopy(o)}
                        for (p, ns, _), o in sorted(self._objects.items())
                        if p == plural and ns == namespace and fields.matches(_labels(o), selector)
                    ]
                elif int(since) < self._oldest:
                    expired = _status(
                        410, "Expired", f"too old resource version: {since} ({self._version})"
                    )
                    initial, position = [{"type": "ERROR", "object": expired}], -1
                else:
                    initial, position = [], int(since)
            yield from initial
            while position >= 0:
                with self._cond:
                    while (
                        not self._closed
                        and not deadline.is_set()
                        and epoch == self._epoch
                        and not (self._history and self._history[-1][0] > position)
                    ):
                        self._cond.wait(1.0)
                    if self._closed or deadline.is_set() or epoch != self._epoch:
                        return
                    start = bisect.bisect_right(self._history, position, key=lambda e: e[0])
                    events = [
                        {"type": kind, "object": obj}
                        for _, kind, key, obj in self._history[start:]
                        if key[0] == plural
                        and key[1] == namespace
                        and fields.matches(_labels(obj), selector)
                    ]
                    position = self._history[-1][0]
                yield from events
        finally:
            timer.cancel()

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("labels") or {})


def _string_data(obj: dict[str, Any]) -> None:
    if obj.get("kind") == "Secret" and "stringData" in obj:
        data = obj.setdefault("data", {})
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(value.encode()).decode()


def _scale(deployment: dict[str, Any]) -> dict[str, Any]:
    meta = deployment["metadata"]
    labels = (deployment["spec"].get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
        },
        "spec": {"replicas": deployment["spec"].get("replicas", 1)},
        "status": {
            "replicas": (deployment.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        },
    }


def _handler(server: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed ACK

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            server.requests.append((method, self.path))
            match = _PATH.match(parts.path)
            try:
                if match is None or match["plural"] not in KINDS:
                    raise ApiError(404, "NotFound", f"the server could not find {parts.path}")
                if not parts.path.startswith(GROUPS.get(match["plural"], "/api/v1/")):
                    raise ApiError(404, "NotFound", f"the server could not find {parts.path}")
                if (
                    method == "GET"
                    and match["name"] is None
                    and query.get("watch")
                    in (
                        "true",
                        "1",
                    )
                ):
                    self._watch(match["plural"], match["ns"], query)
                    return
                if match["sub"] == "log":
                    if match["plural"] != "pods" or method != "GET":
                        raise ApiError(404, "NotFound", f"the server could not find {parts.path}")
                    podlogs.serve(self, server, match["ns"], match["name"], query)
                    return
                with server._cond:
                    code, answer = self._answer(method, match, query, body)
            except ApiError as exc:
                code, answer = exc.body["code"], exc.body
            except (ValueError, yaml.YAMLError) as exc:
                code, answer = 400, _status(400, "BadRequest", str(exc))
            self._send(code, answer)

        def _answer(
            self, method: str, match: re.Match[str], query: dict[str, str], body: bytes
        ) -> tuple[int, dict[str, Any]]:
            plural, ns, name, sub = match["plural"], match["ns"], match["name"], match["sub"]
            key: Key = (plural, ns, name or "")
            content_type = (self.headers.get("Content-Type") or "").split(";")[0]
            manager = query.get("fieldManager", "")
            if sub == "scale" and plural != "deployments":
                raise ApiError(404, "NotFound", "no scale subresource")
            if method == "GET" and name is None:
                api_version, kind = KINDS[plural]
                items = server.list(plural, ns, query.get("labelSelector", ""))
                return 200, {
                    "kind": f"{kind}List",
                    "apiVersion": api_version,
                    "metadata": {"resourceVersion": str(server._version)},
                    "items": items,
                }
            if name is None and method == "POST":
                obj = json.loads(body)
                key = (plural, ns, obj.get("metadata", {}).get("name", ""))
                if key in server._objects:
                    raise ApiError(409, "AlreadyExists", f'{plural} "{key[2]}" already exists')
                _string_data(obj)
                server._create(key, obj)
                server._managers[key] = {(manager or "unknown", "Update"): set(fields.leaves(obj))}
                server._changed("ADDED", key)
                server._after_write(key, created=True)
                return 201, copy.deepcopy(server._objects[key])
            if name is None:
                raise ApiError(405, "MethodNotAllowed", f"{method} on a collection")
            obj = server._objects.get(key)
            if method == "GET":
                if obj is None:
                    raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
                return 200, copy.deepcopy(_scale(obj) if sub else obj)
            if method == "DELETE":
                options = json.loads(body) if body else {}
                policy = query.get("propagationPolicy") or options.get(
                    "propagationPolicy", "Background"
                )
                server.delete(key, policy)
                return 200, _status(200, "", "deleted") | {"status": "Success"}
            if sub == "scale":
                patch = json.loads(body)
                replicas = (patch.get("spec") or {}).get("replicas")
                if not isinstance(replicas, int) or replicas < 0:
                    raise ApiError(422, "Invalid", "spec.replicas: must be a non-negative integer")
                updated = server.update(key, {"spec": {"replicas": replicas}}, manager)
                return 200, _scale(updated)
            if method == "PATCH" and content_type == "application/apply-patch+yaml":
                if not manager:
                    raise ApiError(
                        400, "BadRequest", "PATCH /apply requires a non-empty fieldManager"
                    )
                config = yaml.safe_load(body)
                api_version, kind = KINDS[plural]
                if config.get("kind") != kind or config.get("apiVersion") != api_version:
                    raise ApiError(400, "BadRequest", f"apply expects {api_version} {kind}")
                if config.get("metadata", {}).get("name") != name:
                    raise ApiError(400, "BadRequest", "the name in the body differs from the URL")
                created = obj is None
                result = server.apply(key, config, manager, query.get("force") == "true")
                return (201 if created else 200), result
            if method == "PATCH" and content_type == "application/merge-patch+json":
                return 200, server.update(key, json.loads(body), manager)
            raise ApiError(415, "UnsupportedMediaType", f"unsupported {method} {content_type}")

        def _watch(self, plural: str, ns: str, query: dict[str, str]) -> None:
            events = server.watch(
                plural,
                ns,
                query.get("labelSelector", ""),
                query.get("resourceVersion", ""),
                float(query.get("timeoutSeconds", "1800")),
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for event in events:
                    line = json.dumps(event).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                pass
            self.close_connection = True

        def _send(self, code: int, answer: dict[str, Any]) -> None:
            data = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
