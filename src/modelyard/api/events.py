"""The event stream (server-sent events) and webhook registration."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from modelyard.api.deps import Caller, Plane
from modelyard.errors import NotFound
from modelyard.events.records import Event, Webhook
from modelyard.events.webhooks import check_pattern
from modelyard.types import Role

router = APIRouter()
HEARTBEAT_SECONDS = 15.0
MAX_ID = 2**63 - 1


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2000)
    events: list[str] = Field(
        default=["*"],
        max_length=50,
        description="Event type patterns: 'model.*', '*', or exact types",
    )


class WebhookCreated(BaseModel):
    webhook: Webhook
    secret: str = Field(description="HMAC-SHA256 signing secret; shown only this once")


def _sse(event: Event) -> bytes:
    data = json.dumps(event.to_dict(), separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


@router.get(
    "/events",
    tags=["events"],
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "One SSE message per event: id, event (type), data (JSON)",
        }
    },
)
async def stream_events(
    request: Request,
    plane: Plane,
    caller: Caller,
    after: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_ID,
            description="Start after this id (default: now; with follow=false, the beginning)",
        ),
    ] = None,
    type: Annotated[list[str] | None, Query(description="Type patterns, e.g. model.*")] = None,
    follow: Annotated[bool, Query(description="Keep the stream open for new events")] = True,
    last: Annotated[
        int | None,
        Query(
            ge=1,
            le=100_000,
            description="Without after / Last-Event-ID: start with the newest N events that "
            "match the type filter",
        ),
    ] = None,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_ID)] = None,
) -> StreamingResponse:
    """Events of the namespaces this key may read, in order; resumable with Last-Event-ID."""
    visible = caller.visible_namespaces()
    types = type or []
    for pattern in types:
        check_pattern(pattern)
    start = last_event_id if last_event_id is not None else after
    if start is None and last is not None:
        start = await run_in_threadpool(plane.events.before_last, last, types, visible)
    if start is None and not follow:
        # Nothing to wait for and no start given: the backlog is the whole log (a stream that
        # began now and did not follow would end empty, always).
        start = 0
    if start is None:
        start = await run_in_threadpool(plane.events.last_id)
    # The first read happens before the response starts, so its errors are plain error answers.
    first = await run_in_threadpool(plane.events.scan, start, 500, types, visible)
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()

    def wake(_event_id: int) -> None:
        loop.call_soon_threadsafe(woken.set)

    async def generate() -> AsyncIterator[bytes]:
        unsubscribe = plane.events.subscribe(wake)
        woken.set()  # read once more after subscribing: nothing committed in between is missed
        try:
            batch, cursor, more = first
            while True:
                for event in batch:
                    yield _sse(event)
                if not more:
                    if not follow or await request.is_disconnected():
                        return
                    try:
                        await asyncio.wait_for(woken.wait(), HEARTBEAT_SECONDS)
                    except TimeoutError:
                        yield b": keepalive\n\n"
                woken.clear()
                batch, cursor, more = await run_in_threadpool(
                    plane.events.scan, cursor, 500, types, visible
                )
        finally:
            unsubscribe()

    return StreamingResponse(
        generate(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/events/cursor", tags=["events"])
def event_cursor(plane: Plane, caller: Caller) -> dict[str, int]:
    """The newest event id: stream with ``after`` set to it to see only what happens next."""
    return {"last_id": plane.events.last_id()}


@router.post("/namespaces/{namespace}/webhooks", status_code=201, tags=["events"])
def create_webhook(
    namespace: str, body: WebhookCreate, plane: Plane, caller: Caller
) -> WebhookCreated:
    caller.require(namespace, Role.ADMIN)
    hook, secret = plane.webhooks.create(namespace, body.url, body.events, actor=caller.key_id)
    return WebhookCreated(webhook=hook, secret=secret)


@router.get("/namespaces/{namespace}/webhooks", tags=["events"])
def list_webhooks(namespace: str, plane: Plane, caller: Caller) -> list[Webhook]:
    caller.require(namespace, Role.ADMIN)
    return plane.webhooks.list_hooks(namespace)


@router.delete("/namespaces/{namespace}/webhooks/{webhook_id}", status_code=204, tags=["events"])
def delete_webhook(namespace: str, webhook_id: str, plane: Plane, caller: Caller) -> None:
    caller.require(namespace, Role.ADMIN)
    plane.webhooks.delete(namespace, webhook_id, actor=caller.key_id)


@router.get("/namespaces/{namespace}/webhooks/{webhook_id}/deliveries", tags=["events"])
def list_deliveries(
    namespace: str, webhook_id: str, plane: Plane, caller: Caller
) -> list[dict[str, Any]]:
    caller.require(namespace, Role.ADMIN)
    if webhook_id not in {h.id for h in plane.webhooks.list_hooks(namespace)}:
        raise NotFound(f"webhook {webhook_id!r} does not exist in {namespace!r}")
    return plane.webhooks.deliveries(webhook_id)
