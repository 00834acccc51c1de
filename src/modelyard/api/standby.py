"""What a control plane that does not hold the lease (a standby) answers to writes."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from modelyard.api.errors import error_response
from modelyard.lease import Lease, retry_after

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class StandbyGuard:
    """A standby answers reads from the database and refuses every write with 503, a
    ``Retry-After`` and the leader's name and URL.

    Writes are transactional, so the database alone would stay consistent, but many are not only
    rows: cancelling a run, a retry, a new run and a gateway's sync reach the controllers of the
    process that serves them, which on a standby do not run, so they would be lost or answered
    from an empty routing table. Refusing them is what keeps the standby from writing beside the
    leader; Kubernetes routes no request to it (its readiness is ``/api/v1/health/leader``)."""

    def __init__(self, app: ASGIApp, lease: Lease) -> None:
        self.app = app
        self.lease = lease

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or self.lease.leading:
            await self.app(scope, receive, send)
            return
        await standby_response(self.lease)(scope, receive, send)


def standby_response(lease: Lease) -> JSONResponse:
    """503 for a control plane that does not hold the lease, naming who does."""
    wait = retry_after(lease)
    seen = lease.seen()
    left = lease.expires_in()
    if seen is not None and seen.holder and seen.holder != lease.identity and (left or 0) > 0:
        message = (
            f"this control plane is a standby: {seen.holder} at {seen.holder_url or 'no URL'} "
            f"holds the lease (term {seen.term}); send the request there, or retry in {wait} s"
        )
    else:
        message = (
            f"this control plane does not hold the lease now ({lease.state.value}): "
            f"retry in {wait} s"
        )
    response = error_response(
        503,
        "unavailable",
        message,
        leader=seen.holder if seen else None,
        leader_url=seen.holder_url if seen else None,
        retry_after=wait,
    )
    response.headers["Retry-After"] = str(wait)
    return response
