"""The FastAPI application of the control plane."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from modelyard import __version__
from modelyard.api import artifacts, events, namespaces
from modelyard.api.errors import BodyLimit, install_error_handlers
from modelyard.controlplane import ControlPlane

PREFIX = "/api/v1"
access_log = logging.getLogger("modelyard.access")


def create_app(plane: ControlPlane, *, run_controllers: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_controllers:
            plane.start_controllers()
        try:
            yield
        finally:
            if run_controllers:
                plane.stop_controllers()

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

    @app.middleware("http")
    async def log_access(request: Request,
                         call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        access_log.info("%s %s %d %.1fms key=%s", request.method, request.url.path,
                        response.status_code, (time.perf_counter() - started) * 1000,
                        getattr(request.state, "actor", "-"))
        return response

    app.add_middleware(BodyLimit, max_bytes=plane.settings.max_body_mb * 1024 * 1024)
    return app
