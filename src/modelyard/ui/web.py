"""What every dashboard route shares: templates, the session cookie, security headers, and the
edge where `ModelyardError` becomes an HTML page instead of the API's JSON body."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute

from modelyard.auth.keys import Principal
from modelyard.controlplane import ControlPlane
from modelyard.errors import InvalidInput, ModelyardError
from modelyard.ui.sessions import Session, Sessions

PREFIX = "/ui"
COOKIE = "modelyard_session"
SIGNIN_COOKIE = "modelyard_signin"
"""Double-submit token of the sign-in form (before there is a session to hold one)."""
MAX_FORM_BYTES = 64 * 1024
NONE = "\u2013"  # an en dash: no value
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class SignInRequired(Exception):
    """No live session: pages redirect to the sign-in form, the live stream answers 401."""


@dataclass(frozen=True)
class Viewer:
    """The signed-in browser: its session and the key's principal, authenticated again now."""

    session: Session
    principal: Principal
    cursor: int
    """The newest event id when the page was read: its live stream starts after it."""

    @property
    def namespaces(self) -> list[str] | None:
        return self.principal.visible_namespaces()


@functools.cache
def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("modelyard.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M:%S") if t else ""
    env.filters["num"] = lambda v, digits=2: NONE if v is None else f"{v:.{digits}f}"
    env.filters["pct"] = lambda v: NONE if v is None else f"{100 * v:.2f}%"
    env.filters["q"] = lambda v: quote(str(v), safe="")
    return env


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    viewer: Viewer | None = getattr(request.state, "viewer", None)
    html = templates().get_template(template).render(viewer=viewer, prefix=PREFIX, **context)
    return HTMLResponse(html, status_code=status)


def sessions(request: Request) -> Sessions:
    """The app's sessions (made by `modelyard.ui.mount`, kept in the control plane's database)."""
    found: Sessions = request.app.state.ui_sessions
    return found


def plane_of(request: Request) -> ControlPlane:
    cp: ControlPlane = request.app.state.plane
    return cp


async def viewer(request: Request) -> Viewer:
    """The session named by the cookie and its key, read now (a revoked or expired key ends its
    sessions at once)."""
    found = await run_in_threadpool(sessions(request).get, request.cookies.get(COOKIE))
    if found is None:
        raise SignInRequired
    session, who = found
    request.state.actor = who.key_id
    cursor = await run_in_threadpool(plane_of(request).events.last_id)
    signed = Viewer(session, who, cursor)
    request.state.viewer = signed
    return signed


async def still_signed_in(request: Request) -> bool:
    """Whether an open stream's session lives on (its key not revoked, its session not ended)."""
    found = await run_in_threadpool(sessions(request).get, request.cookies.get(COOKIE))
    return found is not None


async def form(request: Request) -> dict[str, str]:
    """A urlencoded form body (the only kind the dashboard's forms send)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidInput("form too large")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


def same(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


class UiRoute(APIRoute):
    """Every dashboard response carries the security headers; errors render as HTML pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired:
                if request.url.path.startswith(f"{PREFIX}/live"):  # event streams
                    response = Response("sign in first", status_code=401)
                else:
                    query = request.url.query
                    target = request.url.path + (f"?{query}" if query else "")
                    response = RedirectResponse(
                        f"{PREFIX}/signin?next={quote(target, safe='')}", status_code=303
                    )
                    response.delete_cookie(COOKIE, path=PREFIX)
            except ModelyardError as exc:
                response = render(
                    request,
                    "error.html",
                    status=exc.http_status,
                    status_code=exc.http_status,
                    message=exc.message,
                )
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return handle
