"""What the registry hands out: immutable records, never live database rows.

They are pydantic models so that the API returns them as they are and the SDK reads them back
from JSON: one schema for the service, the OpenAPI document and the client.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelyard.errors import InvalidInput
from modelyard.types import ArtifactKind, FileEntry, Record, check_name, check_text


def manifest_digest(files: Iterable[FileEntry]) -> str:
    """The identity of a version's content: sha256 over its sorted (path, sha256, size) lines."""
    digest = hashlib.sha256()
    for entry in sorted(files, key=lambda f: f.path):
        digest.update(f"{entry.path}\0{entry.sha256}\0{entry.size}\n".encode())
    return digest.hexdigest()


class NamespaceInfo(Record):
    name: str
    description: str
    created_at: dt.datetime


class ArtifactInfo(Record):
    kind: ArtifactKind
    namespace: str
    name: str
    description: str
    created_at: dt.datetime
    latest_version: int | None
    aliases: dict[str, int] = {}


class VersionInfo(Record):
    id: str
    kind: ArtifactKind
    namespace: str
    name: str
    number: int | None
    state: str
    description: str
    runtime: str | None
    signature: dict[str, Any]
    metrics: dict[str, Any]
    params: dict[str, Any]
    tags: dict[str, Any]
    lineage: dict[str, Any]
    files: list[FileEntry]
    size_bytes: int
    manifest_digest: str | None
    created_by: str | None
    created_at: dt.datetime
    committed_at: dt.datetime | None
    aliases: list[str] = []

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}@{self.number}"


class AliasChange(Record):
    alias: str
    version: int | None
    previous: int | None
    actor: str | None
    at: dt.datetime


class LineageInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: ArtifactKind
    ref: str = Field(description="namespace/name@N of a committed version")


class Lineage(BaseModel):
    """Where a version came from: the run and step that produced it, and what they read."""

    model_config = ConfigDict(extra="forbid")
    run: str | None = Field(default=None, max_length=200)
    step: str | None = Field(default=None, max_length=200)
    inputs: list[LineageInput] = Field(default_factory=list, max_length=1000)


class VersionSpec(BaseModel):
    """Metadata given when a draft is created; frozen once the version is committed."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    description: str = Field(default="", max_length=10_000)
    runtime: str | None = Field(default=None, description="Serving runtime, e.g. 'sklearn'")
    signature: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    lineage: Lineage = Field(default_factory=Lineage)

    @field_validator("runtime")
    @classmethod
    def _runtime_is_a_name(cls, value: str | None) -> str | None:
        return check_name(value, "runtime") if value is not None else None

    @model_validator(mode="after")
    def _no_nul(self) -> VersionSpec:
        def walk(value: Any, where: str) -> None:
            if isinstance(value, str):
                check_text(value, where)
            elif isinstance(value, dict):
                for key, item in value.items():
                    walk(key, where)
                    walk(item, f"{where}.{key}")
            elif isinstance(value, list):
                for item in value:
                    walk(item, where)
            elif isinstance(value, float) and not math.isfinite(value):
                raise InvalidInput(f"{where} holds {value}: give a finite number")

        for field in type(self).model_fields:
            walk(self.model_dump()[field], field)
        return self
