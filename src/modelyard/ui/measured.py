"""What the dashboard reads of the platform's own measurements: live rates from the gateway's
recent reports (`Measurements`, in memory) and per-minute history (``traffic_minutes``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import sqlalchemy as sa

from modelyard.controlplane import ControlPlane
from modelyard.serving.deployments import DeploymentInfo
from modelyard.store.schema import DeploymentRow, NamespaceRow, SloAlertRow, TrafficMinuteRow
from modelyard.ui.charts import Marker, Minute

NONE = "\u2013"  # an en dash: no value
LIVE_SECONDS = 10.0
"""Live rates are over the gateway's reports of this many seconds (it reports about once a
second, so a change shows on the next report)."""
MARKED = ("revision.", "rollout.", "deployment.traffic.changed")


def live_rates(plane: ControlPlane, revision_ids: list[str]) -> dict[str, float | None]:
    """Requests/s, error share and p99 (ms) over the last ``LIVE_SECONDS``, summed over
    ``revision_ids``."""
    since = plane.events.clock() - dt.timedelta(seconds=LIVE_SECONDS)
    requests = errors = 0
    latencies: list[float] = []
    for revision_id in revision_ids:
        served = plane.rollouts.measurements.served(revision_id, since)
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
    """The live numbers of a deployment and of each revision, keyed as the page names them."""
    shown: dict[str, str] = {}
    rates = live_rates(plane, [r.id for r in info.revisions])
    shown.update(_format(f"{info.namespace}/{info.name}", rates))
    for revision in info.revisions:
        shown.update(_format(revision.id, live_rates(plane, [revision.id])))
    return shown


def _format(key: str, rates: dict[str, float | None]) -> dict[str, str]:
    qps, errors, p99 = rates["qps"], rates["errors"], rates["p99"]
    return {
        f"{key}:qps": f"{qps:.2f}" if qps is not None else NONE,
        f"{key}:errors": f"{100 * errors:.2f}%" if errors is not None else NONE,
        f"{key}:p99": f"{p99:.1f} ms" if p99 is not None else NONE,
    }


def minutes(
    plane: ControlPlane, namespace: str, deployment: str, start: dt.datetime
) -> list[Minute]:
    """The deployment's stored minutes from ``start`` on.

    Read as the driver gives them (30 days are 43,200 rows): SQLite hands over text, parsed here
    faster than through the column types; PostgreSQL's driver decodes both itself."""
    raw = sa.String()
    with plane.db.read() as session:
        rows = session.execute(
            sa.select(
                sa.type_coerce(TrafficMinuteRow.minute, raw),
                TrafficMinuteRow.requests,
                TrafficMinuteRow.errors,
                sa.type_coerce(TrafficMinuteRow.buckets, raw),
            )
            .join(DeploymentRow, DeploymentRow.id == TrafficMinuteRow.deployment_id)
            .join(NamespaceRow, NamespaceRow.id == DeploymentRow.namespace_id)
            .where(
                NamespaceRow.name == namespace,
                DeploymentRow.name == deployment,
                TrafficMinuteRow.minute >= start,
            )
            .order_by(TrafficMinuteRow.minute)
        ).all()
    return [
        Minute(_moment(at), count, errors, _buckets(buckets)) for at, count, errors, buckets in rows
    ]


def _moment(value: object) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return _utc(value)
    return _utc(dt.datetime.fromisoformat(str(value)))


def _buckets(value: object) -> list[int]:
    if isinstance(value, list):
        return value
    found = orjson.loads(str(value)) if value else []
    return found if isinstance(found, list) else []


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
