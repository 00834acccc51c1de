"""Parsing and checking events at ingest: pure, every problem names the event's index."""

from __future__ import annotations

import orjson
import pytest

from modelyard.errors import InvalidInput, MalformedJson
from modelyard.realtime.streams import StreamSpec, check_not_reserved, parse_events

NOW = 1_700_000_000.0
SPEC = StreamSpec(time_field="ts", fields={"price": "number", "sku": "string"})


def event(i: int, **extra: object) -> dict[str, object]:
    return {"event_id": f"e{i}", "user_id": "u1", "type": "view", "ts": NOW, **extra}


def test_one_object_an_array_and_ndjson() -> None:
    assert len(parse_events(b'{"event_id": 1, "user_id": 2, "ts": 1700000000}', SPEC, NOW)) == 1
    body = b'[{"event_id": "a", "user_id": "u", "ts": 1700000000}]'
    assert parse_events(body, SPEC, NOW)[0].entity == "u"
    ndjson = b'{"event_id": "a", "user_id": "u", "ts": 1700000000}\n' * 3
    assert [e.event_id for e in parse_events(ndjson, SPEC, NOW)] == ["a", "a", "a"]


@pytest.mark.parametrize(
    ("item", "problem", "field"),
    [
        ({"user_id": "u", "ts": NOW}, "no event id", "event_id"),
        ({"event_id": "x", "ts": NOW}, "no entity key", "user_id"),
        ({"event_id": "x", "user_id": "u", "ts": NOW, "price": "1"}, "must be number", "price"),
        ({"event_id": "x", "user_id": "u", "ts": NOW - 7200}, "allowed lateness", "ts"),
        ({"event_id": "x", "user_id": "u"}, "no event time", "ts"),
        ({"event_id": True, "user_id": "u", "ts": NOW}, "string or an integer", "event_id"),
    ],
)
def test_a_bad_event_names_its_index_and_problem(
    item: dict[str, object], problem: str, field: str
) -> None:
    body = orjson.dumps([event(0), event(1), item])
    with pytest.raises(InvalidInput) as caught:
        parse_events(body, SPEC, NOW)
    assert caught.value.message.startswith("event 2: ")
    assert problem in caught.value.message
    assert caught.value.details == {"index": 2, "field": field}


def test_malformed_bodies() -> None:
    with pytest.raises(MalformedJson):  # not JSON: 400, as the control plane's API says it
        parse_events(b"{not json", SPEC, NOW)
    for body in (b"", b"[]", b"[1]"):  # JSON, but no events: 422
        with pytest.raises(InvalidInput) as caught:
            parse_events(body, SPEC, NOW)
        assert not isinstance(caught.value, MalformedJson)
    with pytest.raises(MalformedJson, match="event 1: line 2"):
        parse_events(b'{"event_id": 1, "user_id": 1, "ts": 1700000000}\n{oops\n', SPEC, NOW)


def test_iso_times_and_ingest_time() -> None:
    iso = event(0, ts="2023-11-14T22:13:20+00:00")
    assert parse_events(orjson.dumps(iso), SPEC, NOW)[0].time == NOW
    untimed = StreamSpec()
    assert parse_events(b'{"event_id": 1, "user_id": 1}', untimed, 42.0)[0].time == 42.0


def test_deployment_names_of_the_realtime_routes_are_reserved() -> None:
    for name in ("streams", "predictions"):
        with pytest.raises(InvalidInput, match="reserved"):
            check_not_reserved(name)
    check_not_reserved("iris")
