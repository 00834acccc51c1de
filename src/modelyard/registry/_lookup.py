"""Row lookups shared by the registry modules; a miss is a NotFound that says what to do."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from modelyard.errors import NotFound
from modelyard.registry.records import ArtifactInfo, NamespaceInfo, VersionInfo
from modelyard.store.schema import (
    AliasRow,
    ArtifactRow,
    NamespaceRow,
    VersionFileRow,
    VersionRow,
)
from modelyard.types import ArtifactKind, FileEntry, check_alias, check_name, is_version_number


def namespace_row(session: Session, namespace: str) -> NamespaceRow:
    check_name(namespace, "namespace")
    row = session.scalar(sa.select(NamespaceRow).where(NamespaceRow.name == namespace))
    if row is None:
        raise NotFound(
            f"namespace {namespace!r} does not exist: create it with "
            f"'modelyard namespaces create {namespace}'"
        )
    return row


def artifact_row(
    session: Session, kind: ArtifactKind, namespace: str, name: str, *, lock: bool = False
) -> ArtifactRow:
    ns = namespace_row(session, namespace)
    check_name(name, f"{kind} name")
    query = sa.select(ArtifactRow).where(
        ArtifactRow.namespace_id == ns.id, ArtifactRow.kind == kind, ArtifactRow.name == name
    )
    row = session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFound(f"{kind} {namespace}/{name} does not exist: push a version first")
    return row


def version_row(session: Session, artifact: ArtifactRow, ref: str | int) -> VersionRow:
    """Resolve a version number, an alias or ``latest`` to a committed version."""
    label = f"{artifact.kind} {artifact.name}@{ref}"
    committed = sa.select(VersionRow).where(
        VersionRow.artifact_id == artifact.id, VersionRow.state == "committed"
    )
    if isinstance(ref, int) or ref.isdigit():
        if not (isinstance(ref, int) or is_version_number(ref)) or not 0 < int(ref) < 2**31:
            raise NotFound(f"{label} does not exist: version numbers run from 1 up")
        row = session.scalar(committed.where(VersionRow.number == int(ref)))
    elif ref == "latest":
        row = session.scalar(committed.order_by(VersionRow.number.desc()).limit(1))
        if row is None:
            raise NotFound(f"{artifact.kind} {artifact.name} has no committed version yet")
    else:
        check_alias(ref)
        row = session.scalar(
            sa.select(VersionRow)
            .join(AliasRow, AliasRow.version_id == VersionRow.id)
            .where(AliasRow.artifact_id == artifact.id, AliasRow.name == ref)
        )
    if row is None:
        raise NotFound(
            f"{label} does not exist: list versions with "
            f"'modelyard {artifact.kind}s show NAMESPACE/{artifact.name}'"
        )
    return row


def draft_row(session: Session, artifact: ArtifactRow, draft_id: str) -> VersionRow:
    row = session.get(VersionRow, draft_id)
    if row is None or row.artifact_id != artifact.id:
        raise NotFound(
            f"draft {draft_id!r} of {artifact.kind} {artifact.name} does not exist "
            "(it may have expired): create a new draft"
        )
    return row


def namespace_info(row: NamespaceRow) -> NamespaceInfo:
    return NamespaceInfo(name=row.name, description=row.description, created_at=row.created_at)


def aliases_of(session: Session, artifact_id: int) -> dict[str, int]:
    rows = session.execute(
        sa.select(AliasRow.name, VersionRow.number)
        .join(VersionRow, VersionRow.id == AliasRow.version_id)
        .where(AliasRow.artifact_id == artifact_id)
        .order_by(AliasRow.name)
    )
    return {name: number for name, number in rows if number is not None}


def artifact_info(session: Session, row: ArtifactRow, namespace: str) -> ArtifactInfo:
    latest = session.scalar(
        sa.select(sa.func.max(VersionRow.number)).where(
            VersionRow.artifact_id == row.id, VersionRow.state == "committed"
        )
    )
    return ArtifactInfo(
        kind=row.kind,
        namespace=namespace,
        name=row.name,
        description=row.description,
        created_at=row.created_at,
        latest_version=latest,
        aliases=aliases_of(session, row.id),
    )


def version_info(
    session: Session, row: VersionRow, artifact: ArtifactRow, namespace: str
) -> VersionInfo:
    files = [
        FileEntry(f.path, f.sha256, f.size)
        for f in session.scalars(
            sa.select(VersionFileRow)
            .where(VersionFileRow.version_id == row.id)
            .order_by(VersionFileRow.path)
        )
    ]
    aliases = sorted(session.scalars(sa.select(AliasRow.name).where(AliasRow.version_id == row.id)))
    return VersionInfo(
        id=row.id,
        kind=artifact.kind,
        namespace=namespace,
        name=artifact.name,
        number=row.number,
        state=row.state,
        description=row.description,
        runtime=row.runtime,
        signature=dict(row.signature),
        metrics=dict(row.metrics),
        params=dict(row.params),
        tags=dict(row.tags),
        lineage=dict(row.lineage),
        files=files,
        size_bytes=row.size_bytes,
        manifest_digest=row.manifest_digest,
        created_by=row.created_by,
        created_at=row.created_at,
        committed_at=row.committed_at,
        aliases=aliases,
    )
