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

Which handler answers which path is one table, built in `Gateway.__init__`
(`modelyard.gateway.dispatch`). Rejections are `modelyard.errors` classes (their ``http_status``),
written as OIP writes errors, ``{"error": "<message>"}``; the realtime handlers write theirs as
the control plane's API does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from modelyard import __version__
from modelyard.errors import (
    BadRequest,
    MethodNotAllowed,
    ModelyardError,
    NotFound,
    PayloadTooLarge,
    TimedOut,
    Unavailable,
    UpstreamFailed,
)
from modelyard.gateway.dispatch import Dispatch
from modelyard.gateway.metrics import Concurrency, Metrics
from modelyard.gateway.routes import DeploymentRoute, RevisionRoute, Routes
from modelyard.gateway.upstream import ConnectFailed, Endpoint, Response, UpstreamTimeout
from modelyard.realtime.ingest import RealtimeRoutes
from modelyard.serving.asgi import JSON, App, Receive, Scope, Send, bearer, read_body, respond
from modelyard.serving.replica_headers import parse_service_ms
from modelyard.telemetry.window import Window

access_log = logging.getLogger("modelyard.gateway.access")
log = logging.getLogger(__name__)
MAX_WAITING = 1000
EXTENSIONS = ["binary_tensor_data"]
EJECT_SECONDS = 5.0
NAMESPACE_HEADER = b"x-modelyard-namespace"
TAG_HEADER = b"x-modelyard-tag"
REVISION_HEADER = b"x-modelyard-revision"
BINARY_HEADER = b"inference-header-content-length"
"""OIP's binary tensor data extension: where the JSON ends in a body with tensors after it."""
FORWARDED = (b"content-type", b"accept", b"x-request-id", b"traceparent", BINARY_HEADER)
PASSED_BACK = (BINARY_HEADER,)
"""Headers of a replica's answer that go back to the client, besides its content type."""
TOO_LARGE = ", this deployment's max_body_mb: send fewer rows per request or raise max_body_mb"
"""What a 413 advises, after "request body over N bytes"."""
Answer = tuple[int, bytes, bytes]
"""A gateway's own route's status, body and content type."""


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
        # One lag sample per report for the lag SLOs (`modelyard.telemetry.window.Window.lags`).
        self.window.lags = lambda: {
            name: (lag.events, lag.oldest_s)
            for name, lag in (self.realtime.probe.lags if self.realtime.probe else {}).items()
        }
        # The one place that says which handler answers which path (`modelyard.gateway.dispatch`).
        # The gateway's own routes answer with or without a namespace header: an OIP client asks
        # its server's health and metadata of the URL it was given, which is the gateway's.
        self.dispatch = Dispatch(default=self._deployment)
        own: dict[str, Callable[[], Answer]] = {
            "/": lambda: (200, b'{"status": "alive"}', JSON),  # KServe's v1 liveness
            "/healthz": self._health,
            "/metrics": self._metrics,
            "/v2": self._server_metadata,
            "/v2/health/live": lambda: (200, b'{"live": true}', JSON),
            "/v2/health/ready": self._ready,
        }
        for path, answer in own.items():
            self.dispatch.exact(path, _own_route(path, answer))
        self.dispatch.segment("streams", self.realtime.handle_streams)  # ingest, an entity's events
        self.dispatch.segment("predictions", self.realtime.handle_predictions)  # prediction reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        await self.dispatch.handler(scope["path"])(scope, receive, send)

    # deployments --------------------------------------------------------------------------------
    async def _deployment(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The default handler: a deployment's path, which goes to one of its replicas."""
        started = time.perf_counter()
        path: str = scope["path"]
        target = self._target(path, scope)
        if target is None:
            message = f"no route {path}: call /{{namespace}}/{{deployment}}/v2/models/..."
            await respond(send, NotFound.http_status, json.dumps({"error": message}).encode())
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
            body = await read_body(receive, route.max_body_bytes, TOO_LARGE)
            # A HEAD goes on as a GET (serving.http drops the body here): the parser of the
            # replica's answer would wait for the body a HEAD's answer announces but never sends.
            method = "GET" if scope["method"] == "HEAD" else scope["method"]
            query: bytes = scope["query_string"]
            deadline = time.monotonic() + route.timeout_s
            tag = headers.get(TAG_HEADER)
            sticky = headers.get(route.sticky_header) if route.sticky_header else None
            revision = await self._revision(route, tag.decode() if tag else None, sticky, deadline)
            forwarded = [(k, v) for k, v in headers.items() if k in FORWARDED]
            sent_path = f"{upstream_path}?{query.decode()}" if query else upstream_path
            response = await self._send(
                route, revision, forwarded, method, sent_path, body, deadline
            )
            status, service = response.status, response.service
            content_type, passed = _content_type(response, revision.name)
            await respond(send, status, response.body, content_type, passed)
            shadow = route.shadow
            if shadow is not None and random.random() * 100 < shadow.percent:
                copy = self._shadow(route, shadow, forwarded, (method, sent_path, body), response)
                task = asyncio.create_task(copy)
                self._shadows.add(task)
                task.add_done_callback(self._shadows.discard)
        except ModelyardError as reject:  # OIP's error body: {"error": "<message>"}
            status = reject.http_status
            await respond(send, status, json.dumps({"error": reject.message}).encode())
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

    @staticmethod
    def _target(path: str, scope: Scope) -> tuple[str, str, str] | None:
        """(namespace, deployment, path at the replica) of a deployment's path, else None.

        The gateway's own paths were dispatched before, then come the bare OIP paths: a
        namespace named ``v1`` or ``v2`` is reached only through them."""
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
            raise BadRequest(
                "no namespace: call /{namespace}/{deployment}/v2/... or send the "
                "X-Modelyard-Namespace header with the bare OIP path"
            )
        table = self.routes.table
        token = bearer(headers.get(b"authorization"))
        table.require(token, namespace)
        route = table.deployments.get(f"{namespace}/{deployment}")
        if route is None:
            raise NotFound(
                f"deployment {namespace}/{deployment} does not exist: list them with "
                f"'modelyard deployments list {namespace}'"
            )
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > route.max_body_bytes:
            raise PayloadTooLarge(f"request body over {route.max_body_bytes} bytes{TOO_LARGE}")
        return route, headers, token.split("_", 2)[1] if token else "-"

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
                    raise TimedOut(
                        f"no answer within {route.timeout_s} s (the deployment's timeout_s)"
                    ) from None
                except ConnectFailed as exc:
                    self._ejected[id(endpoint)] = time.monotonic() + EJECT_SECONDS
                    if attempt == 1:
                        raise UpstreamFailed(
                            f"no replica of {revision.name} answered: {exc}"
                        ) from exc
                    self.metrics.retries[labels] += 1
                except (ConnectionError, OSError) as exc:
                    raise UpstreamFailed(
                        f"replica of {revision.name} failed mid-answer: {exc}"
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
                raise NotFound(f"deployment {key} has no revision tagged {tag!r}")
            if not route.deploying or time.monotonic() >= deadline:
                raise Unavailable(f"deployment {key}: {route.status}")
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
                raise Unavailable(
                    f"{self.max_waiting} requests already wait for {key}: retry later"
                )
            self.routes.want(revision.id)
            self.waiting[key] += 1
            waited = True
            try:
                arrived = await self.routes.changed(min(1.0, deadline - now))
            finally:
                self.waiting[key] -= 1
            if not arrived and time.monotonic() >= deadline:
                raise TimedOut(
                    f"no replica of {revision.name} got ready within {route.timeout_s} s"
                )
            fresh = self.routes.table.deployments.get(key)
            if fresh is not None:
                revision = next((r for r in fresh.revisions if r.id == revision.id), revision)

    async def _shadow(
        self,
        route: DeploymentRoute,
        shadow: RevisionRoute,
        forwarded: list[tuple[bytes, bytes]],
        request: tuple[str, str, bytes],
        primary: Response,
    ) -> None:
        """Send a copy of an answered request to the shadow revision and compare the answers;
        the client never waits for it and never sees it. A shadow at zero replicas is asked to
        start and this copy is dropped rather than queued."""
        if not shadow.endpoints:
            self.routes.want(shadow.id)
            return
        method, path, body = request
        started = time.perf_counter()
        labels = (route.namespace, route.name, shadow.name)
        service: bytes | None = None
        try:
            deadline = time.monotonic() + route.timeout_s
            answer = await self._send(route, shadow, forwarded, method, path, body, deadline)
            status, same, service = answer.status, same_answer(primary, answer), answer.service
        except ModelyardError as reject:
            status, same = reject.http_status, False
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

    # the gateway's own routes --------------------------------------------------------------------
    def _metrics(self) -> Answer:
        exposition = self.metrics.render() + self.realtime.render_metrics()
        return 200, exposition, b"text/plain; version=0.0.4"

    def _health(self) -> Answer:
        body = {"live": True, "ready": True, "table_version": self.routes.table.version}
        return 200, json.dumps(body).encode(), JSON

    def _ready(self) -> Answer:
        """OIP's server readiness: ready once it holds a routing table it may serve from."""
        ready = self.routes.current and self.routes.table.version > 0
        body = {"ready": ready, "table_version": self.routes.table.version}
        return 200 if ready else 503, json.dumps(body).encode(), JSON

    @staticmethod
    def _server_metadata() -> Answer:
        metadata = {"name": "modelyard", "version": __version__, "extensions": EXTENSIONS}
        return 200, json.dumps(metadata).encode(), JSON


def _own_route(path: str, answer: Callable[[], Answer]) -> App:
    """The handler of one of the gateway's own paths: ``answer`` to a GET (or HEAD), else 405."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            message = f"method {method} is not allowed on {path}: use GET"
            body = json.dumps({"error": message}).encode()
            await respond(send, MethodNotAllowed.http_status, body)
            return
        status, body, content_type = answer()
        await respond(send, status, body, content_type)

    return handle


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


def _content_type(response: Response, revision: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The answer's content type, and the headers that go back to the client: the revision
    that answered, and the answer's PASSED_BACK ones."""
    content_type = JSON
    passed = [(REVISION_HEADER, revision.encode())]
    for name, value in response.headers:
        lower = name.lower()
        if lower == b"content-type":
            content_type = value
        elif lower in PASSED_BACK:
            passed.append((lower, value))
    return content_type, passed


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
