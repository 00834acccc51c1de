"""What a deployment served, step by step: the series the dashboard's charts draw, for scripts.

The whole deployment from its stored minutes (up to 30 days), or one revision from the gateway's
reports of the last hour (they are kept in memory).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from modelyard.api.deps import Caller, Plane
from modelyard.errors import InvalidInput, NotFound
from modelyard.telemetry.records import BUCKETS, Sample
from modelyard.types import Role

router = APIRouter(prefix="/namespaces/{namespace}/deployments/{name}/series", tags=["deployments"])
REVISION_MINUTES = 60
MAX_MINUTES = 30 * 24 * 60


class SeriesPoint(BaseModel):
    at: dt.datetime
    """The start of the step."""
    requests: int
    errors: int
    p50_ms: float | None
    """Of successful requests: a revision's from its latency samples; the deployment's as the
    upper bound of the latency bucket it falls in (None above the last bound, or no requests)."""
    p99_ms: float | None


class Series(BaseModel):
    deployment: str
    revision: int | None
    step_s: int
    points: list[SeriesPoint]
    """Oldest first; steps with nothing served are left out."""


@router.get("")
def series(
    namespace: str,
    name: str,
    plane: Plane,
    caller: Caller,
    revision: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    minutes: Annotated[int, Query(ge=1, le=MAX_MINUTES)] = 60,
    step_s: Annotated[int, Query(ge=1, le=86_400)] = 60,
) -> Series:
    """Requests, errors and latency percentiles per ``step_s`` over the last ``minutes``: of the
    whole deployment, or of one revision (by number; the last hour only)."""
    caller.require(namespace, Role.VIEWER)
    if revision is not None and minutes > REVISION_MINUTES:
        raise InvalidInput(
            f"a revision's series covers the last {REVISION_MINUTES} minutes (the gateway's "
            f"reports kept in memory): give minutes <= {REVISION_MINUTES}, or leave revision "
            "out for the deployment's stored minutes"
        )
    info = plane.deployments.get(namespace, name)
    revision_id = None
    if revision is not None:
        found = [r.id for r in info.revisions if r.number == revision]
        if not found:
            numbers = ", ".join(str(r.number) for r in info.revisions) or "none"
            raise NotFound(
                f"deployment {namespace}/{name} has no revision {revision} (it has {numbers})"
            )
        revision_id = found[0]
    with plane.db.read() as session:
        deployment_id = plane.deployments.row(session, namespace, name).id
    points = plane.telemetry.series(
        deployment_id,
        since=plane.events.clock() - dt.timedelta(minutes=minutes),
        revision=revision_id,
        step=dt.timedelta(seconds=step_s),
    )
    return Series(
        deployment=f"{namespace}/{name}",
        revision=revision,
        step_s=step_s,
        points=[
            SeriesPoint(
                at=p.at,
                requests=p.served.requests,
                errors=p.served.errors,
                p50_ms=_quantile(p.served, 0.5),
                p99_ms=_quantile(p.served, 0.99),
            )
            for p in points
        ],
    )


def _quantile(served: Sample, q: float) -> float | None:
    if served.latencies_ms:
        ordered = sorted(served.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    total = sum(served.buckets)
    if not total:
        return None
    seen = 0
    for bound, count in zip(BUCKETS, served.buckets, strict=False):
        seen += count
        if seen >= q * total:
            return 1000 * bound
    return None
