"""The deployment page's live log panel: its replicas' lines as server-sent events, merged in
time order (`modelyard.serving.deployment_logs`, the same lines the API and the CLI show).

It starts with the last ``TAIL`` lines, then follows. Each event's id is its line's time: the
browser's EventSource resumes after a dropped connection with Last-Event-ID, and the page sends
``after`` when it reconnects by itself (a tab shown again); lines up to that time are not sent
again. The browser sets each line as text, never as markup.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from modelyard.serving.deployment_logs import batches, open_logs
from modelyard.serving.logs import parse_time, stamp
from modelyard.types import Role
from modelyard.ui.web import UiRoute, Viewer, plane_of, still_signed_in, viewer

router = APIRouter(route_class=UiRoute, include_in_schema=False)
TAIL = 200


def _time(value: str | None) -> dt.datetime | None:
    try:
        return parse_time(value) if value else None
    except ValueError:
        return None


@router.get("/live/logs")
async def logs(
    request: Request,
    who: Annotated[Viewer, Depends(viewer)],
    ns: Annotated[str, Query(max_length=63)],
    deployment: Annotated[str, Query(max_length=63)],
    after: Annotated[str | None, Query(max_length=40)] = None,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> StreamingResponse:
    who.principal.require(ns, Role.VIEWER)
    plane = plane_of(request)
    resume = _time(last_event_id) or _time(after)
    first, lines = await run_in_threadpool(
        lambda: open_logs(
            plane.deployments,
            plane.orchestrator,
            ns,
            deployment,
            since=stamp(resume) if resume else None,
            tail=None if resume else TAIL,
            follow=True,
        )
    )

    async def generate() -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        async for batch in batches(first, lines, request.is_disconnected):
            events = []
            for line in batch:
                if resume is not None and line.time <= resume:
                    continue  # sent before the connection dropped
                when = stamp(line.time)
                data = json.dumps({"time": when, "replica": line.replica, "text": line.text})
                events.append(f"id: {when}\nevent: log\ndata: {data}\n\n")
            if events:
                yield "".join(events).encode()
            # A revoked key ends its open log panels too.
            if not await still_signed_in(request):
                yield b"event: signedout\ndata: {}\n\n"
                return

    return StreamingResponse(
        generate(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
