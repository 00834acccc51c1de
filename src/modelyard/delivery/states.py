"""The states of SLO alerts, stored and reported as these exact strings: ``firing`` ->
``resolved``. (A rollout's are the deployment's: `modelyard.serving.states.RolloutState`.)
"""

from __future__ import annotations

import enum

from modelyard.events.types import EventType


class AlertState(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


ALERT_EVENTS: dict[AlertState, EventType] = {
    AlertState.FIRING: EventType.SLO_ALERT_FIRING,
    AlertState.RESOLVED: EventType.SLO_ALERT_RESOLVED,
}
"""The event an alert's move to a state appends."""
