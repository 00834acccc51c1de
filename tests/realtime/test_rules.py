"""Trigger rules as pure logic: types, conditions, a predicate, a debounce on event time."""

from __future__ import annotations

from modelyard.realtime.rules import Condition, Matcher, TriggerRule
from modelyard.realtime.streams import RawEvent


def ev(seq: int, type: str, time: float, entity: str = "u", **data: object) -> RawEvent:
    return RawEvent(seq, f"e{seq}", entity, type, time, time, {"type": type, **data})


def is_big(event: RawEvent) -> bool:
    return float(event.data.get("price", 0)) >= 100


def test_types_and_conditions() -> None:
    rule = TriggerRule(types=["add_to_cart"], conditions=[Condition(field="qty", op=">", value=1)])
    matcher = Matcher(rule)
    assert matcher.matches(ev(1, "add_to_cart", 0, qty=2))
    assert not matcher.matches(ev(2, "add_to_cart", 0, qty=1))
    assert not matcher.matches(ev(3, "view", 0, qty=5))
    assert not matcher.matches(ev(4, "add_to_cart", 0))  # a missing field never holds
    assert not matcher.matches(ev(5, "add_to_cart", 0, qty="many"))  # nor a wrong type
    assert Matcher(TriggerRule()).matches(ev(6, "anything", 0))


def test_predicate() -> None:
    matcher = Matcher(TriggerRule(predicate="tests.realtime.test_rules:is_big"))
    assert matcher.matches(ev(1, "buy", 0, price=120))
    assert not matcher.matches(ev(2, "buy", 0, price=20))


def test_debounce_per_entity_on_event_time() -> None:
    matcher = Matcher(TriggerRule(debounce="10s"))
    events = [
        ev(1, "a", 0.0),
        ev(2, "a", 5.0),  # within 10 s of the last trigger: dropped
        ev(3, "a", 2.0, entity="v"),  # another entity: its own window
        ev(4, "a", 10.0),
        ev(5, "a", 19.9),
        ev(6, "a", 20.0),
    ]
    assert [e.seq for e in matcher.triggers(events)] == [1, 3, 4, 6]
    again = Matcher(TriggerRule(debounce="10s"))  # replay from the start: the same answer
    assert [e.seq for e in again.triggers(events)] == [1, 3, 4, 6]
