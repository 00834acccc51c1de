"""Row lookups shared by the registry modules; a miss is a NotFound that says what to do.

Reads of committed versions (the hot path of every model server start and every alias lookup)
go through prebuilt Core statements: one join resolves namespace, name and reference to the version
row, then one query reads its files and one its aliases. When that join finds nothing, callers fall
back to the step-by-step ORM lookups, which say precisely what is missing.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from modelyard.errors import InvalidInput, NotFound
from modelyard.registry.records import ArtifactInfo, NamespaceInfo, VersionInfo
from modelyard.store.schema import (
    AliasRow,
    ArtifactRow,
    NamespaceRow,
    VersionFileRow,
    VersionRow,
)
from modelyard.types import ArtifactKind, FileEntry, check_alias, check_name, is_version_number

_namespaces = NamespaceRow.__table__.c
_artifacts = ArtifactRow.__table__.c
_versions = VersionRow.__table__.c
_files = VersionFileRow.__table__.c
_aliases = AliasRow.__table__.c

_VERSION_COLUMNS = (
    _versions.id,
    _versions.number,
    _versions.state,
    _versions.description,
    _versions.runtime,
    _versions.signature,
    _versions.metrics,
    _versions.params,
    _versions.tags,
    _versions.lineage,
    _versions.size_bytes,
    _versions.manifest_digest,
    _versions.created_by,
    _versions.created_at,
    _versions.committed_at,
)
_ARTIFACT_ID = (
    sa.select(_artifacts.id)
    .join_from(
        NamespaceRow.__table__, ArtifactRow.__table__, _artifacts.namespace_id == _namespaces.id
    )
    .where(
        _namespaces.name == sa.bindparam("namespace"),
        _artifacts.kind == sa.bindparam("kind"),
        _artifacts.name == sa.bindparam("name"),
    )
)
_OF_ARTIFACT = (
    sa.select(*_VERSION_COLUMNS)
    .join_from(VersionRow.__table__, ArtifactRow.__table__, _artifacts.id == _versions.artifact_id)
    .join(NamespaceRow.__table__, _namespaces.id == _artifacts.namespace_id)
    .where(
        _namespaces.name == sa.bindparam("namespace"),
        _artifacts.kind == sa.bindparam("kind"),
        _artifacts.name == sa.bindparam("name"),
    )
)
_COMMITTED = _OF_ARTIFACT.where(_versions.state == "committed")
_BY_NUMBER = _COMMITTED.where(_versions.number == sa.bindparam("number"))
_LATEST = _COMMITTED.order_by(_versions.number.desc()).limit(1)
_BY_ALIAS = _OF_ARTIFACT.join(
    AliasRow.__table__,
    sa.and_(_aliases.version_id == _versions.id, _aliases.artifact_id == _artifacts.id),
).where(_aliases.name == sa.bindparam("alias"))
_FILES = (
    sa.select(_files.path, _files.sha256, _files.size)
    .where(_files.version_id == sa.bindparam("version_id"))
    .order_by(_files.path)
)
_ALIASES = sa.select(_aliases.name).where(_aliases.version_id == sa.bindparam("version_id"))
_ALL_COMMITTED = (
    sa.select(*_VERSION_COLUMNS)
    .where(_versions.artifact_id == sa.bindparam("artifact_id"), _versions.state == "committed")
    .order_by(_versions.number)
)
_ALL_FILES = (
    sa.select(_files.version_id, _files.path, _files.sha256, _files.size)
    .join_from(VersionFileRow.__table__, VersionRow.__table__, _versions.id == _files.version_id)
    .where(_versions.artifact_id == sa.bindparam("artifact_id"), _versions.state == "committed")
    .order_by(_files.version_id, _files.path)
)
_ALL_ALIASES = sa.select(_aliases.version_id, _aliases.name).where(
    _aliases.artifact_id == sa.bindparam("artifact_id")
)


T = TypeVar("T")


def named_row(session: Session, table: type[T], namespace_id: int, name: str) -> T | None:
    """The row of ``table`` (a deployment, a stream, ...) named ``name`` in a namespace."""
    columns: Any = table  # every such table has namespace_id and name columns
    found: T | None = session.scalar(
        sa.select(columns).where(columns.namespace_id == namespace_id, columns.name == name)
    )
    return found


def namespace_row(session: Session, namespace: str) -> NamespaceRow:
    check_name(namespace, "namespace")
    row = session.scalar(sa.select(NamespaceRow).where(NamespaceRow.name == namespace))
    if row is None:
        # Callers reach this only for a namespace their key may see (a key without a role gets
        # 403 first), so naming the close ones tells nothing the caller may not know.
        names = session.scalars(sa.select(NamespaceRow.name)).all()
        close = difflib.get_close_matches(namespace, names, n=1)
        raise NotFound(
            f"namespace {namespace!r} does not exist: "
            + (
                f"did you mean {close[0]!r}?"
                if close
                else f"create it with 'modelyard namespaces create {namespace}'"
            )
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

    def full_name() -> str:  # for errors only: one more query
        namespace = session.get(NamespaceRow, artifact.namespace_id)
        return f"{namespace.name if namespace is not None else 'NAMESPACE'}/{artifact.name}"

    committed = sa.select(VersionRow).where(
        VersionRow.artifact_id == artifact.id, VersionRow.state == "committed"
    )
    if isinstance(ref, int) or ref.isdigit():
        if not (isinstance(ref, int) or is_version_number(ref)) or not 0 < int(ref) < 2**31:
            raise NotFound(
                f"{artifact.kind} {full_name()}@{ref} does not exist: version numbers run from 1 up"
            )
        row = session.scalar(committed.where(VersionRow.number == int(ref)))
    elif ref == "latest":
        row = session.scalar(committed.order_by(VersionRow.number.desc()).limit(1))
        if row is None:
            raise NotFound(f"{artifact.kind} {full_name()} has no committed version yet")
    else:
        check_alias(ref)
        row = session.scalar(
            sa.select(VersionRow)
            .join(AliasRow, AliasRow.version_id == VersionRow.id)
            .where(AliasRow.artifact_id == artifact.id, AliasRow.name == ref)
        )
    if row is None:
        name = full_name()
        raise NotFound(
            f"{artifact.kind} {name}@{ref} does not exist: list versions with "
            f"'modelyard {artifact.kind}s show {name}'"
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
    return _version_record(row, artifact.kind, namespace, artifact.name, files, aliases)  # type: ignore[arg-type]


# fast reads of committed versions ---------------------------------------------------------------
def find_version(
    session: Session, kind: ArtifactKind, namespace: str, name: str, ref: str | int
) -> VersionInfo | None:
    """The committed version ``ref`` names, in three queries; None when the join finds nothing or
    an argument would fail its check: ``artifact_row`` and ``version_row`` then raise the error."""
    try:
        check_name(namespace, "namespace")
        check_name(name, f"{kind} name")
    except InvalidInput:
        return None
    params: dict[str, Any] = {"namespace": namespace, "kind": kind, "name": name}
    statement = _BY_NUMBER
    if isinstance(ref, int) or ref.isdigit():
        if not (isinstance(ref, int) or is_version_number(ref)) or not 0 < int(ref) < 2**31:
            return None
        params["number"] = int(ref)
    elif ref == "latest":
        statement = _LATEST
    else:
        try:
            params["alias"] = check_alias(ref)
        except InvalidInput:
            return None
        statement = _BY_ALIAS
    connection = session.connection()
    row = connection.execute(statement, params).first()
    if row is None:
        return None
    files = [FileEntry(*f) for f in connection.execute(_FILES, {"version_id": row.id})]
    aliases = sorted(connection.scalars(_ALIASES, {"version_id": row.id}))
    return _version_record(row, kind, namespace, name, files, aliases)


def find_artifact_id(session: Session, kind: ArtifactKind, namespace: str, name: str) -> int | None:
    """The id of ``namespace/name`` in one query; None when missing or a name fails its check."""
    try:
        check_name(namespace, "namespace")
        check_name(name, f"{kind} name")
    except InvalidInput:
        return None
    found = session.connection().scalar(
        _ARTIFACT_ID, {"namespace": namespace, "kind": kind, "name": name}
    )
    return None if found is None else int(found)


def committed_versions(
    session: Session, artifact_id: int, kind: ArtifactKind, namespace: str, name: str
) -> list[VersionInfo]:
    """Every committed version of one artifact, by number, in three queries whatever its size."""
    connection = session.connection()
    params = {"artifact_id": artifact_id}
    files: dict[str, list[FileEntry]] = {}
    for version_id, path, sha256, size in connection.execute(_ALL_FILES, params):
        files.setdefault(version_id, []).append(FileEntry(path, sha256, size))
    aliases: dict[str, list[str]] = {}
    for version_id, alias in connection.execute(_ALL_ALIASES, params):
        aliases.setdefault(version_id, []).append(alias)
    return [
        _version_record(
            row, kind, namespace, name, files.get(row.id, []), sorted(aliases.get(row.id, []))
        )
        for row in connection.execute(_ALL_COMMITTED, params)
    ]


def _version_record(
    row: sa.Row[*tuple[Any, ...]] | VersionRow,
    kind: ArtifactKind,
    namespace: str,
    name: str,
    files: list[FileEntry],
    aliases: Sequence[str],
) -> VersionInfo:
    return VersionInfo(
        id=row.id,
        kind=kind,
        namespace=namespace,
        name=name,
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
        aliases=list(aliases),
    )
