"""A deployment's logs: what its replicas wrote, merged across replicas in time order, followed
live on request, from whichever orchestrator runs them (`Orchestrator.logs`).

``GET /namespaces/{ns}/deployments/{name}/logs`` answers ``text/plain``, one line per log line:
``TIME REPLICA TEXT`` (RFC 3339 UTC time with microseconds, the replica's id, the text as the
replica wrote it; `modelyard.serving.logs.LogLine.parse` reads it back). With ``follow=true`` the
response stays open and new lines come as they are written, until the client disconnects. The
dashboard streams the same lines as server-sent events (`modelyard.ui.logs`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from modelyard.api.deps import Caller, Plane
from modelyard.serving.deployment_logs import batches, open_logs
from modelyard.types import Role

router = APIRouter(prefix="/namespaces/{namespace}/deployments", tags=["deployments"])
MAX_TAIL = 100_000


@router.get(
    "/{name}/logs",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}}}},
)
async def deployment_logs(
    namespace: str,
    name: str,
    request: Request,
    plane: Plane,
    caller: Caller,
    revision: Annotated[int | None, Query(ge=1, description="Only this revision")] = None,
    replica: Annotated[str | None, Query(max_length=253, description="Only this replica")] = None,
    since: Annotated[
        str | None, Query(max_length=64, description="30s, 10m, 2h, 1d or an ISO 8601 time")
    ] = None,
    tail: Annotated[int | None, Query(ge=0, le=MAX_TAIL, description="The last N lines")] = None,
    follow: bool = False,
) -> StreamingResponse:
    """The replicas' log lines, ``TIME REPLICA TEXT`` each, merged in time order; ``follow``
    streams new ones until the client disconnects."""
    caller.require(namespace, Role.VIEWER)
    first, lines = await run_in_threadpool(
        lambda: open_logs(
            plane.deployments,
            plane.orchestrator,
            namespace,
            name,
            revision=revision,
            replica=replica,
            since=since,
            tail=tail,
            follow=follow,
        )
    )

    async def text() -> AsyncIterator[bytes]:
        async for batch in batches(first, lines, request.is_disconnected):
            if batch:
                yield "".join(line.format() + "\n" for line in batch).encode()

    return StreamingResponse(
        text(),
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
