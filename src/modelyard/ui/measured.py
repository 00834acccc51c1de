"""What the dashboard reads of the platform's own measurements, through `Telemetry`: live rates
from the gateway's recent reports (in memory) and the per-minute history (stored)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from modelyard.controlplane import ControlPlane
from modelyard.events.types import EventType
from modelyard.serving.records import DeploymentInfo
from modelyard.serving.states import RevisionState
from modelyard.store.schema import DeploymentRow, NamespaceRow, SloAlertRow
from modelyard.telemetry.records import Sample
from modelyard.ui.charts import Marker, Minute

NONE = "\u2013"  # an en dash: no value
LIVE_SECONDS = 10.0
"""Live rates are over the gateway's reports of this many seconds (it reports about once a
second, so a change shows on the next report)."""
MARKED = ("revision.", "rollout.", EventType.DEPLOYMENT_TRAFFIC_CHANGED)


def _recent(plane: ControlPlane, deployment_id: str, revision_ids: list[str]) -> dict[str, Sample]:
    """Each revision's totals over the last ``LIVE_SECONDS`` (one read of telemetry each)."""
    since = plane.events.clock() - dt.timedelta(seconds=LIVE_SECONDS)
    return {
        revision_id: plane.telemetry.totals(deployment_id, revision=revision_id, since=since)
        for revision_id in revision_ids
    }


def _combined(totals: Iterable[Sample]) -> dict[str, float | None]:
    """Requests/s, error share and p99 (ms) over the last ``LIVE_SECONDS``, of ``totals`` summed."""
    requests = errors = 0
    latencies: list[float] = []
    for served in totals:
        requests += served.requests
        errors += served.errors
        latencies.extend(served.latencies_ms)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None
    return {
        "qps": requests / LIVE_SECONDS,
        "errors": errors / requests if requests else None,
        "p99": p99,
    }


def deployment_rates(plane: ControlPlane, info: DeploymentInfo) -> dict[str, str]:
    """The live numbers of a deployment and of each revision, keyed as the page names them (each
    revision's totals are read once, for its own numbers and the deployment's)."""
    deployment_id = _deployment_id(plane, info.namespace, info.name)
    recent = _recent(plane, deployment_id, [r.id for r in info.revisions])
    shown = _format(f"{info.namespace}/{info.name}", _combined(recent.values()))
    for revision_id, served in recent.items():
        shown.update(_format(revision_id, _combined([served])))
    return shown


def revision_reports(
    plane: ControlPlane, info: DeploymentInfo, start: dt.datetime
) -> dict[str, Sequence[tuple[dt.datetime, int, int, Sequence[float]]]]:
    """The gateway's reports about each revision still serving, from ``start`` on (the last hour
    at most: they are kept in memory), as `charts.by_revision` draws them."""
    deployment_id = _deployment_id(plane, info.namespace, info.name)
    return {
        f"r{r.number}": [
            (p.at, p.served.requests, p.served.errors, p.served.latencies_ms)
            for p in plane.telemetry.series(deployment_id, revision=r.id, since=start)
        ]
        for r in info.revisions
        if r.state != RevisionState.RETIRED
    }


def _format(key: str, rates: dict[str, float | None]) -> dict[str, str]:
    qps, errors, p99 = rates["qps"], rates["errors"], rates["p99"]
    return {
        f"{key}:qps": f"{qps:.2f}" if qps is not None else NONE,
        f"{key}:errors": f"{100 * errors:.2f}%" if errors is not None else NONE,
        f"{key}:p99": f"{p99:.1f} ms" if p99 is not None else NONE,
    }


def minutes(
    plane: ControlPlane, namespace: str, deployment: str, start: dt.datetime, step: dt.timedelta
) -> list[Minute]:
    """The deployment's stored minutes from ``start`` on, summed per ``step`` by the database."""
    deployment_id = _deployment_id(plane, namespace, deployment)
    points = plane.telemetry.series(deployment_id, since=start, step=step)
    return [Minute(p.at, p.served.requests, p.served.errors, p.served.buckets) for p in points]


def _deployment_id(plane: ControlPlane, namespace: str, deployment: str) -> str:
    with plane.db.read() as session:
        return plane.deployments.row(session, namespace, deployment).id


def markers(plane: ControlPlane, namespace: str, deployment: str) -> list[Marker]:
    """New revisions, rollout steps and traffic changes (from the event log) and alerts."""
    found = [
        Marker(_utc(e.created_at), f"{e.type} {_short(e.data)}".strip(), e.type.split(".")[0])
        for e in plane.events.history(namespace, f"{namespace}/{deployment}", limit=500)
        if e.type.startswith(MARKED)
    ]
    with plane.db.read() as session:
        alerts = session.execute(
            sa.select(SloAlertRow.fired_at, SloAlertRow.objective, SloAlertRow.rule)
            .join(DeploymentRow, DeploymentRow.id == SloAlertRow.deployment_id)
            .join(NamespaceRow, NamespaceRow.id == DeploymentRow.namespace_id)
            .where(NamespaceRow.name == namespace, DeploymentRow.name == deployment)
            .order_by(SloAlertRow.fired_at.desc())
            .limit(200)
        ).all()
    found += [Marker(_utc(at), f"alert {obj} {rule}", "alert") for at, obj, rule in alerts]
    return found


def _short(data: dict[str, Any]) -> str:
    for key in ("revision", "number", "step", "percent"):
        if key in data:
            return f"{key}={data[key]}"
    return ""


def _utc(at: dt.datetime) -> dt.datetime:
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)
