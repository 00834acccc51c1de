"""Service level objectives and their burn-rate alert rules, as pure values and arithmetic.

An objective says which share of a deployment's requests must be good over a window (30 days by
default): for ``availability`` a request is bad when the gateway answered 5xx, for ``latency``
when it took longer than ``threshold_ms``. A realtime deployment has no requests to judge but a
lag: for ``lag`` the gateway samples it about once a second, and a sample is bad when the oldest
event the deployment has not done yet waited longer than ``threshold_s`` (so the target is the
share of the time the lag stays within it). The error budget is what the target leaves: 0.1 % of
the requests (or samples) for 99.9 %. The burn rate of a window is how fast it is being spent
there: the bad share divided by the budget's share (1 means it lasts exactly the SLO window).

The alert rules are the multiwindow, multi-burn-rate rules of the Google SRE workbook ("Alerting
on SLOs"): each holds when the burn rate is over its factor in a long window (it matters) and in a
short one (it still happens, so the alert resolves soon after the cause stops). The factors are the
workbook's for a 30-day window: 14.4 spends 2 % of the budget in an hour, 6 spends 5 % in 6 hours,
1 spends 10 % in 3 days.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from modelyard.errors import InvalidInput
from modelyard.telemetry.records import BUCKETS, LAG_BUCKETS

DEFAULT_WINDOW_DAYS = 30
MAX_WINDOW_DAYS = 90
MAX_OBJECTIVES = 20
THRESHOLDS_MS = tuple(round(bound * 1000, 6) for bound in BUCKETS)
THRESHOLDS_S = tuple(round(bound, 6) for bound in LAG_BUCKETS)
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _ms(value: float) -> str:
    return f"{value:g}"


class Objective(BaseModel):
    """One SLO of a deployment, e.g. ``Objective(name="availability", kind="availability",
    target=0.999)``, ``Objective(name="fast", kind="latency", target=0.99, threshold_ms=250)`` or,
    of a realtime deployment, ``Objective(name="lag-5s", kind="lag", target=0.99,
    threshold_s=5)``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    kind: Literal["availability", "latency", "lag"]
    target: float
    threshold_ms: float | None = None
    threshold_s: float | None = None
    """Of a lag objective: the age in seconds the oldest pending event may reach."""
    window_days: int = DEFAULT_WINDOW_DAYS

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"objective name {value!r}: use 1 to 63 lowercase letters, digits and '-', "
                "starting and ending with a letter or digit (e.g. 'availability')"
            )
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: float) -> float:
        if not (math.isfinite(value) and 0 < value < 1):
            raise ValueError(
                f"target {value} must lie strictly between 0 and 1, e.g. 0.999 for 99.9 % "
                "(a target of 1 leaves no error budget to spend)"
            )
        return value

    @field_validator("window_days")
    @classmethod
    def _window(cls, value: int) -> int:
        if not 1 <= value <= MAX_WINDOW_DAYS:
            raise ValueError(
                f"window_days {value} must be between 1 and {MAX_WINDOW_DAYS} "
                f"({DEFAULT_WINDOW_DAYS} is the usual SLO window)"
            )
        return value

    @model_validator(mode="after")
    def _threshold(self) -> Objective:
        if self.kind != "lag" and self.threshold_s is not None:
            raise ValueError(
                f"objective {self.name!r}: threshold_s belongs to lag objectives; leave it out "
                f"of a{'n' if self.kind == 'availability' else ''} {self.kind} objective"
            )
        if self.kind != "latency" and self.threshold_ms is not None:
            raise ValueError(
                f"objective {self.name!r}: threshold_ms belongs to latency objectives; "
                f"leave it out of a{'n' if self.kind == 'availability' else ''} {self.kind} "
                "objective"
            )
        if self.kind == "availability":
            return self
        if self.kind == "lag":
            if self.threshold_s is None or round(self.threshold_s, 6) not in THRESHOLDS_S:
                given = "no threshold_s" if self.threshold_s is None else _ms(self.threshold_s)
                raise ValueError(
                    f"objective {self.name!r}: {given} is not a lag bucket of the gateway; "
                    f"give threshold_s as one of {', '.join(_ms(t) for t in THRESHOLDS_S)}"
                )
        elif self.threshold_ms is None or round(self.threshold_ms, 6) not in THRESHOLDS_MS:
            given = "no threshold_ms" if self.threshold_ms is None else _ms(self.threshold_ms)
            raise ValueError(
                f"objective {self.name!r}: {given} is not a latency bucket of the gateway; "
                f"give threshold_ms as one of {', '.join(_ms(t) for t in THRESHOLDS_MS)}"
            )
        return self

    @property
    def bucket(self) -> int:
        """Index of the threshold's bucket: requests (lag samples) in later buckets are bad."""
        if self.kind == "lag":
            assert self.threshold_s is not None
            return THRESHOLDS_S.index(round(self.threshold_s, 6))
        assert self.threshold_ms is not None
        return THRESHOLDS_MS.index(round(self.threshold_ms, 6))

    @property
    def budget(self) -> float:
        """The share of requests that may be bad."""
        return 1.0 - self.target

    def describe(self) -> str:
        percent = f"{self.target * 100:.6g} %"
        if self.kind == "availability":
            return f"{percent} of requests answered without a 5xx over {self.window_days} days"
        if self.kind == "lag":
            return (
                f"{percent} of the time no event waits longer than {_ms(self.threshold_s or 0)} s "
                f"to be done over {self.window_days} days"
            )
        return (
            f"{percent} of requests answered within {_ms(self.threshold_ms or 0)} ms "
            f"over {self.window_days} days"
        )


def parse_objectives(items: Iterable[Objective | Mapping[str, Any]]) -> list[Objective]:
    """Validate objectives given as values or plain mappings (JSON, the CLI): InvalidInput with
    what to change, naming the objective."""
    parsed: list[Objective] = []
    for number, item in enumerate(items, 1):
        if isinstance(item, Objective):
            parsed.append(item)
            continue
        try:
            parsed.append(Objective.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(
                ".".join(str(p) for p in e["loc"]) + ": " + e["msg"].removeprefix("Value error, ")
                if e["loc"]
                else e["msg"].removeprefix("Value error, ")
                for e in exc.errors()
            )
            raise InvalidInput(f"objective {number}: {problems}", field="objectives") from exc
    names = [o.name for o in parsed]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInput(
            f"objective names must differ: {', '.join(repr(n) for n in twice)} given more than "
            "once; name each objective (e.g. 'availability', 'latency-250ms')",
            field="objectives",
        )
    if len(parsed) > MAX_OBJECTIVES:
        raise InvalidInput(f"at most {MAX_OBJECTIVES} objectives per deployment, got {len(parsed)}")
    return parsed


@dataclass(frozen=True)
class Counts:
    """Requests (lag samples) of a window and how many of them were bad for one objective."""

    total: int = 0
    bad: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.total + other.total, self.bad + other.bad)

    def burn_rate(self, objective: Objective) -> float | None:
        """None without traffic: no traffic spends no budget, and proves nothing either."""
        if self.total <= 0:
            return None
        return (self.bad / self.total) / objective.budget


@dataclass(frozen=True)
class Budget:
    """The error budget over an objective's window: bad requests allowed so far, spent, and the
    share left (negative once overspent)."""

    total: float
    consumed: int
    remaining: float

    @classmethod
    def of(cls, objective: Objective, window: Counts) -> Budget:
        allowed = window.total * objective.budget
        remaining = 1.0 - window.bad / allowed if allowed > 0 else 1.0
        return cls(total=allowed, consumed=window.bad, remaining=remaining)


WINDOWS: dict[str, dt.timedelta] = {
    "5m": dt.timedelta(minutes=5),
    "30m": dt.timedelta(minutes=30),
    "1h": dt.timedelta(hours=1),
    "6h": dt.timedelta(hours=6),
    "3d": dt.timedelta(days=3),
}
LONGEST_WINDOW = max(WINDOWS.values())


@dataclass(frozen=True)
class AlertRule:
    name: str
    severity: Literal["page", "ticket"]
    long: str
    short: str
    factor: float

    def holds(self, burn: dict[str, float | None]) -> bool:
        long, short = burn[self.long], burn[self.short]
        return long is not None and short is not None and long > self.factor and short > self.factor


RULES = (
    AlertRule("page-1h", "page", "1h", "5m", 14.4),
    AlertRule("page-6h", "page", "6h", "30m", 6.0),
    AlertRule("ticket-3d", "ticket", "3d", "6h", 1.0),
)


def evidence(
    objective: Objective, rule: AlertRule, burn: dict[str, float | None]
) -> dict[str, Any]:
    """Why ``rule`` holds, as an alert records it."""
    return {
        "objective": objective.name,
        "kind": objective.kind,
        "target": objective.target,
        "threshold_ms": objective.threshold_ms,
        **({"threshold_s": objective.threshold_s} if objective.kind == "lag" else {}),
        "rule": rule.name,
        "severity": rule.severity,
        "factor": rule.factor,
        "burn_rates": {rule.long: burn[rule.long], rule.short: burn[rule.short]},
    }
