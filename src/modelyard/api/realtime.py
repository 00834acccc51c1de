"""Streams and realtime deployments: created, changed and deleted here; events and predictions go
through the gateway. A realtime deployment is a deployment (``/deployments`` shows it too, with
its revisions); these routes are its realtime view."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Response
from pydantic import BaseModel, ConfigDict, Field

from modelyard.api.deps import Caller, Plane
from modelyard.controlplane import ControlPlane
from modelyard.delivery.records import RolloutInfo
from modelyard.errors import Forbidden
from modelyard.events.types import EventType
from modelyard.realtime.catalog import realtime_info
from modelyard.realtime.emitter import PredictionEventBatch
from modelyard.realtime.lag import measure
from modelyard.realtime.queue import DeadLetter
from modelyard.realtime.records import RealtimeInfo, RealtimeSpec
from modelyard.realtime.shadow import shadow_key
from modelyard.realtime.streams import StreamInfo, StreamSpec
from modelyard.serving.records import DeploymentInfo
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


def _describe(plane: ControlPlane, info: DeploymentInfo) -> RealtimeInfo:
    """With its worker's state: the replicas of its revisions."""
    return realtime_info(plane.serving.describe(info))


def drop_stores(plane: ControlPlane, namespace: str, name: str, shadow: int | None = None) -> None:
    """Forget a deleted realtime deployment's queued triggers, dead letters and predictions
    (and those its shadow revision ``shadow`` kept aside)."""
    key = f"{namespace}/{name}"
    for dropped in (key, shadow_key(key, shadow) if shadow else None):
        if dropped is not None:
            plane.realtime_stores.queue.drop(dropped)
            plane.realtime_stores.predictions.drop(dropped)


@realtime.post("", status_code=201)
def create(namespace: str, body: RealtimeCreate, plane: Plane, caller: Caller) -> RealtimeInfo:
    """A realtime deployment: a stream, a trigger rule, an inference function and a model."""
    caller.require(namespace, Role.EDITOR)
    spec = RealtimeSpec.model_validate(body.model_dump(exclude={"name"}))
    plane.catalog.create(namespace, body.name, spec, actor=caller.key_id)
    plane.serving.wake()
    return _describe(plane, plane.catalog.deployment(namespace, body.name))


@realtime.get("")
def list_realtime(namespace: str, plane: Plane, caller: Caller) -> list[RealtimeInfo]:
    caller.require(namespace, Role.VIEWER)
    return [_describe(plane, info) for info in plane.catalog.realtime_deployments(namespace)]


@realtime.get("/{name}")
def get(namespace: str, name: str, plane: Plane, caller: Caller) -> RealtimeInfo:
    caller.require(namespace, Role.VIEWER)
    return _describe(plane, plane.catalog.deployment(namespace, name))


@realtime.patch("/{name}")
def update(
    namespace: str, name: str, changes: dict[str, Any], plane: Plane, caller: Caller
) -> RealtimeInfo:
    """Change fields of the spec: a new revision, whose worker replaces the running one once
    it is ready."""
    caller.require(namespace, Role.EDITOR)
    plane.catalog.update(namespace, name, changes, actor=caller.key_id)
    plane.serving.wake()
    return _describe(plane, plane.catalog.deployment(namespace, name))


@realtime.delete("/{name}", status_code=204)
def delete(namespace: str, name: str, plane: Plane, caller: Caller) -> Response:
    """Delete it: its worker stops; its queued triggers, dead letters and predictions go."""
    caller.require(namespace, Role.EDITOR)
    shadow = plane.catalog.deployment(namespace, name).shadow
    plane.catalog.delete(namespace, name, actor=caller.key_id)
    plane.serving.wake()
    drop_stores(plane, namespace, name, shadow.revision if shadow else None)
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


@realtime.post("/{name}/prediction-events")
def append_prediction_events(
    namespace: str,
    name: str,
    body: PredictionEventBatch,
    plane: Plane,
    caller: Caller,
    x_modelyard_replica_token: str = Header(""),
) -> dict[str, int]:
    """A worker's new predictions as ``realtime.prediction`` events (``emit_events``): only a
    worker of the deployment, which proves it with its revision's replica token, appends them."""
    caller.require(namespace, Role.VIEWER)
    appended = plane.catalog.append_predictions(
        namespace, name, x_modelyard_replica_token, body.events
    )
    return {"appended": appended}


class ShadowResults(BaseModel):
    """A shadow worker's comparison counts since its last report (`modelyard.realtime.shadow`)."""

    model_config = ConfigDict(extra="forbid")
    revision: int = Field(ge=1)
    match: int = Field(0, ge=0)
    mismatch: int = Field(0, ge=0)
    missing: int = Field(0, ge=0)


@realtime.post("/{name}/shadow-results")
def shadow_results(
    namespace: str,
    name: str,
    body: ShadowResults,
    plane: Plane,
    caller: Caller,
    x_modelyard_replica_token: str = Header(""),
) -> RolloutInfo:
    """Add a shadow worker's counts to its rollout (only the shadow revision's worker sends
    them, proving it with its replica token)."""
    caller.require(namespace, Role.VIEWER)
    if plane.catalog.worker_revision(namespace, name, x_modelyard_replica_token) != body.revision:
        raise Forbidden(f"the replica token is not revision {body.revision}'s")
    counts = body.model_dump(exclude={"revision"})
    return plane.rollouts.record_shadow(namespace, name, body.revision, counts)
