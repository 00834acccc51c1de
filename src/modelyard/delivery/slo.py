"""SLOs of deployments: objectives, the traffic they are judged on, error budgets, burn-rate alerts.

The gateway's measurements arrive as per-minute counts of each deployment (requests, 5xx errors,
requests per latency bucket; of a realtime deployment, lag samples per lag bucket), stored and
summed by `modelyard.telemetry`. `Slos.evaluate` (run by `SloController` every ``interval``)
computes each objective's burn rate over the alert windows and fires or resolves alerts (see
`modelyard.delivery.burnrate`). An alert is a row in ``slo_alerts`` plus an event,
``slo.alert.firing`` or ``slo.alert.resolved``: webhooks subscribed to ``slo.alert.*`` get it
signed and retried, and a dead endpoint never holds up evaluation.

A window holds the minutes that began at or after ``now - window``, floored to the minute: the
current minute counts while it fills.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from modelyard.delivery.burnrate import (
    DEFAULT_WINDOW_DAYS,
    LONGEST_WINDOW,
    RULES,
    WINDOWS,
    Budget,
    Counts,
    Objective,
    evidence,
    parse_objectives,
)
from modelyard.delivery.prometheus import render_rules
from modelyard.delivery.records import AlertInfo, ObjectiveStatus, SloStatus
from modelyard.delivery.states import ALERT_EVENTS, AlertState
from modelyard.errors import InvalidInput
from modelyard.events.log import EventLog
from modelyard.events.types import EventType
from modelyard.loops import Loop
from modelyard.serving.deployments import Deployments
from modelyard.store.schema import DeploymentRow, NamespaceRow, SloAlertRow
from modelyard.telemetry.query import Telemetry
from modelyard.telemetry.records import Sample, floor_minute

log = logging.getLogger(__name__)
EVALUATE_SECONDS = 30.0
SLO_WINDOW = "slo"
KEEP_EXTRA = dt.timedelta(days=1)
"""Minutes are kept this long past the longest window that reads them."""


class Slos:
    """Objectives of deployments and their alerts, judged on the telemetry's stored minutes."""

    def __init__(self, events: EventLog, deployments: Deployments, telemetry: Telemetry) -> None:
        self.events = events
        self.db = events.db
        self.deployments = deployments
        self.telemetry = telemetry

    # objectives ---------------------------------------------------------------------------------
    def set(
        self,
        namespace: str,
        deployment: str,
        objectives: Sequence[Objective | Mapping[str, Any]],
        actor: str | None = None,
    ) -> list[Objective]:
        """Replace the deployment's objectives (an empty list removes them; their firing alerts
        resolve at the next evaluation)."""
        parsed = parse_objectives(objectives)
        stored = [o.model_dump(mode="json", exclude_none=True) for o in parsed]
        with self.db.write() as session:
            row = self.deployments.row(session, namespace, deployment, lock=True)
            lag = [o.name for o in parsed if o.kind == "lag"]
            if lag and not row.spec.get("realtime"):
                raise InvalidInput(
                    f"objective {lag[0]!r}: a lag objective judges a realtime deployment, and "
                    f"{namespace}/{deployment} serves requests: give it availability or latency "
                    "objectives",
                    field="objectives",
                )
            if row.slos == stored:
                return parsed
            row.slos, row.updated_at = stored, self.events.clock()
            self.events.append(
                session,
                EventType.DEPLOYMENT_SLOS_CHANGED,
                f"{namespace}/{deployment}",
                {"slos": stored},
                namespace=namespace,
                actor=actor,
            )
        return parsed

    def get(self, namespace: str, deployment: str) -> list[Objective]:
        with self.db.read() as session:
            return _objectives(self.deployments.row(session, namespace, deployment))

    def prometheus_rules(self, namespace: str, deployment: str) -> str:
        return render_rules(namespace, deployment, self.get(namespace, deployment))

    # judgement ----------------------------------------------------------------------------------
    def status(self, namespace: str, deployment: str) -> SloStatus:
        """Per objective: the SLI and error budget over its window, the burn rate over each alert
        window, and the alerts firing now."""
        now = self.events.clock()
        with self.db.read() as session:
            row = self.deployments.row(session, namespace, deployment)
            objectives = _objectives(row)
            firing = _firing(session, row.id)
            deployment_id = row.id
        tallies = self._tally(deployment_id, objectives, now, slo_window=True)
        result = []
        for objective in objectives:
            tally = tallies[objective.name]
            whole = tally.pop(SLO_WINDOW)
            budget = Budget.of(objective, whole)
            result.append(
                ObjectiveStatus(
                    objective=objective,
                    requests=whole.total,
                    bad=whole.bad,
                    sli=1 - whole.bad / whole.total if whole.total else None,
                    budget_total=budget.total,
                    budget_consumed=budget.consumed,
                    budget_remaining=budget.remaining,
                    burn_rates={w: c.burn_rate(objective) for w, c in tally.items()},
                    alerts=[AlertInfo.from_row(a) for a in firing if a.objective == objective.name],
                )
            )
        return SloStatus(namespace=namespace, deployment=deployment, at=now, objectives=result)

    def alerts(self, namespace: str, deployment: str, limit: int = 50) -> list[AlertInfo]:
        """The latest alerts of a deployment, firing or resolved, newest first."""
        with self.db.read() as session:
            row = self.deployments.row(session, namespace, deployment)
            found = session.scalars(
                sa.select(SloAlertRow)
                .where(SloAlertRow.deployment_id == row.id)
                .order_by(SloAlertRow.fired_at.desc())
                .limit(limit)
            )
            return [AlertInfo.from_row(a) for a in found]

    def evaluate(self) -> list[AlertInfo]:
        """Fire the alerts whose rule started holding and resolve those whose rule stopped, for
        every deployment; prune minutes no window reads any more. Idempotent: a rule that keeps
        holding keeps its one alert. Returns the alerts that changed."""
        now = self.events.clock()
        with self.db.read() as session:
            deployments = session.execute(
                sa.select(
                    DeploymentRow.id, DeploymentRow.name, DeploymentRow.slos, NamespaceRow.name
                )
                .join(NamespaceRow, NamespaceRow.id == DeploymentRow.namespace_id)
                .order_by(DeploymentRow.id)
            ).all()
            firing: defaultdict[str, set[tuple[str, str]]] = defaultdict(set)
            alerts = sa.select(SloAlertRow).where(SloAlertRow.state == AlertState.FIRING)
            for alert in session.scalars(alerts):
                firing[alert.deployment_id].add((alert.objective, alert.rule))
        oldest = self.telemetry.oldest()
        changed: list[AlertInfo] = []
        stale: dict[str, dt.datetime] = {}
        for deployment_id, name, stored, namespace in deployments:
            objectives = [Objective.model_validate(o) for o in stored]
            burns: dict[str, dict[str, float | None]] = {}
            if objectives:
                tallies = self._tally(deployment_id, objectives, now)
                burns = {
                    o.name: {w: c.burn_rate(o) for w, c in tallies[o.name].items()}
                    for o in objectives
                }
            held = {
                (o.name, rule.name): evidence(o, rule, burns[o.name])
                for o in objectives
                for rule in RULES
                if rule.holds(burns[o.name])
            }
            horizon = max([o.window_days for o in objectives] + [DEFAULT_WINDOW_DAYS])
            cutoff = floor_minute(
                now - max(dt.timedelta(days=horizon), LONGEST_WINDOW) - KEEP_EXTRA
            )
            if deployment_id in oldest and oldest[deployment_id] < cutoff:
                stale[deployment_id] = cutoff
            if set(held) != firing[deployment_id]:
                changed += self._apply(
                    _Found(deployment_id, namespace, name, objectives, held, burns), now
                )
        self.telemetry.prune(stale)
        return changed

    def _apply(self, found: _Found, now: dt.datetime) -> list[AlertInfo]:
        """Write what one evaluation found, re-reading the firing alerts under the deployment's
        lock so that concurrent evaluations fire once."""
        changed = []
        whole = self._tally(
            found.deployment_id, found.objectives, now, alert_windows=False, slo_window=True
        )
        left = {o.name: Budget.of(o, whole[o.name][SLO_WINDOW]).remaining for o in found.objectives}
        with self.db.write() as session:
            row = session.get(DeploymentRow, found.deployment_id, with_for_update=True)
            if row is None:  # deleted meanwhile, with its minutes and alerts
                return []
            firing = {(a.objective, a.rule): a for a in _firing(session, found.deployment_id)}
            by_name = {o.name: o for o in found.objectives}
            events: list[tuple[SloAlertRow, dict[str, Any]]] = []
            for key, proof in found.held.items():
                if key in firing:
                    continue
                objective = by_name[key[0]]
                proof["budget_remaining"] = left[objective.name]
                alert = SloAlertRow(
                    id=uuid.uuid4().hex,
                    deployment_id=row.id,
                    objective=key[0],
                    severity=proof["severity"],
                    rule=key[1],
                    state=AlertState.FIRING,
                    fired_at=now,
                    resolved_at=None,
                    evidence=proof,
                )
                session.add(alert)
                events.append((alert, {"alert": alert.id, **proof}))
            for key, alert in firing.items():
                if key in found.held:
                    continue
                alert.state, alert.resolved_at = AlertState.RESOLVED, now
                kept = by_name.get(alert.objective)
                rule = next((r for r in RULES if r.name == alert.rule), None)
                burn = found.burns.get(alert.objective, {})
                now_burning = {w: burn.get(w) for w in (rule.long, rule.short)} if rule else {}
                data: dict[str, Any] = {
                    "alert": alert.id,
                    "objective": alert.objective,
                    "rule": alert.rule,
                    "severity": alert.severity,
                    "fired_at": alert.fired_at.isoformat(),
                    "reason": (
                        "the objective was removed or renamed"
                        if kept is None
                        else "the burn rates fell back under the rule's factor"
                    ),
                    "burn_rates": now_burning if kept else {},
                }
                if kept is not None:
                    data["budget_remaining"] = left[kept.name]
                events.append((alert, data))
            session.flush()
            for alert, data in events:
                self.events.append(
                    session,
                    ALERT_EVENTS[AlertState(alert.state)],
                    f"{found.namespace}/{found.name}",
                    data,
                    namespace=found.namespace,
                )
                changed.append(AlertInfo.from_row(alert))
        return changed

    def _tally(
        self,
        deployment_id: str,
        objectives: Sequence[Objective],
        now: dt.datetime,
        *,
        alert_windows: bool = True,
        slo_window: bool = False,
    ) -> dict[str, dict[str, Counts]]:
        """Requests and bad requests per objective and window (the alert windows, and with
        ``slo_window`` the objective's own as ``SLO_WINDOW``), in one read of the telemetry."""
        starts = {w: floor_minute(now - length) for w, length in WINDOWS.items()}
        starts = starts if alert_windows else {}
        if slo_window:
            for o in objectives:
                starts[f"{SLO_WINDOW}:{o.window_days}"] = floor_minute(
                    now - dt.timedelta(days=o.window_days)
                )
        if not objectives or not starts:
            return {o.name: {} for o in objectives}
        latency = any(o.kind == "latency" for o in objectives)
        lag = any(o.kind == "lag" for o in objectives)
        sums = self.telemetry.windows(deployment_id, starts, buckets=latency, lag=lag)
        tallies: dict[str, dict[str, Counts]] = {}
        for o in objectives:
            tally = {w: _counts(o, sums[w]) for w in WINDOWS} if alert_windows else {}
            if slo_window:
                tally[SLO_WINDOW] = _counts(o, sums[f"{SLO_WINDOW}:{o.window_days}"])
            tallies[o.name] = tally
        return tallies


@dataclass(frozen=True)
class _Found:
    """What evaluating one deployment found: the rules that hold, with their evidence."""

    deployment_id: str
    namespace: str
    name: str
    objectives: list[Objective]
    held: dict[tuple[str, str], dict[str, Any]]
    burns: dict[str, dict[str, float | None]]


class SloController:
    """Evaluates every deployment's SLOs every ``interval`` seconds in a daemon thread."""

    def __init__(self, slos: Slos, *, interval: float = EVALUATE_SECONDS) -> None:
        self.slos = slos
        self.interval = interval
        self.loop = Loop("slos", self._evaluate, interval=interval)

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()

    def _evaluate(self) -> None:
        self.slos.evaluate()


# plumbing ---------------------------------------------------------------------------------------
def _objectives(row: DeploymentRow) -> list[Objective]:
    return [Objective.model_validate(o) for o in row.slos]


def _firing(session: Session, deployment_id: str) -> list[SloAlertRow]:
    return list(
        session.scalars(
            sa.select(SloAlertRow)
            .where(
                SloAlertRow.deployment_id == deployment_id,
                SloAlertRow.state == AlertState.FIRING,
            )
            .order_by(SloAlertRow.fired_at)
        )
    )


def _counts(objective: Objective, served: Sample) -> Counts:
    """A range's requests and the bad ones: its errors, or its requests in the buckets above the
    threshold (a request at the bound is good, as Prometheus' ``le`` counts it); for a lag
    objective its lag samples and those above the threshold."""
    if objective.kind == "availability":
        return Counts(served.requests, served.errors)
    if objective.kind == "lag":
        return Counts(served.lag_samples, sum(served.lag_buckets[objective.bucket + 1 :]))
    return Counts(served.requests, sum(served.buckets[objective.bucket + 1 :]))
