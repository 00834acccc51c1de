"""SLOs of deployments: objectives, the traffic they are judged on, error budgets, burn-rate alerts.

The gateway's measurements arrive as per-minute counts of each deployment (requests, 5xx errors,
requests per latency bucket) and are summed into ``traffic_minutes``. `Slos.evaluate` (run by
`SloController` every ``interval``) computes each objective's burn rate over the alert windows
and fires or resolves alerts (see `modelyard.delivery.burnrate`). An alert is a row in
``slo_alerts`` plus an event, ``slo.alert.firing`` or ``slo.alert.resolved``: webhooks subscribed
to ``slo.alert.*`` get it signed and retried, and a dead endpoint never holds up evaluation.

A window holds the minutes that began at or after ``now - window``, floored to the minute: the
current minute counts while it fills.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from modelyard.delivery.burnrate import (
    DEFAULT_WINDOW_DAYS,
    LONGEST_WINDOW,
    RULES,
    WINDOWS,
    Budget,
    Counts,
    Objective,
    TrafficMinute,
    evidence,
    floor_minute,
    parse_objectives,
)
from modelyard.delivery.prometheus import render_rules
from modelyard.events.log import EventLog
from modelyard.gateway.metrics import BUCKETS
from modelyard.serving.deployments import Deployments
from modelyard.store.schema import DeploymentRow, NamespaceRow, SloAlertRow, TrafficMinuteRow
from modelyard.types import Record

log = logging.getLogger(__name__)
FIRING, RESOLVED = "firing", "resolved"
EVALUATE_SECONDS = 30.0
SLO_WINDOW = "slo"
KEEP_EXTRA = dt.timedelta(days=1)
"""Minutes are kept this long past the longest window that reads them."""


class AlertInfo(Record):
    id: str
    objective: str
    rule: str
    severity: str
    state: str
    fired_at: dt.datetime
    resolved_at: dt.datetime | None
    evidence: dict[str, Any]

    @classmethod
    def from_row(cls, row: SloAlertRow) -> AlertInfo:
        return cls(
            id=row.id,
            objective=row.objective,
            rule=row.rule,
            severity=row.severity,
            state=row.state,
            fired_at=row.fired_at,
            resolved_at=row.resolved_at,
            evidence=dict(row.evidence),
        )


class ObjectiveStatus(Record):
    objective: Objective
    requests: int
    """Requests judged over the objective's window."""
    bad: int
    sli: float | None
    """Share of good requests over the window; None without traffic."""
    budget_total: float
    """Bad requests the target allows for the requests so far."""
    budget_consumed: int
    budget_remaining: float
    """Share of the budget left: 1 untouched, 0 spent, negative overspent."""
    burn_rates: dict[str, float | None]
    """Per alert window (5m ... 3d); None without traffic there."""
    alerts: list[AlertInfo]
    """The alerts of this objective firing now."""


class SloStatus(Record):
    namespace: str
    deployment: str
    at: dt.datetime
    objectives: list[ObjectiveStatus]


class Slos:
    """Objectives of deployments, the traffic minutes they are judged on, and their alerts."""

    def __init__(self, events: EventLog, deployments: Deployments) -> None:
        self.events = events
        self.db = events.db
        self.deployments = deployments

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
            if row.slos == stored:
                return parsed
            row.slos, row.updated_at = stored, self.events.clock()
            self.events.append(
                session,
                "deployment.slos.changed",
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

    # measurements -------------------------------------------------------------------------------
    def record(self, minutes: Iterable[TrafficMinute]) -> int:
        """Add per-minute counts into the stored minutes (several reports of one minute add up).
        Counts of deployments that no longer exist are dropped. Returns the minutes kept."""
        merged: dict[tuple[str, dt.datetime], TrafficMinute] = {}
        for m in minutes:
            key = (m.deployment_id, m.minute)
            old = merged.get(key)
            merged[key] = m if old is None else old.plus(m)
        if not merged:
            return 0
        with self.db.write() as session:
            alive = set(
                session.scalars(
                    sa.select(DeploymentRow.id)
                    .where(DeploymentRow.id.in_({d for d, _ in merged}))
                    .order_by(DeploymentRow.id)  # one lock order: concurrent writers never deadlock
                    .with_for_update()
                )
            )
            insert = sqlite.insert if self.db.is_sqlite else postgresql.insert
            table = cast(sa.Table, TrafficMinuteRow.__table__)
            kept = [m for (deployment_id, _), m in merged.items() if deployment_id in alive]
            if not kept:
                return 0
            inserted = session.execute(
                insert(table)
                .on_conflict_do_nothing()
                .returning(table.c.deployment_id, table.c.minute),
                [
                    {
                        "deployment_id": m.deployment_id,
                        "minute": m.minute,
                        "requests": m.requests,
                        "errors": m.errors,
                        "buckets": list(m.buckets),
                    }
                    for m in kept
                ],
            ).all()
            new = {(d, _utc(at)) for d, at in inserted}
            for m in kept:  # minutes already there: add into them
                if (m.deployment_id, m.minute) in new:
                    continue
                row = session.get(
                    TrafficMinuteRow, (m.deployment_id, m.minute), with_for_update=True
                )
                assert row is not None
                stored = TrafficMinute(
                    row.deployment_id, m.minute, row.requests, row.errors, row.buckets
                )
                summed = stored.plus(m)
                row.requests, row.errors = summed.requests, summed.errors
                row.buckets = summed.buckets
            return len(kept)

    # judgement ----------------------------------------------------------------------------------
    def status(self, namespace: str, deployment: str) -> SloStatus:
        """Per objective: the SLI and error budget over its window, the burn rate over each alert
        window, and the alerts firing now."""
        now = self.events.clock()
        with self.db.read() as session:
            row = self.deployments.row(session, namespace, deployment)
            objectives = _objectives(row)
            tallies = _tally(session, row.id, objectives, now, slo_window=True)
            firing = _firing(session, row.id)
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
            for alert in session.scalars(sa.select(SloAlertRow).where(SloAlertRow.state == FIRING)):
                firing[alert.deployment_id].add((alert.objective, alert.rule))
            oldest = dict(
                session.execute(
                    sa.select(
                        TrafficMinuteRow.deployment_id, sa.func.min(TrafficMinuteRow.minute)
                    ).group_by(TrafficMinuteRow.deployment_id)
                ).all()
            )
        changed: list[AlertInfo] = []
        for deployment_id, name, stored, namespace in deployments:
            objectives = [Objective.model_validate(o) for o in stored]
            burns: dict[str, dict[str, float | None]] = {}
            if objectives:
                with self.db.read() as session:
                    tallies = _tally(session, deployment_id, objectives, now)
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
            stale = deployment_id in oldest and _utc(oldest[deployment_id]) < cutoff
            if set(held) != firing[deployment_id] or stale:
                changed += self._apply(
                    _Found(deployment_id, namespace, name, objectives, held, burns), now, cutoff
                )
        return changed

    def _apply(self, found: _Found, now: dt.datetime, cutoff: dt.datetime) -> list[AlertInfo]:
        """Write what one evaluation found, re-reading the firing alerts under the deployment's
        lock so that concurrent evaluations fire once."""
        changed = []
        with self.db.write() as session:
            row = session.get(DeploymentRow, found.deployment_id, with_for_update=True)
            if row is None:  # deleted meanwhile, with its minutes and alerts
                return []
            session.execute(
                sa.delete(TrafficMinuteRow).where(
                    TrafficMinuteRow.deployment_id == found.deployment_id,
                    TrafficMinuteRow.minute < cutoff,
                )
            )
            firing = {(a.objective, a.rule): a for a in _firing(session, found.deployment_id)}
            by_name = {o.name: o for o in found.objectives}
            events: list[tuple[SloAlertRow, dict[str, Any]]] = []
            for key, proof in found.held.items():
                if key in firing:
                    continue
                objective = by_name[key[0]]
                proof["budget_remaining"] = self._budget_left(session, row.id, objective, now)
                alert = SloAlertRow(
                    id=uuid.uuid4().hex,
                    deployment_id=row.id,
                    objective=key[0],
                    severity=proof["severity"],
                    rule=key[1],
                    state=FIRING,
                    fired_at=now,
                    resolved_at=None,
                    evidence=proof,
                )
                session.add(alert)
                events.append((alert, {"alert": alert.id, **proof}))
            for key, alert in firing.items():
                if key in found.held:
                    continue
                alert.state, alert.resolved_at = RESOLVED, now
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
                    data["budget_remaining"] = self._budget_left(session, row.id, kept, now)
                events.append((alert, data))
            session.flush()
            for alert, data in events:
                self.events.append(
                    session,
                    f"slo.alert.{alert.state}",
                    f"{found.namespace}/{found.name}",
                    data,
                    namespace=found.namespace,
                )
                changed.append(AlertInfo.from_row(alert))
        return changed

    @staticmethod
    def _budget_left(
        session: Session, deployment_id: str, objective: Objective, now: dt.datetime
    ) -> float:
        tally = _tally(
            session, deployment_id, [objective], now, alert_windows=False, slo_window=True
        )
        return Budget.of(objective, tally[objective.name][SLO_WINDOW]).remaining


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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="slos", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        while True:
            try:
                self.slos.evaluate()
            except Exception:
                log.exception("SLO evaluation failed; it runs again in %.0f s", self.interval)
            if self._stop.wait(self.interval):
                return


# plumbing ---------------------------------------------------------------------------------------
def _utc(moment: dt.datetime) -> dt.datetime:
    """Aggregates bypass the column type: SQLite hands back naive UTC (or a string)."""
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _objectives(row: DeploymentRow) -> list[Objective]:
    return [Objective.model_validate(o) for o in row.slos]


def _firing(session: Session, deployment_id: str) -> list[SloAlertRow]:
    return list(
        session.scalars(
            sa.select(SloAlertRow)
            .where(SloAlertRow.deployment_id == deployment_id, SloAlertRow.state == FIRING)
            .order_by(SloAlertRow.fired_at)
        )
    )


def _tally(
    session: Session,
    deployment_id: str,
    objectives: Sequence[Objective],
    now: dt.datetime,
    *,
    alert_windows: bool = True,
    slo_window: bool = False,
) -> dict[str, dict[str, Counts]]:
    """Requests and bad requests per objective and window (the alert windows, and with
    ``slo_window`` the objective's own as ``SLO_WINDOW``), summed by the database in one query."""
    minute = TrafficMinuteRow.minute
    columns: list[sa.ColumnElement[Any]] = []
    keys: list[tuple[str, str]] = []
    earliest = floor_minute(now - LONGEST_WINDOW)
    for objective in objectives:
        starts = {w: floor_minute(now - length) for w, length in WINDOWS.items()}
        starts = starts if alert_windows else {}
        if slo_window:
            starts[SLO_WINDOW] = floor_minute(now - dt.timedelta(days=objective.window_days))
        earliest = min(earliest, *starts.values())
        bad = _bad(objective)
        for window, start in starts.items():
            for value in (TrafficMinuteRow.requests, bad):
                columns.append(sa.func.sum(sa.case((minute >= start, value), else_=0)))
            keys.append((objective.name, window))
    tallies: dict[str, dict[str, Counts]] = {o.name: {} for o in objectives}
    if not columns:
        return tallies
    sums = session.execute(
        sa.select(*columns).where(
            TrafficMinuteRow.deployment_id == deployment_id, minute >= earliest
        )
    ).one()
    for n, (name, window) in enumerate(keys):
        tallies[name][window] = Counts(int(sums[2 * n] or 0), int(sums[2 * n + 1] or 0))
    return tallies


def _bad(objective: Objective) -> sa.ColumnElement[Any]:
    """A minute's bad requests: its errors, or its requests in the buckets above the threshold
    (a request at the bound is good, as Prometheus' ``le`` counts it)."""
    if objective.kind == "availability":
        return TrafficMinuteRow.errors.expression
    above = [
        sa.func.coalesce(TrafficMinuteRow.buckets[i].as_integer(), 0)
        for i in range(objective.bucket + 1, len(BUCKETS) + 1)
    ]
    return sum(above[1:], above[0])
