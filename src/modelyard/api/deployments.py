"""Deployments: data scientists create, update and delete their Web APIs; the gateway syncs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from modelyard.api.deps import Caller, Plane
from modelyard.errors import Forbidden
from modelyard.serving.deployments import DeploymentInfo, DeploymentSpec, SpecPatch, Traffic
from modelyard.types import Role

router = APIRouter(prefix="/namespaces/{namespace}/deployments", tags=["deployments"])
gateway_router = APIRouter(prefix="/gateway", tags=["gateway"])


class DeploymentCreate(DeploymentSpec):
    name: str = Field(description="DNS-1123 label: the API's path is /{namespace}/{name}/")


@router.post("", status_code=201)
def create(namespace: str, body: DeploymentCreate, plane: Plane, caller: Caller) -> DeploymentInfo:
    """Deploy a model version (by alias, ``latest`` or number) as a Web API."""
    caller.require(namespace, Role.EDITOR)
    spec = DeploymentSpec.model_validate(body.model_dump(exclude={"name"}))
    info = plane.deployments.create(namespace, body.name, spec, actor=caller.key_id)
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


@router.delete("/{name}", status_code=204)
def delete(namespace: str, name: str, plane: Plane, caller: Caller) -> Response:
    """Delete the deployment; its replicas drain and stop."""
    caller.require(namespace, Role.EDITOR)
    plane.deployments.delete(namespace, name, actor=caller.key_id)
    plane.serving.wake()
    return Response(status_code=204)


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: int = Field(0, ge=0)
    stats: dict[str, tuple[float, int]] = Field(default_factory=dict)
    demand: list[str] = Field(default_factory=list)
    wait: float = Field(1.0, ge=0, le=5)
    traffic: dict[str, Any] = Field(default_factory=dict)


@gateway_router.post("/sync")
async def sync(body: SyncRequest, plane: Plane, caller: Caller) -> dict[str, Any]:
    """The gateway's long poll: measurements in, the routing table out once it changed."""
    if not caller.admin:
        raise Forbidden("only the data plane's key (an admin key) may sync a gateway")
    version, table = await run_in_threadpool(
        plane.serving.sync, body.since, body.stats, body.demand, body.wait, body.traffic
    )
    return {"version": version, "table": table}
