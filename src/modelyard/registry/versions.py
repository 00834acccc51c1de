"""Versions of models and datasets, and the publish protocol that makes them visible.

1. ``create_draft`` records the metadata and returns a draft id (no version number yet).
2. Files go to the blob store's staging area, straight from the client through the locations
   ``upload_plan`` hands out, or through the API for small files (``put_file``).
3. ``commit`` verifies every declared (path, sha256, size) against the stored bytes, moves them to
   their content address, then in one transaction assigns the next number, records the files and
   appends ``<kind>.version.committed``. Until that transaction commits nothing is visible, so a
   crash anywhere leaves either no version or a whole one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa

from modelyard.errors import Conflict, InvalidInput, NotFound
from modelyard.events.log import EventLog
from modelyard.events.types import VERSION_COMMITTED
from modelyard.registry._lookup import (
    artifact_info,
    artifact_row,
    committed_versions,
    draft_row,
    find_artifact_id,
    find_version,
    namespace_row,
    version_info,
    version_row,
)
from modelyard.registry.records import (
    ArtifactInfo,
    Lineage,
    VersionInfo,
    VersionSpec,
    manifest_digest,
)
from modelyard.store.blobs import BlobStore
from modelyard.store.schema import ArtifactRow, VersionFileRow, VersionRow
from modelyard.types import (
    ARTIFACT_KINDS,
    ArtifactKind,
    FileEntry,
    ModelRef,
    check_name,
    check_path,
)

MAX_FILES = 10_000


def check_files(files: Iterable[FileEntry]) -> list[FileEntry]:
    entries = list(files)
    if not entries:
        raise InvalidInput("a version needs at least one file")
    if len(entries) > MAX_FILES:
        raise InvalidInput(f"a version holds at most {MAX_FILES} files")
    seen: set[str] = set()
    folders: set[str] = set()
    for entry in entries:
        if entry.path in seen:
            raise InvalidInput(f"file {entry.path!r} is listed twice")
        seen.add(entry.path)
        parts = entry.path.split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = sorted(seen & folders)
    if clash:
        raise InvalidInput(f"{clash[0]!r} is listed as a file and used as a folder: rename one")
    return entries


class Versions:
    """The publish protocol and reads of models and datasets (``kind`` picks which)."""

    def __init__(self, events: EventLog, blobs: BlobStore) -> None:
        self.events = events
        self.db = events.db
        self.blobs = blobs

    # drafts -----------------------------------------------------------------------------------
    def create_draft(
        self,
        kind: ArtifactKind,
        namespace: str,
        name: str,
        spec: VersionSpec,
        actor: str | None = None,
    ) -> VersionInfo:
        """Create a draft; the model or dataset itself is created with its first draft."""
        if kind not in ARTIFACT_KINDS:
            raise InvalidInput(f"unknown kind {kind!r}")
        check_name(name, f"{kind} name")
        now = self.events.clock()
        with self.db.write() as session:
            ns = namespace_row(session, namespace)
            self._check_lineage(session, spec.lineage)
            existing = sa.select(ArtifactRow).where(
                ArtifactRow.namespace_id == ns.id,
                ArtifactRow.kind == kind,
                ArtifactRow.name == name,
            )
            artifact = session.scalar(existing)
            if artifact is None:
                try:
                    with session.begin_nested():
                        artifact = ArtifactRow(
                            namespace_id=ns.id,
                            kind=kind,
                            name=name,
                            description=spec.description,
                            created_at=now,
                        )
                        session.add(artifact)
                except sa.exc.IntegrityError:  # a concurrent first push created it
                    artifact = session.scalars(existing).one()
            row = VersionRow(
                id=uuid.uuid4().hex,
                artifact_id=artifact.id,
                number=None,
                state="draft",
                description=spec.description,
                runtime=spec.runtime,
                signature=spec.signature,
                metrics=spec.metrics,
                params=spec.params,
                tags=spec.tags,
                lineage=spec.lineage.model_dump(),
                size_bytes=0,
                created_by=actor,
                created_at=now,
                updated_at=now,
                committed_at=None,
            )
            session.add(row)
            session.flush()
            return version_info(session, row, artifact, namespace)

    def upload_plan(
        self,
        kind: ArtifactKind,
        namespace: str,
        name: str,
        draft_id: str,
        files: Iterable[FileEntry],
        api_base: str,
    ) -> list[dict[str, Any]]:
        """Say, per file, whether the store has its content already or where to upload it."""
        entries = check_files(files)
        self._touch_draft(kind, namespace, name, draft_id)
        plan: list[dict[str, Any]] = []
        for entry in entries:
            item: dict[str, Any] = {"path": entry.path, "present": self.blobs.has(entry.sha256)}
            if not item["present"]:
                target = self.blobs.upload_target(draft_id, entry.path)
                item["api_url"] = f"{api_base}/drafts/{draft_id}/files/{entry.path}"
                if target is not None:
                    item.update(url=target.url, method=target.method, headers=target.headers)
            plan.append(item)
        return plan

    def put_file(
        self,
        kind: ArtifactKind,
        namespace: str,
        name: str,
        draft_id: str,
        path: str,
        chunks: Iterable[bytes],
    ) -> FileEntry:
        """Store one file that came through the API; returns what it hashed to."""
        self._touch_draft(kind, namespace, name, draft_id)
        digest, size = self.blobs.write_staging(draft_id, check_path(path), chunks)
        return FileEntry(path, digest, size)

    def commit(
        self,
        kind: ArtifactKind,
        namespace: str,
        name: str,
        draft_id: str,
        files: Iterable[FileEntry],
        actor: str | None = None,
    ) -> VersionInfo:
        entries = check_files(files)
        self._touch_draft(kind, namespace, name, draft_id)
        for entry in entries:
            self.blobs.promote(draft_id, entry)
        with self.db.write() as session:
            artifact = artifact_row(session, kind, namespace, name, lock=True)
            row = draft_row(session, artifact, draft_id)
            if row.state != "draft":
                raise Conflict(
                    f"{kind} {namespace}/{name} draft {draft_id} was already committed "
                    f"as version {row.number}; versions are immutable"
                )
            number = (
                session.scalar(
                    sa.select(sa.func.max(VersionRow.number)).where(
                        VersionRow.artifact_id == artifact.id
                    )
                )
                or 0
            ) + 1
            session.add_all(
                VersionFileRow(version_id=row.id, path=e.path, sha256=e.sha256, size=e.size)
                for e in entries
            )
            now = self.events.clock()
            row.number, row.state = number, "committed"
            row.manifest_digest = manifest_digest(entries)
            row.size_bytes = sum(e.size for e in entries)
            row.committed_at = row.updated_at = now
            session.flush()
            self.events.append(
                session,
                VERSION_COMMITTED[kind],
                f"{namespace}/{name}@{number}",
                {
                    "kind": kind,
                    "namespace": namespace,
                    "name": name,
                    "version": number,
                    "version_id": row.id,
                    "manifest_digest": row.manifest_digest,
                    "runtime": row.runtime,
                    "size_bytes": row.size_bytes,
                },
                namespace=namespace,
                actor=actor,
            )
            info = version_info(session, row, artifact, namespace)
        self.blobs.drop_staging(draft_id)
        return info

    def abort(self, kind: ArtifactKind, namespace: str, name: str, draft_id: str) -> None:
        with self.db.write() as session:
            artifact = artifact_row(session, kind, namespace, name)
            row = draft_row(session, artifact, draft_id)
            if row.state != "draft":
                raise Conflict(f"version {row.number} is committed; only drafts can be deleted")
            session.delete(row)
        self.blobs.drop_staging(draft_id)

    def get_draft(
        self, kind: ArtifactKind, namespace: str, name: str, draft_id: str
    ) -> VersionInfo:
        with self.db.read() as session:
            artifact = artifact_row(session, kind, namespace, name)
            return version_info(
                session, draft_row(session, artifact, draft_id), artifact, namespace
            )

    def _touch_draft(self, kind: ArtifactKind, namespace: str, name: str, draft_id: str) -> None:
        """Fail early on a missing or committed draft; keep an active draft from expiring."""
        with self.db.write() as session:
            artifact = artifact_row(session, kind, namespace, name)
            row = draft_row(session, artifact, draft_id)
            if row.state != "draft":
                raise Conflict(
                    f"draft {draft_id} was already committed as version "
                    f"{row.number}; versions are immutable: create a new draft"
                )
            row.updated_at = self.events.clock()

    def _check_lineage(self, session: sa.orm.Session, lineage: Lineage) -> None:
        for item in lineage.inputs:
            ref = ModelRef.parse(item.ref)
            if ref.version is None:
                raise InvalidInput(f"lineage input {item.ref!r}: pin a version number (name@N)")
            try:
                version_row(
                    session, artifact_row(session, item.kind, ref.namespace, ref.name), ref.version
                )
            except NotFound as exc:
                raise InvalidInput(f"lineage input {item.kind} {item.ref} does not exist") from exc

    # reads --------------------------------------------------------------------------------------
    def get(self, kind: ArtifactKind, namespace: str, name: str, ref: str | int) -> VersionInfo:
        with self.db.read() as session:
            found = find_version(session, kind, namespace, name, ref)
            if found is not None:
                return found
            # Nothing matched: the step-by-step lookup says what is missing (or, after a commit
            # that landed in between, finds the version).
            artifact = artifact_row(session, kind, namespace, name)
            return version_info(session, version_row(session, artifact, ref), artifact, namespace)

    def list_versions(self, kind: ArtifactKind, namespace: str, name: str) -> list[VersionInfo]:
        with self.db.read() as session:
            artifact_id = find_artifact_id(session, kind, namespace, name)
            if artifact_id is None:
                artifact_id = artifact_row(session, kind, namespace, name).id
            return committed_versions(session, artifact_id, kind, namespace, name)

    def get_artifact(self, kind: ArtifactKind, namespace: str, name: str) -> ArtifactInfo:
        with self.db.read() as session:
            return artifact_info(session, artifact_row(session, kind, namespace, name), namespace)

    def list_artifacts(self, kind: ArtifactKind, namespace: str) -> list[ArtifactInfo]:
        with self.db.read() as session:
            ns = namespace_row(session, namespace)
            rows = session.scalars(
                sa.select(ArtifactRow)
                .where(ArtifactRow.namespace_id == ns.id, ArtifactRow.kind == kind)
                .order_by(ArtifactRow.name)
            )
            return [artifact_info(session, r, namespace) for r in rows]

    def download_plan(self, version: VersionInfo, api_base: str) -> list[dict[str, Any]]:
        plan: list[dict[str, Any]] = []
        for entry in version.files:
            item: dict[str, Any] = {
                "path": entry.path,
                "sha256": entry.sha256,
                "size": entry.size,
                "api_url": f"{api_base}/versions/{version.number}/files/{entry.path}",
            }
            target = self.blobs.download_target(entry.sha256)
            if target is not None:
                item.update(url=target.url, method=target.method, headers=target.headers)
            plan.append(item)
        return plan

    def open_file(self, version: VersionInfo, path: str) -> tuple[FileEntry, Iterator[bytes]]:
        for entry in version.files:
            if entry.path == path:
                return entry, self.blobs.iter_chunks(entry.sha256)
        raise NotFound(f"{version.ref} has no file {path!r}")
