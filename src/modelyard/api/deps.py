"""Dependencies every route uses: the services and the calling key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from modelyard.auth.keys import Principal
from modelyard.controlplane import ControlPlane
from modelyard.errors import Unauthenticated

_bearer = HTTPBearer(auto_error=False, description="An API key: my_<id>_<secret>")


async def plane(request: Request) -> ControlPlane:
    # async: FastAPI would run a plain function in the thread pool, a hop per request for a lookup.
    cp: ControlPlane = request.app.state.plane
    return cp


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        if request.headers.get("authorization"):
            raise Unauthenticated("malformed Authorization header: use 'Bearer <key>'")
        raise Unauthenticated(
            "no API key: send 'Authorization: Bearer <key>' (the CLI reads MODELYARD_API_KEY)"
        )
    cp: ControlPlane = request.app.state.plane
    token = credentials.credentials
    # A key seen a moment ago is checked without the database, here on the event loop; only a
    # lookup that reads the database goes to the thread pool.
    who = cp.keys.recall(token)
    if who is None:
        who = await run_in_threadpool(cp.keys.authenticate, token)
    request.state.actor = who.key_id
    return who


Plane = Annotated[ControlPlane, Depends(plane)]
Caller = Annotated[Principal, Depends(principal)]
