"""Health, identity, namespaces and keys."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from modelyard import __version__
from modelyard.api.deps import Caller, Plane
from modelyard.api.standby import standby_response
from modelyard.auth.records import KeyInfo
from modelyard.errors import Forbidden
from modelyard.registry.records import NamespaceInfo
from modelyard.types import Role

router = APIRouter()


class NamespaceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="1-63 lowercase letters, digits, '-'")
    description: str = Field(default="", max_length=2000)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="1-63 lowercase letters, digits, '-'")
    roles: dict[str, Role] = Field(default_factory=dict, description="namespace -> role")
    admin: bool = False
    expires_at: dt.datetime | None = Field(
        default=None,
        description="From then on the API and the gateway refuse the key (with a time zone)",
    )


class KeyCreated(BaseModel):
    key: KeyInfo
    token: str = Field(description="The key itself. It is shown only this once.")


class Identity(BaseModel):
    key_id: str
    name: str
    admin: bool
    roles: dict[str, Role]


@router.get("/health", tags=["meta"])
def health(plane: Plane) -> dict[str, Any]:
    """Liveness and database reachability, and each controller loop's health (alive, its last
    round, the type of its last error), and whether it leads (holds the control plane lease) or
    waits as a standby; needs no key. A failing loop does not make the answer an error: the
    process still serves, and the loop goes on trying. A standby answers 200 too."""
    plane.events.last_id()
    loops = [loop.health().to_dict() for loop in plane.loops()]
    return {
        "status": "ok",
        "version": __version__,
        "role": "leader" if plane.lease.leading else "standby",
        "lease": plane.lease.health(),
        "loops": loops,
    }


@router.get("/health/leader", tags=["meta"], response_model=None)
def health_leader(plane: Plane) -> dict[str, Any] | JSONResponse:
    """200 while this control plane holds the lease and runs the controllers, else 503 naming
    the holder: Kubernetes' readiness probe, so that a Service routes only to the leader."""
    if not plane.lease.leading:
        return standby_response(plane.lease)
    return {"status": "ok", "role": "leader", "term": plane.lease.term}


@router.get("/whoami", tags=["meta"])
def whoami(caller: Caller) -> Identity:
    return Identity(key_id=caller.key_id, name=caller.name, admin=caller.admin, roles=caller.roles)


@router.get("/namespaces", tags=["namespaces"])
def list_namespaces(plane: Plane, caller: Caller) -> list[NamespaceInfo]:
    """The namespaces this key has a role in (all of them for an admin key)."""
    if caller.admin:
        return plane.namespaces.list()
    return plane.namespaces.list(only=list(caller.roles))


@router.post("/namespaces", status_code=201, tags=["namespaces"])
def create_namespace(body: NamespaceCreate, plane: Plane, caller: Caller) -> NamespaceInfo:
    if not caller.admin:
        raise Forbidden("only an admin key can create namespaces")
    return plane.namespaces.create(body.name, body.description, actor=caller.key_id)


@router.get("/namespaces/{namespace}", tags=["namespaces"])
def get_namespace(namespace: str, plane: Plane, caller: Caller) -> NamespaceInfo:
    caller.require(namespace, Role.INVOKER)
    return plane.namespaces.get(namespace)


@router.get("/keys", tags=["keys"])
def list_keys(plane: Plane, caller: Caller) -> list[KeyInfo]:
    return plane.keys.list_keys(caller)


@router.post("/keys", status_code=201, tags=["keys"])
def create_key(body: KeyCreate, plane: Plane, caller: Caller) -> KeyCreated:
    info, token = plane.keys.create(
        body.name, body.roles, admin=body.admin, by=caller, expires_at=body.expires_at
    )
    return KeyCreated(key=info, token=token)


@router.delete("/keys/{key_id}", tags=["keys"])
def revoke_key(key_id: str, plane: Plane, caller: Caller) -> KeyInfo:
    """Revoke a key by its id, or by its name when one live key has that name."""
    return plane.keys.revoke(key_id, caller)


@router.post("/admin/gc", tags=["meta"])
def collect_garbage(plane: Plane, caller: Caller) -> dict[str, Any]:
    """Delete expired drafts and unreferenced blobs now (it also runs periodically)."""
    if not caller.admin:
        raise Forbidden("only an admin key can run garbage collection")
    return plane.collect_garbage()
