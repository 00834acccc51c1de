"""The FastAPI application of the control plane."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard import __version__
from modelyard.api import (
    artifacts,
    deployments,
    events,
    logs,
    namespaces,
    pipelines,
    realtime,
    series,
    slos,
)
from modelyard.api.errors import BodyLimit, install_error_handlers
from modelyard.api.standby import StandbyGuard
from modelyard.controlplane import ControlPlane
from modelyard.serving.replica_headers import INTERNAL_HEADER
from modelyard.ui import mount as mount_dashboard

PREFIX = "/api/v1"
access_log = logging.getLogger("modelyard.access")
# Internal traffic: the gateway's long poll for its routing table answers about once a second
# while idle (86,400 lines a day). Logged at DEBUG when it succeeds.
INTERNAL_PATHS = frozenset({f"{PREFIX}/gateway/sync"})
_INTERNAL = INTERNAL_HEADER.encode()  # and reads a replica marks as its own polling


def _marked_read(scope: Scope) -> bool:
    """A read marked as a component's polling. Only reads: a write is always an access line,
    whatever a caller marks it."""
    return scope["method"] in ("GET", "HEAD") and any(
        name == _INTERNAL for name, _ in scope["headers"]
    )


def create_app(plane: ControlPlane, *, run_controllers: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_controllers:
            plane.lead()  # the controllers start here once this control plane holds the lease
        try:
            yield
        finally:
            if run_controllers:
                plane.step_down()

    app = FastAPI(
        title="modelyard control plane",
        version=__version__,
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.state.plane = plane
    install_error_handlers(app)
    app.include_router(namespaces.router, prefix=PREFIX)
    app.include_router(artifacts.artifact_router("model"), prefix=PREFIX)
    app.include_router(artifacts.artifact_router("dataset"), prefix=PREFIX)
    app.include_router(events.router, prefix=PREFIX)
    app.include_router(pipelines.router, prefix=PREFIX)
    app.include_router(deployments.router, prefix=PREFIX)
    app.include_router(deployments.gateway_router, prefix=PREFIX)
    app.include_router(logs.router, prefix=PREFIX)
    app.include_router(slos.router, prefix=PREFIX)
    app.include_router(series.router, prefix=PREFIX)
    app.include_router(realtime.streams, prefix=PREFIX)
    app.include_router(realtime.realtime, prefix=PREFIX)
    mount_dashboard(app)  # /ui: its session cookie is read there only, never by the API

    app.add_middleware(BodyLimit, max_bytes=plane.settings.max_body_mb * 1024 * 1024)
    if run_controllers:
        app.add_middleware(StandbyGuard, lease=plane.lease)
    app.add_middleware(AccessLog)
    return app


class AccessLog:
    """One structured line per request: method, path, status, duration, key id (successful
    internal requests, ``quiet`` paths, at DEBUG)."""

    def __init__(self, app: ASGIApp, quiet: frozenset[str] = INTERNAL_PATHS) -> None:
        self.app = app
        self.quiet = quiet

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            state = scope.get("state") or {}
            quiet = status < 400 and (scope["path"] in self.quiet or _marked_read(scope))
            access_log.log(
                logging.DEBUG if quiet else logging.INFO,
                "%s %s %d %.1fms key=%s",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
                state.get("actor", "-"),
            )
