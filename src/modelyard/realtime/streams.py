"""Streams: what a product's events look like, and the checks every event passes at ingest.

A stream names the fields that matter to the platform: the entity key (``user_id``), the event id
(one id is one event, for the whole retention), the event type, and the event time (default: the
time of ingest). Optional field types are checked at ingest. ``retention`` is how long the raw log
keeps an event (and so how long its id is remembered); ``allowed_lateness`` is how far an event's
own time may lie behind (or ahead of) the time it arrives.

Parsing a body is pure: ``parse_events`` turns one JSON event, a JSON array or NDJSON into
validated `NewEvent` values, or raises `InvalidInput` naming the event's index and the problem.
Nothing here touches storage, so a batch with one bad event is refused whole before any write.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelyard.errors import InvalidInput, MalformedJson
from modelyard.realtime.durations import seconds
from modelyard.types import Record

RESERVED_PATHS = frozenset({"streams", "predictions"})
"""Second path segments of the gateway's realtime routes: no deployment may take these names."""
MAX_EVENTS_PER_BATCH = 10_000
MAX_ID_LENGTH = 256


class FieldType(enum.StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    OBJECT = "object"
    ARRAY = "array"

    def accepts(self, value: Any) -> bool:
        if self is FieldType.STRING:
            return isinstance(value, str)
        if self is FieldType.INTEGER:
            return isinstance(value, int) and not isinstance(value, bool)
        if self is FieldType.NUMBER:
            return isinstance(value, int | float) and not isinstance(value, bool)
        if self is FieldType.BOOLEAN:
            return isinstance(value, bool)
        if self is FieldType.OBJECT:
            return isinstance(value, dict)
        return isinstance(value, list)


class StreamSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entity_field: str = Field("user_id", min_length=1, description="The entity key's field")
    id_field: str = Field("event_id", min_length=1, description="The event id's field")
    type_field: str = Field("type", min_length=1, description="The event type's field")
    time_field: str | None = Field(
        None, description="The event time's field (Unix seconds or ISO 8601); none: ingest time"
    )
    fields: dict[str, FieldType] = Field(
        default_factory=dict, description="Types checked at ingest, by field name"
    )
    retention: str = Field("7d", description="How long the raw log keeps events (and their ids)")
    allowed_lateness: str = Field("1h", description="How far an event's time may be off arrival")
    max_event_kb: int = Field(64, ge=1, le=1024, description="Largest event, in KiB")

    @field_validator("retention", "allowed_lateness")
    @classmethod
    def _duration(cls, value: str) -> str:
        seconds(value)
        return value

    @property
    def retention_s(self) -> float:
        return seconds(self.retention, "retention")

    @property
    def lateness_s(self) -> float:
        return seconds(self.allowed_lateness, "allowed lateness")


class StreamInfo(Record):
    namespace: str
    name: str
    spec: StreamSpec
    created_at: dt.datetime
    created_by: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event that passed the stream's checks, before it has a place in the log."""

    event_id: str
    entity: str
    type: str
    time: float
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RawEvent:
    """An event of the raw log: ``seq`` is its place in the stream's log (log order)."""

    seq: int
    event_id: str
    entity: str
    type: str
    time: float
    ingested_at: float
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "event_id": self.event_id,
            "entity": self.entity,
            "type": self.type,
            "time": self.time,
            "ingested_at": self.ingested_at,
            "data": self.data,
        }


def check_not_reserved(name: str) -> None:
    """Deployment names may not be the realtime routes' path segments."""
    if name in RESERVED_PATHS:
        raise InvalidInput(
            f"{name!r} is reserved: the gateway's /{{namespace}}/{name}/... paths are realtime "
            "routes; choose another name"
        )


def parse_events(body: bytes, spec: StreamSpec, now: float) -> list[NewEvent]:
    """The events of a request body (one JSON object, a JSON array, or NDJSON), all checked; the
    first problem raises `InvalidInput` with the event's ``index`` in the batch."""
    items = _decode(body)
    if not items:
        raise InvalidInput("no events in the body: send a JSON object, an array or NDJSON")
    if len(items) > MAX_EVENTS_PER_BATCH:
        raise InvalidInput(
            f"{len(items)} events in one request: send at most {MAX_EVENTS_PER_BATCH}"
        )
    return [check_event(i, item, spec, now) for i, item in enumerate(items)]


def _decode(body: bytes) -> list[Any]:
    text = body.strip()
    if not text:
        return []
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        document = None
        lines = [line for line in text.split(b"\n") if line.strip()]
        if len(lines) < 2:
            raise MalformedJson(
                "the body is not JSON: send one event, a JSON array or NDJSON", index=0
            ) from None
        items = []
        for i, line in enumerate(lines):
            try:
                items.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise MalformedJson(
                    f"event {i}: line {i + 1} of the NDJSON body is not JSON ({exc})", index=i
                ) from None
        return items
    return document if isinstance(document, list) else [document]


def check_event(index: int, item: Any, spec: StreamSpec, now: float) -> NewEvent:
    def bad(problem: str, field: str | None = None) -> InvalidInput:
        details: dict[str, Any] = {"index": index}
        if field is not None:
            details["field"] = field
        return InvalidInput(f"event {index}: {problem}", **details)

    if not isinstance(item, dict):
        raise bad(f"an event is a JSON object, got {type(item).__name__}")
    event_id = _key(item, spec.id_field, "event id", bad)
    entity = _key(item, spec.entity_field, "entity key", bad)
    kind = item.get(spec.type_field, "")
    if not isinstance(kind, str):
        raise bad(f"the type field {spec.type_field!r} must be a string", spec.type_field)
    for name, field_type in spec.fields.items():
        value = item.get(name)
        if value is not None and not field_type.accepts(value):
            raise bad(f"field {name!r} must be {field_type.value}, got {_json_type(value)}", name)
    when = now
    if spec.time_field is not None:
        if spec.time_field not in item:
            raise bad(f"no event time: the field {spec.time_field!r} is missing", spec.time_field)
        when = _time(item[spec.time_field], spec.time_field, bad)
        if abs(now - when) > spec.lateness_s:
            side = "behind" if when < now else "ahead of"
            raise bad(
                f"its time is {abs(now - when):.0f} s {side} the time it arrived, over the "
                f"stream's allowed lateness ({spec.allowed_lateness})",
                spec.time_field,
            )
    if len(orjson.dumps(item)) > spec.max_event_kb * 1024:
        raise bad(f"over {spec.max_event_kb} KiB, the stream's max_event_kb")
    return NewEvent(event_id, entity, kind, when, item)


def _key(item: dict[str, Any], field: str, what: str, bad: Any) -> str:
    value = item.get(field)
    if value is None:
        raise bad(f"no {what}: the field {field!r} is missing", field)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise bad(f"the {what} {field!r} must be a string or an integer", field)
    text = str(value)
    if not text or len(text) > MAX_ID_LENGTH:
        raise bad(f"the {what} {field!r} must have 1 to {MAX_ID_LENGTH} characters", field)
    return text


def _time(value: Any, field: str, bad: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            return parsed.timestamp()
    raise bad(f"the event time {field!r} must be Unix seconds or an ISO 8601 time", field)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "null"
