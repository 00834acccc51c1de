"""What delivery hands out and reads: rollouts, SLO status and alerts.

Pydantic records only, shared by the services (`rollout`, `slo`), the API and the SDK, which
imports them without loading the database layer or numpy.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from modelyard.delivery.burnrate import Objective
from modelyard.delivery.states import AlertState
from modelyard.serving.states import RolloutState
from modelyard.types import Record

if TYPE_CHECKING:
    from modelyard.store.schema import SloAlertRow


class RolloutInfo(Record):
    id: str
    stable: int
    canary: int
    state: RolloutState
    step: int
    percent: int
    steps: list[int]
    step_started_at: dt.datetime
    analyses: list[dict[str, Any]]
    """The verdict of every finished step, and of the one that ended the rollout."""
    last_verdict: dict[str, Any] | None = None
    """The current step's latest analysis (kept in memory; none after a restart until the next)."""
    strategy: str = "canary"
    """``canary`` (judged steps) or ``shadow`` (beside stable until decided by hand)."""
    shadow: dict[str, int] | None = None
    """A realtime shadow's predictions compared with the primary's for the same trigger events:
    ``match``, ``mismatch`` and ``missing`` (the primary made none within a minute)."""
    reason: str | None
    started_by: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None


class AlertInfo(Record):
    id: str
    objective: str
    rule: str
    severity: str
    state: AlertState
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
    """Requests judged over the objective's window (lag samples, for a lag objective)."""
    bad: int
    sli: float | None
    """Share of good requests (samples) over the window; None without any."""
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
