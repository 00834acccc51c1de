"""Streams and realtime deployments: created, changed and deleted here; events and predictions go
through the gateway."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import Field

from modelyard.api.deps import Caller, Plane
from modelyard.controlplane import ControlPlane
from modelyard.events.types import EventType
from modelyard.realtime.lag import measure
from modelyard.realtime.queue import DeadLetter
from modelyard.realtime.records import RealtimeInfo, RealtimeSpec
from modelyard.realtime.streams import StreamInfo, StreamSpec
from modelyard.types import Role

streams = APIRouter(prefix="/namespaces/{namespace}/streams", tags=["realtime"])
realtime = APIRouter(prefix="/namespaces/{namespace}/realtime", tags=["realtime"])


class StreamCreate(StreamSpec):
    name: str = Field(description="DNS-1123 label: events go to /{namespace}/streams/{name}/events")


class RealtimeCreate(RealtimeSpec):
    name: str = Field(description="DNS-1123 label: reads at /{namespace}/predictions/{name}/...")


@streams.post("", status_code=201)
def create_stream(namespace: str, body: StreamCreate, plane: Plane, caller: Caller) -> StreamInfo:
    """A stream: where a product's events of one kind go, and what they must look like."""
    caller.require(namespace, Role.EDITOR)
    spec = StreamSpec.model_validate(body.model_dump(exclude={"name"}))
    info = plane.catalog.create_stream(namespace, body.name, spec, actor=caller.key_id)
    plane.serving.wake()
    return info


@streams.get("")
def list_streams(namespace: str, plane: Plane, caller: Caller) -> list[StreamInfo]:
    caller.require(namespace, Role.VIEWER)
    return plane.catalog.list_streams(namespace)


@streams.get("/{name}")
def get_stream(namespace: str, name: str, plane: Plane, caller: Caller) -> StreamInfo:
    caller.require(namespace, Role.VIEWER)
    return plane.catalog.get_stream(namespace, name)


@streams.delete("/{name}", status_code=204)
def delete_stream(namespace: str, name: str, plane: Plane, caller: Caller) -> Response:
    """Delete the stream and its raw log (refused while a realtime deployment reads it)."""
    caller.require(namespace, Role.EDITOR)
    plane.catalog.delete_stream(namespace, name, actor=caller.key_id)
    plane.realtime_stores.events.drop(f"{namespace}/{name}")
    plane.serving.wake()
    return Response(status_code=204)


@streams.delete("/{name}/entities/{entity}/events")
def delete_entity_events(
    namespace: str, name: str, entity: str, plane: Plane, caller: Caller
) -> dict[str, int]:
    """Remove every event of one entity from the raw log (a user's right to be forgotten)."""
    caller.require(namespace, Role.EDITOR)
    plane.catalog.get_stream(namespace, name)
    deleted = plane.realtime_stores.events.delete_entity(f"{namespace}/{name}", entity)
    with plane.db.write() as session:
        plane.events.append(
            session,
            EventType.STREAM_ENTITY_DELETED,
            f"{namespace}/{name}",
            {"entity": entity, "deleted": deleted},
            namespace=namespace,
            actor=caller.key_id,
        )
    return {"deleted": deleted}


def _describe(plane: ControlPlane, info: RealtimeInfo) -> RealtimeInfo:
    return info.model_copy(update={"status": plane.realtime_workers.status(info.key)})


@realtime.post("", status_code=201)
def create(namespace: str, body: RealtimeCreate, plane: Plane, caller: Caller) -> RealtimeInfo:
    """A realtime deployment: a stream, a trigger rule, an inference function and a model."""
    caller.require(namespace, Role.EDITOR)
    spec = RealtimeSpec.model_validate(body.model_dump(exclude={"name"}))
    info = plane.catalog.create(namespace, body.name, spec, actor=caller.key_id)
    plane.realtime_workers.wake()
    plane.serving.wake()
    return _describe(plane, info)


@realtime.get("")
def list_realtime(namespace: str, plane: Plane, caller: Caller) -> list[RealtimeInfo]:
    caller.require(namespace, Role.VIEWER)
    return [_describe(plane, info) for info in plane.catalog.list_deployments(namespace)]


@realtime.get("/{name}")
def get(namespace: str, name: str, plane: Plane, caller: Caller) -> RealtimeInfo:
    caller.require(namespace, Role.VIEWER)
    return _describe(plane, plane.catalog.get(namespace, name))


@realtime.patch("/{name}")
def update(
    namespace: str, name: str, changes: dict[str, Any], plane: Plane, caller: Caller
) -> RealtimeInfo:
    """Change fields of the spec; the worker restarts with the new one."""
    caller.require(namespace, Role.EDITOR)
    info = plane.catalog.update(namespace, name, changes, actor=caller.key_id)
    plane.realtime_workers.wake()
    plane.serving.wake()
    return _describe(plane, info)


@realtime.delete("/{name}", status_code=204)
def delete(namespace: str, name: str, plane: Plane, caller: Caller) -> Response:
    """Delete it: its worker stops; its queued triggers, dead letters and predictions go."""
    caller.require(namespace, Role.EDITOR)
    plane.catalog.delete(namespace, name, actor=caller.key_id)
    plane.realtime_workers.wake()
    plane.serving.wake()
    key = f"{namespace}/{name}"
    plane.realtime_stores.queue.drop(key)
    plane.realtime_stores.predictions.drop(key)
    return Response(status_code=204)


@realtime.get("/{name}/lag")
def lag(namespace: str, name: str, plane: Plane, caller: Caller) -> dict[str, float]:
    """Events and triggers not done yet, and the age of the oldest, in seconds."""
    caller.require(namespace, Role.VIEWER)
    info = plane.catalog.get(namespace, name)
    stores = plane.realtime_stores
    now = plane.events.clock().timestamp()
    found = measure(stores.events, stores.queue, f"{namespace}/{info.spec.stream}", info.key, now)
    return {"events": found.events, "oldest_s": found.oldest_s}


@realtime.get("/{name}/dead-letters")
def dead_letters(
    namespace: str, name: str, plane: Plane, caller: Caller, limit: int = 100
) -> list[DeadLetter]:
    """Triggers whose inference failed ``max_attempts`` times, with the last traceback."""
    caller.require(namespace, Role.VIEWER)
    info = plane.catalog.get(namespace, name)
    return plane.realtime_stores.queue.dead_letters(info.key, min(max(limit, 1), 1000))


@realtime.post("/{name}/dead-letters/retry")
def retry_dead_letters(namespace: str, name: str, plane: Plane, caller: Caller) -> dict[str, int]:
    """Queue every dead letter again (after a fix of the function or the model)."""
    caller.require(namespace, Role.EDITOR)
    info = plane.catalog.get(namespace, name)
    return {"retried": plane.realtime_stores.queue.retry(info.key)}
