"""SLOs of a deployment: objectives, their error budget and burn rates, and Prometheus rules."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from modelyard.api.deps import Caller, Plane
from modelyard.delivery.burnrate import Objective
from modelyard.delivery.records import AlertInfo, SloStatus
from modelyard.types import Role

router = APIRouter(prefix="/namespaces/{namespace}/deployments/{name}/slos", tags=["slos"])


class Objectives(BaseModel):
    model_config = ConfigDict(extra="forbid")
    objectives: list[Objective] = Field(description="The deployment's SLOs; [] removes them")


@router.get("")
def get(namespace: str, name: str, plane: Plane, caller: Caller) -> Objectives:
    caller.require(namespace, Role.VIEWER)
    return Objectives(objectives=plane.slos.get(namespace, name))


@router.put("")
def put(namespace: str, name: str, body: Objectives, plane: Plane, caller: Caller) -> Objectives:
    """Replace the objectives (availability, latency; lag of a realtime deployment); alerts follow
    at the next evaluation."""
    caller.require(namespace, Role.EDITOR)
    return Objectives(
        objectives=plane.slos.set(namespace, name, body.objectives, actor=caller.key_id)
    )


@router.get("/status")
def status(namespace: str, name: str, plane: Plane, caller: Caller) -> SloStatus:
    """Per objective: SLI and error budget over its window, burn rates, firing alerts."""
    caller.require(namespace, Role.VIEWER)
    return plane.slos.status(namespace, name)


@router.get("/alerts")
def alerts(
    namespace: str, name: str, plane: Plane, caller: Caller, limit: int = 50
) -> list[AlertInfo]:
    """The latest alerts, firing and resolved, newest first."""
    caller.require(namespace, Role.VIEWER)
    return plane.slos.alerts(namespace, name, min(max(limit, 1), 500))


@router.get("/rules", response_class=PlainTextResponse)
def rules(namespace: str, name: str, plane: Plane, caller: Caller) -> PlainTextResponse:
    """The objectives as a Prometheus rule file: recording and multiwindow burn-rate rules."""
    caller.require(namespace, Role.VIEWER)
    return PlainTextResponse(plane.slos.prometheus_rules(namespace, name), media_type="text/yaml")
