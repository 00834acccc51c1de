"""Dependencies every route uses: the services and the calling key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from modelyard.auth.keys import Principal
from modelyard.controlplane import ControlPlane
from modelyard.errors import Unauthenticated

_bearer = HTTPBearer(auto_error=False, description="An API key: my_<id>_<secret>")


def plane(request: Request) -> ControlPlane:
    cp: ControlPlane = request.app.state.plane
    return cp


def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        if request.headers.get("authorization"):
            raise Unauthenticated("malformed Authorization header: use 'Bearer <key>'")
        raise Unauthenticated(
            "no API key: send 'Authorization: Bearer <key>' (the CLI reads MODELYARD_API_KEY)"
        )
    who = plane(request).keys.authenticate(credentials.credentials)
    request.state.actor = who.key_id
    return who


Plane = Annotated[ControlPlane, Depends(plane)]
Caller = Annotated[Principal, Depends(principal)]
