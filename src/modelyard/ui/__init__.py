"""The dashboard: server-rendered pages under ``/ui``, signed in with an API key, live over the
event log. Mounted by `modelyard.api.app.create_app`; the JSON API never reads its cookie."""

from __future__ import annotations

from fastapi import FastAPI

from modelyard.ui.web import PREFIX


def mount(app: FastAPI) -> None:
    """Add the dashboard's routes to the control plane's app."""
    from modelyard.ui import live, logs, pages, signin
    from modelyard.ui.sessions import Sessions

    plane = app.state.plane
    app.state.ui_sessions = Sessions(plane.db, plane.events.clock)
    app.include_router(signin.router, prefix=PREFIX)
    app.include_router(live.router, prefix=PREFIX)
    app.include_router(logs.router, prefix=PREFIX)
    app.include_router(pages.router, prefix=PREFIX)
