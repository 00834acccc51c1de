"""What the registry hands out: immutable records, never live database rows.

They are pydantic models so that the API returns them as they are and the SDK reads them back
from JSON: one schema for the service, the OpenAPI document and the client.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import Any

from modelyard.types import ArtifactKind, FileEntry, Record


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
