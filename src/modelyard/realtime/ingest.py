"""The gateway's realtime routes: events in, predictions out (the data plane; no control plane).

- ``POST /{namespace}/streams/{stream}/events``: one JSON event, a JSON array or NDJSON, with a
  key holding ``producer`` (or editor, admin). Every event is checked first; one bad event refuses
  the whole batch (422 naming its index and the problem, 400 for a body that is not JSON;
  nothing of the batch is stored). The answer comes once the batch is durable in the event
  store: ``{"accepted", "stored", "duplicates"}`` (duplicates: ids the log held already,
  which collapse into the stored event).
  Requests arriving together are committed together (one transaction, one fsync), each still
  all-or-nothing. Beyond the configured lag of a deployment reading the stream: 429 with
  ``Retry-After``, nothing stored.
- ``GET /{namespace}/streams/{stream}/entities/{entity}/events?limit=N``: an entity's events in
  log order, for people debugging (viewer role).
- ``GET /{namespace}/predictions/{deployment}/{entity}``: the entity's latest prediction;
  ``.../{entity}/history`` its predictions, newest first; ``GET /{namespace}/predictions/
  {deployment}?entity=a&entity=b`` or ``POST`` ``{"entities": [...]}``: several at once. Any role
  (invoker and up).

Streams, realtime deployments and the stores' URLs come with the routing table.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson

from modelyard.errors import InvalidInput, ModelyardError, NotFound, Overloaded
from modelyard.gateway.routes import Routes
from modelyard.realtime.backends import open_event_store, open_prediction_store, open_trigger_queue
from modelyard.realtime.eventstore import EventStore
from modelyard.realtime.lag import DEFAULT_MAX_LAG, Backpressure, LagProbe
from modelyard.realtime.predictions import PredictionStore
from modelyard.realtime.shadow import shadow_key
from modelyard.realtime.streams import NewEvent, StreamSpec, parse_events
from modelyard.serving.asgi import Receive, Scope, Send, bearer, read_body, respond
from modelyard.types import Role

log = logging.getLogger(__name__)
_Handle = Callable[[Scope, Receive], Awaitable[bytes]]
MAX_BODY_BYTES = 32 * 1024 * 1024
TOO_LARGE = ": send the events in several requests"
MAX_GROUP = 64
"""Requests committed in one transaction at most."""


@dataclass
class _Pending:
    stream: str
    events: list[NewEvent]
    done: asyncio.Future[list[bool]]


class RealtimeRoutes:
    """The ASGI handlers of the realtime paths, `handle_streams` and `handle_predictions`, to
    which the gateway's dispatch table hands their requests (`modelyard.gateway.dispatch`)."""

    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        self._urls: tuple[str, str, str] | None = None
        self.events: EventStore | None = None
        self.predictions: PredictionStore | None = None
        self.probe: LagProbe | None = None
        self.backpressure = Backpressure()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="realtime-ingest")
        self._pending: asyncio.Queue[_Pending] | None = None
        self._committer: asyncio.Task[None] | None = None
        self._specs: dict[str, tuple[dict[str, Any], StreamSpec]] = {}
        self.counts: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self._lock = threading.Lock()

    # dispatch -----------------------------------------------------------------------------------
    async def handle_streams(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The handler of ``/{namespace}/streams/...`` (`modelyard.gateway.dispatch`)."""
        await self._answer(self._streams, scope, receive, send)

    async def handle_predictions(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The handler of ``/{namespace}/predictions/...`` (`modelyard.gateway.dispatch`)."""
        await self._answer(self._prediction_reads, scope, receive, send)

    async def _answer(self, handle: _Handle, scope: Scope, receive: Receive, send: Send) -> None:
        """Runs ``handle`` and answers: its body, or the error it raised as the API writes it."""
        if not self.routes.current:
            await self.routes.settled()
        headers: list[tuple[bytes, bytes]] = []
        try:
            body = await handle(scope, receive)
            status = 200
        except ModelyardError as exc:
            status, body = exc.http_status, orjson.dumps({"error": exc.to_dict()})
            if isinstance(exc, Overloaded):
                headers = [(b"retry-after", str(exc.details.get("retry_after_s", 1)).encode())]
        except Exception:
            log.exception("realtime request %s %s failed", scope["method"], scope["path"])
            status = 500
            body = orjson.dumps({"error": {"code": "internal", "message": "see the gateway log"}})
        await respond(send, status, body, extra=headers)

    async def _streams(self, scope: Scope, receive: Receive) -> bytes:
        _, namespace, _, *rest = scope["path"].split("/")
        method = scope["method"]
        self.routes.table.require(
            _token(scope), namespace, Role.PRODUCER if method == "POST" else Role.VIEWER
        )
        self._open()
        if len(rest) == 2 and rest[1] == "events" and method == "POST":
            return await self._ingest(namespace, rest[0], receive)
        if len(rest) == 4 and rest[1] == "entities" and rest[3] == "events" and method == "GET":
            return self._entity_events(namespace, rest[0], rest[2], scope)
        raise _no_route(scope)

    async def _prediction_reads(self, scope: Scope, receive: Receive) -> bytes:
        _, namespace, _, *rest = scope["path"].split("/")
        self.routes.table.require(_token(scope), namespace, Role.INVOKER)
        self._open()
        if scope["method"] in ("GET", "POST") and rest:
            return await self._predictions(namespace, rest, scope, receive)
        raise _no_route(scope)

    # stores -------------------------------------------------------------------------------------
    def _open(self) -> None:
        config = self.routes.table.realtime
        stores = config.get("stores") or {}
        urls = (stores.get("events", ""), stores.get("queue", ""), stores.get("predictions", ""))
        if not all(urls):
            raise NotFound("this gateway has no realtime stores yet: is the control plane recent?")
        if urls != self._urls:
            self._urls = urls
            self.events = open_event_store(urls[0])
            self.predictions = open_prediction_store(urls[2])
            if self.probe is not None:
                self.probe.stop()
            self.probe = LagProbe(self.events, open_trigger_queue(urls[1]), self.routes)
            self.probe.start()
        self.backpressure = Backpressure(
            int(config.get("max_lag", DEFAULT_MAX_LAG)),
            float(config.get("max_lag_seconds", 0.0)),
        )

    def _spec(self, namespace: str, stream: str) -> StreamSpec:
        key = f"{namespace}/{stream}"
        data = self.routes.table.realtime.get("streams", {}).get(key)
        if data is None:
            raise NotFound(
                f"stream {key} does not exist: create it with 'modelyard streams create {key}'"
            )
        cached = self._specs.get(key)
        if cached is None or cached[0] is not data:
            cached = self._specs[key] = (data, StreamSpec.model_validate(data))
        return cached[1]

    # ingest -------------------------------------------------------------------------------------
    async def _ingest(self, namespace: str, stream: str, receive: Receive) -> bytes:
        spec = self._spec(namespace, stream)
        key = f"{namespace}/{stream}"
        if self.probe is not None:
            refused = self.backpressure.check(self.probe.lag_of_stream(key))
            if refused is not None:
                self.counts[(namespace, stream, "throttled")] += 1
                raise Overloaded(refused.message, retry_after_s=refused.retry_after_s)
        body = await read_body(receive, MAX_BODY_BYTES, TOO_LARGE)
        try:
            events = parse_events(body, spec, time.time())
        except InvalidInput as exc:
            self.counts[(namespace, stream, "rejected")] += 1
            raise type(exc)(
                f"{exc.message}; nothing of this request was stored", **exc.details
            ) from None
        stored = await self._commit(key, events)
        kept = sum(stored)
        self.counts[(namespace, stream, "stored")] += kept
        self.counts[(namespace, stream, "duplicate")] += len(stored) - kept
        duplicates = [e.event_id for e, s in zip(events, stored, strict=True) if not s]
        return orjson.dumps({"accepted": len(events), "stored": kept, "duplicates": duplicates})

    async def _commit(self, stream: str, events: list[NewEvent]) -> list[bool]:
        if self._pending is None:
            self._pending = asyncio.Queue()
            self._committer = asyncio.create_task(self._commit_loop())
        done: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        await self._pending.put(_Pending(stream, events, done))
        return await done

    async def _commit_loop(self) -> None:
        """Group commit: whatever requests wait when the writer is free go in one transaction
        per stream; each request's future resolves once that transaction is durable."""
        assert self._pending is not None
        loop = asyncio.get_running_loop()
        while True:
            group = [await self._pending.get()]
            while not self._pending.empty() and len(group) < MAX_GROUP:
                group.append(self._pending.get_nowait())
            by_stream: dict[str, list[_Pending]] = defaultdict(list)
            for item in group:
                by_stream[item.stream].append(item)
            for stream, items in by_stream.items():
                batch = [e for item in items for e in item.events]
                try:
                    flags = await loop.run_in_executor(self._writer, self._append, stream, batch)
                except Exception as exc:
                    for item in items:
                        if not item.done.done():
                            item.done.set_exception(exc)
                    continue
                start = 0
                for item in items:
                    if not item.done.done():
                        item.done.set_result(flags[start : start + len(item.events)])
                    start += len(item.events)

    def _append(self, stream: str, batch: list[NewEvent]) -> list[bool]:
        assert self.events is not None
        return self.events.append(stream, batch, time.time())

    # reads --------------------------------------------------------------------------------------
    def _entity_events(self, namespace: str, stream: str, entity: str, scope: Scope) -> bytes:
        self._spec(namespace, stream)
        assert self.events is not None
        limit = _int(_query(scope).get("limit", ["100"])[0], "limit", 1, 10_000)
        history = self.events.history(f"{namespace}/{stream}", entity, None, limit)
        return orjson.dumps({"entity": entity, "events": [e.to_dict() for e in history]})

    async def _predictions(
        self, namespace: str, rest: list[str], scope: Scope, receive: Receive
    ) -> bytes:
        deployment = f"{namespace}/{rest[0]}"
        known = self.routes.table.realtime.get("deployments", {}).get(deployment)
        if known is None:
            raise NotFound(
                f"realtime deployment {deployment} does not exist: list them with "
                f"'modelyard realtime list {namespace}'"
            )
        revision = _query(scope).get("revision", ["primary"])[0]
        if revision == "shadow":  # its predictions written aside, never served otherwise
            if not known.get("shadow"):
                raise NotFound(
                    f"{deployment} has no shadow revision now: under the shadow strategy a new "
                    "revision is one until promoted or rolled back"
                )
            deployment = shadow_key(deployment, int(known["shadow"]))
        elif revision != "primary":
            raise InvalidInput(f"revision={revision}: give revision=shadow, or leave it out")
        assert self.predictions is not None
        now = time.time()
        if len(rest) == 3 and rest[2] == "history":
            limit = _int(_query(scope).get("limit", ["100"])[0], "limit", 1, 10_000)
            past = self.predictions.history(deployment, rest[1], limit, now)
            return orjson.dumps({"entity": rest[1], "predictions": [p.to_dict() for p in past]})
        if len(rest) == 2:
            latest = self.predictions.latest(deployment, [rest[1]], now)
            if rest[1] not in latest:
                raise NotFound(f"no prediction for {rest[1]!r} in {deployment} (or it expired)")
            return orjson.dumps(latest[rest[1]].to_dict())
        if scope["method"] == "POST":
            body = orjson.loads(await read_body(receive, MAX_BODY_BYTES, TOO_LARGE) or b"{}")
            entities = body.get("entities") if isinstance(body, dict) else None
        else:
            entities = _query(scope).get("entity")
        if not isinstance(entities, list) or not entities or len(entities) > 1000:
            raise InvalidInput("give 1 to 1000 entities: ?entity=a&entity=b or {'entities': []}")
        found = self.predictions.latest(deployment, [str(e) for e in entities], now)
        return orjson.dumps({"predictions": {e: p.to_dict() for e, p in found.items()}})

    # metrics ------------------------------------------------------------------------------------
    def render_metrics(self) -> bytes:
        lines = [
            "# HELP modelyard_realtime_events_total Events received, by what became of them.",
            "# TYPE modelyard_realtime_events_total counter",
        ]
        for (ns, stream, result), value in sorted(self.counts.items()):
            lines.append(
                f'modelyard_realtime_events_total{{namespace="{ns}",stream="{stream}",'
                f'result="{result}"}} {value}'
            )
        if self.probe is not None:
            lines += self.probe.render()
        return ("\n".join(lines) + "\n").encode()


def _token(scope: Scope) -> str | None:
    return bearer(next((v for k, v in scope["headers"] if k == b"authorization"), None))


def _no_route(scope: Scope) -> NotFound:
    return NotFound(
        f"no realtime route {scope['method']} {scope['path']}: POST /{{namespace}}/streams/"
        "{stream}/events, GET /{namespace}/streams/{stream}/entities/{entity}/events, GET "
        "/{namespace}/predictions/{deployment}/{entity}"
    )


def _query(scope: Scope) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode())


def _int(text: str, what: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise InvalidInput(f"{what} must be a whole number from {low} to {high}")
    return int(text)
