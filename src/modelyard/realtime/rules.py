"""Trigger rules: which events of a stream cause an inference. Pure logic, no clock of its own.

A rule matches an event by its type (any of ``types``; none listed: every type), then every
condition on its fields (``{"field": "price", "op": ">=", "value": 100}``), then an optional
Python predicate ``module:function(event) -> bool``. ``debounce`` lets at most one trigger per
entity through per window of event time: an event that matches less than ``debounce`` after the
entity's last trigger is dropped. Time is the events' own, so a replay over the log drops the same
events as the router did online.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelyard.errors import InvalidInput
from modelyard.plugins import import_target
from modelyard.realtime.durations import seconds
from modelyard.realtime.streams import RawEvent

Op = Literal["==", "!=", ">", ">=", "<", "<=", "in", "not in", "exists"]
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
}


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str = Field(min_length=1)
    op: Op = "=="
    value: Any = None

    def holds(self, data: dict[str, Any]) -> bool:
        if self.op == "exists":
            return self.field in data
        if self.field not in data:
            return False
        try:
            return bool(_OPS[self.op](data[self.field], self.value))
        except TypeError:  # "abc" > 3: a condition that cannot hold
            return False


class TriggerRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    types: list[str] = Field(default_factory=list, description="Event types; none: every type")
    conditions: list[Condition] = Field(default_factory=list)
    predicate: str | None = Field(None, description="module:function(event) -> bool")
    debounce: str | None = Field(None, description="At most one trigger per entity per window")

    @field_validator("debounce")
    @classmethod
    def _debounce(cls, value: str | None) -> str | None:
        if value is not None:
            seconds(value, "debounce")
        return value

    @field_validator("predicate")
    @classmethod
    def _predicate(cls, value: str | None) -> str | None:
        if value is not None:
            check_target(value, "predicate")
        return value


def check_target(target: str, what: str) -> str:
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise InvalidInput(f"invalid {what} {target!r}: write module:function", field=what)
    return target


def load_callable(target: str, what: str = "function") -> Callable[..., Any]:
    """Import ``module:function``; the message says what went wrong, and how to fix it."""
    check_target(target, what)
    found = import_target(
        target, f"the {what}", hint="install its module or put it on PYTHONPATH (the env)"
    )
    if not callable(found):
        raise InvalidInput(f"the {what} {target!r} is not callable")
    return found  # type: ignore[no-any-return]


class Matcher:
    """A rule ready to run: the predicate imported, the debounce state per entity."""

    def __init__(self, rule: TriggerRule) -> None:
        self.rule = rule
        self.types = frozenset(rule.types)
        self.predicate = load_callable(rule.predicate, "predicate") if rule.predicate else None
        self.debounce_s = seconds(rule.debounce, "debounce") if rule.debounce else 0.0
        self._last: dict[str, float] = {}

    def matches(self, event: RawEvent) -> bool:
        """Whether the event's own fields match (no debounce)."""
        if self.types and event.type not in self.types:
            return False
        if not all(c.holds(event.data) for c in self.rule.conditions):
            return False
        return self.predicate is None or bool(self.predicate(event))

    def admit(self, event: RawEvent) -> bool:
        """Whether the event triggers: it matches and is not debounced."""
        if not self.matches(event):
            return False
        if self.debounce_s:
            last = self._last.get(event.entity)
            if last is not None and event.time - last < self.debounce_s:
                return False
            self._last[event.entity] = event.time
        return True

    def triggers(self, events: Iterable[RawEvent]) -> list[RawEvent]:
        return [event for event in events if self.admit(event)]
