"""Deployments: data scientists create, update and delete their Web APIs; the gateway syncs."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from modelyard.api.deps import Caller, Plane
from modelyard.api.realtime import drop_stores
from modelyard.delivery.records import RolloutInfo
from modelyard.errors import Forbidden
from modelyard.events.records import Event
from modelyard.serving.records import (
    DeploymentInfo,
    DeploymentSpec,
    RolloutStrategy,
    SpecPatch,
    Traffic,
)
from modelyard.types import Role

router = APIRouter(prefix="/namespaces/{namespace}/deployments", tags=["deployments"])
gateway_router = APIRouter(prefix="/gateway", tags=["gateway"])


class DeploymentCreate(DeploymentSpec):
    name: str = Field(description="DNS-1123 label: the API's path is /{namespace}/{name}/")
    rollout: RolloutStrategy | None = Field(
        None, description="How new revisions take the traffic (default: replace)"
    )


@router.post("", status_code=201)
def create(namespace: str, body: DeploymentCreate, plane: Plane, caller: Caller) -> DeploymentInfo:
    """Deploy a model version (by alias, ``latest`` or number) as a Web API."""
    caller.require(namespace, Role.EDITOR)
    spec = DeploymentSpec.model_validate(body.model_dump(exclude={"name", "rollout"}))
    info = plane.deployments.create(
        namespace, body.name, spec, actor=caller.key_id, rollout=body.rollout
    )
    plane.serving.wake()
    return plane.serving.describe(info)


@router.get("")
def list_deployments(namespace: str, plane: Plane, caller: Caller) -> list[DeploymentInfo]:
    caller.require(namespace, Role.VIEWER)
    return [plane.serving.describe(info) for info in plane.deployments.list_deployments(namespace)]


@router.get("/{name}")
def get(namespace: str, name: str, plane: Plane, caller: Caller) -> DeploymentInfo:
    """The deployment with its revisions, traffic, replicas and the autoscaler's last decision."""
    caller.require(namespace, Role.VIEWER)
    return plane.serving.describe(plane.deployments.get(namespace, name))


@router.patch("/{name}")
def update(
    namespace: str, name: str, patch: SpecPatch, plane: Plane, caller: Caller
) -> DeploymentInfo:
    """Change the model reference or the spec; a change makes a new revision."""
    caller.require(namespace, Role.EDITOR)
    info = plane.deployments.update(namespace, name, patch, actor=caller.key_id)
    plane.serving.wake()
    return plane.serving.describe(info)


@router.put("/{name}/traffic")
def set_traffic(
    namespace: str, name: str, traffic: Traffic, plane: Plane, caller: Caller
) -> DeploymentInfo:
    """Split traffic over ready revisions by percent; tags address one revision directly."""
    caller.require(namespace, Role.EDITOR)
    info = plane.deployments.set_traffic(namespace, name, traffic, actor=caller.key_id)
    plane.serving.wake()
    return plane.serving.describe(info)


@router.put("/{name}/strategy")
def set_strategy(
    namespace: str, name: str, strategy: RolloutStrategy, plane: Plane, caller: Caller
) -> DeploymentInfo:
    """Replace, or canary steps with an analysis at each: how the next revisions roll out."""
    caller.require(namespace, Role.EDITOR)
    info = plane.deployments.set_strategy(namespace, name, strategy, actor=caller.key_id)
    return plane.serving.describe(info)


class RolloutStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    revision: int = Field(ge=1, description="A revision that was ready once")


@router.get("/{name}/rollouts")
def list_rollouts(
    namespace: str, name: str, plane: Plane, caller: Caller, limit: int = 20
) -> list[RolloutInfo]:
    """The deployment's rollouts, newest first, with each step's analysis."""
    caller.require(namespace, Role.VIEWER)
    return plane.rollouts.history(namespace, name, min(max(limit, 1), 200))


@router.post("/{name}/rollouts", status_code=201)
def start_rollout(
    namespace: str, name: str, body: RolloutStart, plane: Plane, caller: Caller
) -> RolloutInfo:
    """Roll a ready revision out in canary steps (409 while another rollout is under way)."""
    caller.require(namespace, Role.EDITOR)
    info = plane.rollouts.start(namespace, name, body.revision, actor=caller.key_id)
    plane.serving.wake()
    return info


@router.post("/{name}/rollouts/{action}")
def act_on_rollout(
    namespace: str,
    name: str,
    action: Literal["promote", "rollback", "pause", "resume"],
    plane: Plane,
    caller: Caller,
) -> RolloutInfo:
    """Promote, roll back, pause or resume the rollout under way, by hand."""
    caller.require(namespace, Role.EDITOR)
    info: RolloutInfo = getattr(plane.rollouts, action)(namespace, name, actor=caller.key_id)
    plane.serving.wake()
    return info


@router.get("/{name}/history")
def history(
    namespace: str, name: str, plane: Plane, caller: Caller, limit: int = 100
) -> list[Event]:
    """Who created, changed, deployed, promoted, rolled back or moved traffic, and when."""
    caller.require(namespace, Role.VIEWER)
    plane.deployments.get(namespace, name)  # 404 for a deployment that does not exist
    return plane.events.history(namespace, f"{namespace}/{name}", min(max(limit, 1), 1000))


@router.delete("/{name}", status_code=204)
def delete(namespace: str, name: str, plane: Plane, caller: Caller) -> Response:
    """Delete the deployment; its replicas drain and stop (a realtime deployment's queued
    triggers, dead letters and predictions go too)."""
    caller.require(namespace, Role.EDITOR)
    info = plane.deployments.get(namespace, name)
    plane.deployments.delete(namespace, name, actor=caller.key_id)
    plane.serving.wake()
    if info.spec.realtime is not None:
        drop_stores(plane, namespace, name, info.shadow.revision if info.shadow else None)
    return Response(status_code=204)


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: int = Field(0, ge=0)
    epoch: str = Field("", max_length=64)
    """The epoch ``since`` was issued in; another one than the control plane's gets the whole
    table."""
    stats: dict[str, tuple[float, int]] = Field(default_factory=dict)
    demand: list[str] = Field(default_factory=list)
    wait: float = Field(1.0, ge=0, le=5)
    traffic: dict[str, Any] = Field(default_factory=dict)
    backlog: list[dict[str, Any]] = Field(default_factory=list, max_length=3600)
    """Reports an earlier poll could not deliver (the control plane was down)."""


@gateway_router.post("/sync")
async def sync(body: SyncRequest, plane: Plane, caller: Caller) -> dict[str, Any]:
    """The gateway's long poll: measurements in, the routing table out once it changed."""
    if not caller.admin:
        raise Forbidden("only the data plane's key (an admin key) may sync a gateway")
    version, table = await run_in_threadpool(
        plane.serving.sync,
        body.since,
        body.stats,
        body.demand,
        body.wait,
        body.traffic,
        body.epoch,
        body.backlog,
    )
    return {"version": version, "epoch": plane.serving.epoch, "table": table}
