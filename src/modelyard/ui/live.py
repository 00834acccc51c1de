"""The dashboard's live stream: the event log of the page's namespace, and the live rates of the
deployments it shows, as server-sent events on one connection per page.

Events carry their id, so the browser's EventSource resumes after a dropped connection (a tab
made hidden, a restarted control plane) with Last-Event-ID and misses none; ``rates`` messages
carry no id (they are a snapshot, sent when they change and at most once a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from modelyard.controlplane import ControlPlane
from modelyard.errors import ModelyardError
from modelyard.types import Role
from modelyard.ui import measured, realtime
from modelyard.ui.web import UiRoute, Viewer, plane_of, still_signed_in, viewer

router = APIRouter(route_class=UiRoute, include_in_schema=False)
RATES_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
MAX_ID = 2**63 - 1


def _rates(
    plane: ControlPlane, namespace: str, deployment: str | None, streams: bool
) -> dict[str, str]:
    shown: dict[str, str] = {}
    if streams:  # the realtime screen: its figures come from the realtime stores, not events
        with contextlib.suppress(ModelyardError):
            shown.update(realtime.values(realtime.figures(plane, namespace)))
    try:
        if deployment:
            infos = [plane.deployments.get(namespace, deployment)]
        else:
            infos = plane.deployments.list_deployments(namespace)
    except ModelyardError:  # deleted while the page is open: the page's refresh says so
        return shown
    for info in infos:
        shown.update(measured.deployment_rates(plane, info))
    return shown


@router.get("/live")
async def live(
    request: Request,
    who: Annotated[Viewer, Depends(viewer)],
    ns: Annotated[str | None, Query(max_length=63)] = None,
    deployment: Annotated[str | None, Query(max_length=63)] = None,
    streams: Annotated[bool, Query(alias="realtime")] = False,
    after: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_ID)] = None,
) -> StreamingResponse:
    plane = plane_of(request)
    if ns is not None:
        who.principal.require(ns, Role.VIEWER)
        visible: list[str] | None = [ns]
    else:
        visible = who.namespaces
    start = last_event_id if last_event_id is not None else after
    if start is None:
        start = await run_in_threadpool(plane.events.last_id)
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()

    def wake(_event_id: int) -> None:
        loop.call_soon_threadsafe(woken.set)

    async def generate() -> AsyncIterator[bytes]:
        unsubscribe = plane.events.subscribe(wake)
        cursor, quiet = start, 0.0
        sent: dict[str, str] = {}
        try:
            yield b"retry: 500\n\n"
            while True:
                more = True
                while more:
                    batch, cursor, more = await run_in_threadpool(
                        plane.events.scan, cursor, 500, (), visible
                    )
                    for event in batch:
                        data = json.dumps(event.to_dict(), separators=(",", ":"), default=str)
                        yield f"id: {event.id}\nevent: change\ndata: {data}\n\n".encode()
                if ns is not None:
                    rates = await run_in_threadpool(_rates, plane, ns, deployment, streams)
                    if rates != sent:
                        sent, quiet = rates, 0.0
                        yield f"event: rates\ndata: {json.dumps(rates)}\n\n".encode()
                if quiet >= HEARTBEAT_SECONDS:
                    quiet = 0.0
                    yield b": keepalive\n\n"
                if await request.is_disconnected():
                    return
                # A revoked key ends its open pages too.
                if not await still_signed_in(request):
                    yield b"event: signedout\ndata: {}\n\n"
                    return
                woken.clear()
                try:
                    await asyncio.wait_for(woken.wait(), RATES_SECONDS)
                except TimeoutError:
                    quiet += RATES_SECONDS
        finally:
            unsubscribe()

    return StreamingResponse(
        generate(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
