"""The gateway: the data plane between clients and replicas.

For each inference it authenticates the key (invoker role or higher on the namespace), picks a
revision (by tag header, else by traffic percent) and, within it, the ready replica with the
fewest outstanding requests, forwards the request with the revision's replica token (replicas
answer nobody else: `modelyard.serving.replica_headers`), retries once on another replica when the
connection failed, enforces the deployment's body size and time limits, and records metrics, the
autoscaler's concurrency and an access log line. A request for a revision with no ready replica
(scaled to zero, or its replicas restarting) waits here, in a bounded queue, until one is ready.

Paths: ``/{namespace}/{deployment}/v2/...`` and ``/v1/...`` (and any other path of the
deployment's runtime, like an image search's ``/search``); and the bare OIP paths
``/v2/models/{deployment}/...`` with the namespace in ``X-Modelyard-Namespace``, so unmodified
OIP clients need only a URL and headers; the server-level OIP routes (``/v2``, ``/v2/health/*``)
answer for the gateway itself, with or without that header. Bodies pass through as they are
(binary tensor data too, with its ``Inference-Header-Content-Length``). ``/metrics`` is Prometheus
exposition. ``/{namespace}/streams/...`` and ``/{namespace}/predictions/...`` are realtime ingest
and prediction reads (`modelyard.realtime.ingest`; those deployment names are reserved). Until
the control plane has confirmed its routing table, a starting gateway holds requests
(`modelyard.gateway.routes`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from modelyard import __version__
from modelyard.gateway.metrics import Concurrency, Metrics, Window
from modelyard.gateway.routes import DeploymentRoute, RevisionRoute, Routes
from modelyard.gateway.upstream import ConnectFailed, Endpoint, Response, UpstreamTimeout
from modelyard.realtime.ingest import RealtimeRoutes
from modelyard.realtime.ingest import owns as realtime_path
from modelyard.serving.replica_headers import parse_service_ms

access_log = logging.getLogger("modelyard.gateway.access")
log = logging.getLogger(__name__)
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
MAX_WAITING = 1000
EXTENSIONS = ["binary_tensor_data"]
EJECT_SECONDS = 5.0
NAMESPACE_HEADER = b"x-modelyard-namespace"
TAG_HEADER = b"x-modelyard-tag"
BINARY_HEADER = b"inference-header-content-length"
"""OIP's binary tensor data extension: where the JSON ends in a body with tensors after it."""
FORWARDED = (b"content-type", b"accept", b"x-request-id", b"traceparent", BINARY_HEADER)
PASSED_BACK = (BINARY_HEADER,)
"""Headers of a replica's answer that go back to the client, besides its content type."""
# The gateway answers these itself, with or without a namespace header: an OIP client asks its
# server's health and metadata of the URL it was given, which is the gateway's.
SERVER_PATHS = frozenset(
    {"/", "/v2", "/v2/health/live", "/v2/health/ready", "/healthz", "/metrics"}
)


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.revision: RevisionRoute | None = None
        """The revision the request had been sent to, when it failed there."""


class Gateway:
    def __init__(self, routes: Routes, *, max_waiting: int = MAX_WAITING) -> None:
        self.routes = routes
        self.metrics = Metrics()
        self.concurrency = Concurrency()
        self.window = Window()
        self._shadows: set[asyncio.Task[None]] = set()
        self.max_waiting = max_waiting
        self.waiting: defaultdict[str, int] = defaultdict(int)
        self._ejected: dict[int, float] = {}
        self.realtime = RealtimeRoutes(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        started = time.perf_counter()
        path: str = scope["path"]
        if realtime_path(path):  # /{namespace}/streams/... and /{namespace}/predictions/...
            await self.realtime(scope, receive, send)
            return
        target = self._target(path, scope)
        if target is None:
            await self._local(scope["method"], path, send)
            return
        namespace, deployment, upstream_path = target
        if not self.routes.current:
            await self.routes.settled()  # a starting gateway waits for the control plane's table
        route: DeploymentRoute | None = None
        revision: RevisionRoute | None = None
        status, key_id = 500, "-"
        service: bytes | None = None
        try:
            route, headers, key_id = self._admit(scope, namespace, deployment)
            body = await _read_body(receive, route.max_body_bytes)
            # A HEAD goes on as a GET (serving.http drops the body here): the parser of the
            # replica's answer would wait for the body a HEAD's answer announces but never sends.
            method = "GET" if scope["method"] == "HEAD" else scope["method"]
            request = (method, upstream_path, body, scope["query_string"])
            revision, response = await self._forward(route, headers, *request)
            status, service = response.status, response.service
            content_type, passed = _content_type(response)
            await _respond(send, status, response.body, content_type, revision.name, passed)
            shadow = route.shadow
            if shadow is not None and random.random() * 100 < shadow.percent:
                task = asyncio.create_task(self._shadow(route, shadow, headers, request, response))
                self._shadows.add(task)
                task.add_done_callback(self._shadows.discard)
        except _Reject as reject:
            status, revision = reject.status, reject.revision
            await _respond(send, status, json.dumps({"error": reject.message}).encode())
        elapsed = time.perf_counter() - started
        revision_name = revision.name if revision is not None else "-"
        self.metrics.observe((namespace, deployment, revision_name), status, elapsed)
        if route is not None:
            revision_id = revision.id if revision else None
            service_ms = parse_service_ms(service)
            self.window.observe(route.id, revision_id, status, elapsed, service_ms=service_ms)
        if access_log.isEnabledFor(logging.INFO):  # off by default: no arguments built
            access_log.info(
                '{"ns":"%s","deployment":"%s","revision":"%s","method":"%s","path":"%s",'
                '"status":%d,"ms":%.2f,"key":"%s"}',
                namespace,
                deployment,
                revision_name,
                scope["method"],
                path,
                status,
                elapsed * 1000,
                key_id,
            )

    # request handling ---------------------------------------------------------------------------
    @staticmethod
    def _target(path: str, scope: Scope) -> tuple[str, str, str] | None:
        """(namespace, deployment, path at the replica) of a deployment's path, else None.

        The gateway's own paths come first, then the bare OIP paths: a namespace named ``v1``
        or ``v2`` is reached only through them."""
        if path in SERVER_PATHS:
            return None
        if path.startswith("/v2/models/") or path.startswith("/v1/models/"):
            model = path[len("/v2/models/") :].split("/", 1)[0].split(":", 1)[0]
            namespace = next((v.decode() for k, v in scope["headers"] if k == NAMESPACE_HEADER), "")
            return namespace, model, path
        parts = path.split("/", 3)
        if len(parts) == 4 and parts[1] and parts[2] and parts[3]:
            return parts[1], parts[2], "/" + parts[3]
        return None

    def _admit(
        self, scope: Scope, namespace: str, deployment: str
    ) -> tuple[DeploymentRoute, dict[bytes, bytes], str]:
        headers = dict(scope["headers"])
        if not namespace:
            raise _Reject(
                400,
                "no namespace: call /{namespace}/{deployment}/v2/... or send the "
                "X-Modelyard-Namespace header with the bare OIP path",
            )
        table = self.routes.table
        authorization = headers.get(b"authorization", b"").decode()
        token = authorization[7:] if authorization[:7].lower() == "bearer " else None
        denied = table.authorize(token, namespace)
        if denied is not None:
            raise _Reject(*denied)
        route = table.deployments.get(f"{namespace}/{deployment}")
        if route is None:
            raise _Reject(
                404,
                f"deployment {namespace}/{deployment} does not exist: list them with "
                f"'modelyard deployments list {namespace}'",
            )
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > route.max_body_bytes:
            raise _Reject(413, _too_large(route.max_body_bytes))
        return route, headers, token.split("_", 2)[1] if token else "-"

    async def _forward(
        self,
        route: DeploymentRoute,
        headers: dict[bytes, bytes],
        method: str,
        path: str,
        body: bytes,
        query: bytes,
    ) -> tuple[RevisionRoute, Response]:
        tag = headers.get(TAG_HEADER)
        forwarded = [(k, v) for k, v in headers.items() if k in FORWARDED]
        if query:
            path = f"{path}?{query.decode()}"
        deadline = time.monotonic() + route.timeout_s
        sticky = headers.get(route.sticky_header) if route.sticky_header else None
        revision = await self._revision(route, tag.decode() if tag else None, sticky, deadline)
        try:
            answer = await self._send(route, revision, forwarded, method, path, body, deadline)
            return revision, answer
        except _Reject as reject:
            reject.revision = revision
            raise

    async def _send(
        self,
        route: DeploymentRoute,
        revision: RevisionRoute,
        forwarded: list[tuple[bytes, bytes]],
        method: str,
        path: str,
        body: bytes,
        deadline: float,
    ) -> Response:
        """Send to the least busy ready replica of ``revision``, once more on another when the
        connection failed; ``deadline`` covers the whole request, waiting for a revision too."""
        self.concurrency.begin(revision.id)
        labels = (route.namespace, route.name, revision.name)
        self.metrics.in_flight[labels] += 1
        try:
            tried: set[int] = set()
            for attempt in range(2):
                endpoint = await self._endpoint(route, revision, tried, deadline)
                tried.add(id(endpoint))
                endpoint.outstanding += 1
                try:
                    return await endpoint.send(
                        method, path, forwarded, body, revision.token_line, deadline
                    )
                except UpstreamTimeout:
                    raise _Reject(
                        504, f"no answer within {route.timeout_s} s (the deployment's timeout_s)"
                    ) from None
                except ConnectFailed as exc:
                    self._ejected[id(endpoint)] = time.monotonic() + EJECT_SECONDS
                    if attempt == 1:
                        raise _Reject(
                            502, f"no replica of {revision.name} answered: {exc}"
                        ) from exc
                    self.metrics.retries[labels] += 1
                except (ConnectionError, OSError) as exc:
                    raise _Reject(
                        502, f"replica of {revision.name} failed mid-answer: {exc}"
                    ) from exc
                finally:
                    endpoint.outstanding -= 1
            raise AssertionError("unreachable")
        finally:
            self.concurrency.end(revision.id)
            self.metrics.in_flight[labels] -= 1

    async def _revision(
        self, route: DeploymentRoute, tag: str | None, sticky: bytes | None, deadline: float
    ) -> RevisionRoute:
        """The revision to send to; while a new deployment's first revision is still starting,
        the request waits for it (a slower answer, not an error)."""
        key = f"{route.namespace}/{route.name}"
        while True:
            revision = route.pick(tag, sticky)
            if revision is not None:
                return revision
            if tag is not None:
                raise _Reject(404, f"deployment {key} has no revision tagged {tag!r}")
            if not route.deploying or time.monotonic() >= deadline:
                raise _Reject(503, f"deployment {key}: {route.status}")
            await self.routes.changed(min(1.0, deadline - time.monotonic()))
            route = self.routes.table.deployments.get(key, route)

    async def _endpoint(
        self, route: DeploymentRoute, revision: RevisionRoute, tried: set[int], deadline: float
    ) -> Endpoint:
        """The ready replica with the fewest outstanding requests; waits (bounded) for one when
        the revision has none, which is how a request for a revision at zero goes through."""
        key = f"{route.namespace}/{route.name}"
        waited = False
        while True:
            now = time.monotonic()
            candidates = [
                e
                for e in revision.endpoints
                if id(e) not in tried and self._ejected.get(id(e), 0.0) <= now
            ]
            if candidates:
                if waited:
                    self.metrics.cold_starts[(route.namespace, route.name)] += 1
                return min(candidates, key=lambda e: e.outstanding)
            if self.waiting[key] >= self.max_waiting:
                raise _Reject(
                    503, f"{self.max_waiting} requests already wait for {key}: retry later"
                )
            self.routes.want(revision.id)
            self.waiting[key] += 1
            waited = True
            try:
                arrived = await self.routes.changed(min(1.0, deadline - now))
            finally:
                self.waiting[key] -= 1
            if not arrived and time.monotonic() >= deadline:
                raise _Reject(
                    504, f"no replica of {revision.name} got ready within {route.timeout_s} s"
                )
            fresh = self.routes.table.deployments.get(key)
            if fresh is not None:
                revision = next((r for r in fresh.revisions if r.id == revision.id), revision)

    async def _shadow(
        self,
        route: DeploymentRoute,
        shadow: RevisionRoute,
        headers: dict[bytes, bytes],
        request: tuple[str, str, bytes, bytes],
        primary: Response,
    ) -> None:
        """Send a copy of an answered request to the shadow revision and compare the answers;
        the client never waits for it and never sees it. A shadow at zero replicas is asked to
        start and this copy is dropped rather than queued."""
        if not shadow.endpoints:
            self.routes.want(shadow.id)
            return
        method, path, body, query = request
        if query:
            path = f"{path}?{query.decode()}"
        forwarded = [(k, v) for k, v in headers.items() if k in FORWARDED]
        started = time.perf_counter()
        labels = (route.namespace, route.name, shadow.name)
        service: bytes | None = None
        try:
            deadline = time.monotonic() + route.timeout_s
            answer = await self._send(route, shadow, forwarded, method, path, body, deadline)
            status, same, service = answer.status, same_answer(primary, answer), answer.service
        except _Reject as reject:
            status, same = reject.status, False
        except Exception:  # a shadow must never take the gateway down
            log.exception("shadow request to %s failed", shadow.name)
            status, same = 500, False
        result = "error" if status >= 500 else "match" if same else "mismatch"
        self.metrics.shadow[(*labels, result)] += 1
        elapsed = time.perf_counter() - started
        self.window.observe(
            "",
            shadow.id,
            status,
            elapsed,
            mismatch=result == "mismatch",
            service_ms=parse_service_ms(service),
        )

    async def _local(self, method: str, path: str, send: Send) -> None:
        """The gateway's own routes: metrics, its health, and the OIP server routes, which
        answer for the gateway (ready: it holds a routing table it may serve from)."""
        if path in SERVER_PATHS and method not in ("GET", "HEAD"):
            message = f"method {method} is not allowed on {path}: use GET"
            await _respond(send, 405, json.dumps({"error": message}).encode())
        elif path == "/metrics":
            exposition = self.metrics.render() + self.realtime.render_metrics()
            await _respond(send, 200, exposition, b"text/plain; version=0.0.4")
        elif path == "/healthz":
            body = {"live": True, "ready": True, "table_version": self.routes.table.version}
            await _respond(send, 200, json.dumps(body).encode())
        elif path == "/v2/health/live":
            await _respond(send, 200, b'{"live": true}')
        elif path == "/v2/health/ready":
            ready = self.routes.current and self.routes.table.version > 0
            body = {"ready": ready, "table_version": self.routes.table.version}
            await _respond(send, 200 if ready else 503, json.dumps(body).encode())
        elif path == "/v2":
            metadata = {"name": "modelyard", "version": __version__, "extensions": EXTENSIONS}
            await _respond(send, 200, json.dumps(metadata).encode())
        elif path == "/":
            await _respond(send, 200, b'{"status": "alive"}')  # KServe's v1 liveness
        else:
            message = f"no route {path}: call /{{namespace}}/{{deployment}}/v2/models/..."
            await _respond(send, 404, json.dumps({"error": message}).encode())


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # nginx's 499: the client left before its body was whole; nothing is forwarded
            raise _Reject(499, "the client closed the connection before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _Reject(413, _too_large(limit))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def same_answer(primary: Response, shadow: Response, rel: float = 1e-6) -> bool:
    """Whether two revisions answered alike: same status and, for JSON, the same outputs
    (``outputs`` of OIP v2, ``predictions`` of v1, else the whole document) with numbers equal up
    to ``rel``; fields that name the model version differ between revisions by design. Outputs
    sent as binary tensor data are compared byte for byte."""
    if primary.status != shadow.status:
        return False
    if primary.body == shadow.body:
        return True
    (a_json, a_data), (b_json, b_data) = _split(primary), _split(shadow)
    if a_data != b_data:
        return False
    try:
        a, b = json.loads(a_json), json.loads(b_json)
    except ValueError:
        return False
    for field in ("outputs", "predictions"):
        if isinstance(a, dict) and isinstance(b, dict) and field in a:
            a, b = a.get(field), b.get(field)
            if field == "outputs":
                a, b = _tensors(a), _tensors(b)
            break
    return _close(a, b, rel)


def _split(response: Response) -> tuple[bytes, bytes]:
    """An answer's JSON document and the binary tensor data after it, if any."""
    for name, value in response.headers:
        if name.lower() == BINARY_HEADER and value.isdigit():
            return response.body[: int(value)], response.body[int(value) :]
    return response.body, b""


def _tensors(outputs: Any) -> Any:
    if not isinstance(outputs, list):
        return outputs
    return [{"name": o.get("name"), "data": o.get("data")} for o in outputs if isinstance(o, dict)]


def _close(a: Any, b: Any, rel: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a == b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return bool(abs(a - b) <= rel * max(abs(a), abs(b), 1e-12))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    return bool(a == b)


def _too_large(limit: int) -> str:
    return (
        f"request body over {limit} bytes, this deployment's max_body_mb: send fewer rows per "
        "request or raise max_body_mb"
    )


def _content_type(response: Response) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The answer's content type, and its headers that go back to the client (PASSED_BACK)."""
    content_type = b"application/json"
    passed = []
    for name, value in response.headers:
        lower = name.lower()
        if lower == b"content-type":
            content_type = value
        elif lower in PASSED_BACK:
            passed.append((lower, value))
    return content_type, passed


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    revision: str | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if revision is not None:
        headers.append((b"x-modelyard-revision", revision.encode()))
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
