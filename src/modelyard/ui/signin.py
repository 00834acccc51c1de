"""Sign-in (an API key exchanged for a session), sign-out, and the dashboard's static files."""

from __future__ import annotations

import secrets
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from modelyard.errors import Forbidden, NotFound, Unauthenticated
from modelyard.ui.web import (
    COOKIE,
    PREFIX,
    SIGNIN_COOKIE,
    UiRoute,
    Viewer,
    form,
    plane_of,
    render,
    same,
    sessions,
    viewer,
)

router = APIRouter(route_class=UiRoute, include_in_schema=False)
STATIC = {"app.js": "text/javascript", "app.css": "text/css"}


def _next(target: str | None) -> str:
    """Where to go after sign-in: a dashboard path only (never another host)."""
    if target and target.startswith(f"{PREFIX}/") and not target.startswith("//"):
        return target
    return PREFIX


def _cookie(response: Response, request: Request, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


@router.get("/signin")
async def signin_form(request: Request, next: str = PREFIX) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(request, "signin.html", csrf=token, next=_next(next), error=None)
    _cookie(response, request, SIGNIN_COOKIE, token)
    return response


@router.post("/signin")
async def signin(request: Request) -> Response:
    fields = await form(request)
    if not same(request.cookies.get(SIGNIN_COOKIE), fields.get("csrf")):
        raise Forbidden("the sign-in form expired or came from another site: reload and retry")
    token = fields.get("key", "").strip()
    keys = plane_of(request).keys
    try:
        who = await run_in_threadpool(keys.authenticate, token)
    except Unauthenticated as exc:
        csrf = secrets.token_urlsafe(32)
        refused = render(
            request,
            "signin.html",
            status=401,
            csrf=csrf,
            next=_next(fields.get("next")),
            error=exc.message,
        )
        _cookie(refused, request, SIGNIN_COOKIE, csrf)
        return refused
    session_token, _ = await run_in_threadpool(sessions(request).open, who.key_id)
    response = RedirectResponse(_next(fields.get("next")), status_code=303)
    _cookie(response, request, COOKIE, session_token)
    response.delete_cookie(SIGNIN_COOKIE, path=PREFIX)
    return response


@router.post("/signout")
async def signout(request: Request, who: Annotated[Viewer, Depends(viewer)]) -> Response:
    fields = await form(request)
    if not same(who.session.csrf, fields.get("csrf")):
        raise Forbidden("missing or wrong CSRF token: reload the page and retry")
    await run_in_threadpool(sessions(request).close, who.session.id)
    response = RedirectResponse(f"{PREFIX}/signin", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        raise NotFound(f"no static file {name!r}")
    body = resources.files("modelyard.ui").joinpath("static", name).read_bytes()
    return Response(body, media_type=STATIC[name])
