"""Models and datasets: the same routes for both, under ``/namespaces/{ns}/models|datasets``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from modelyard.api.deps import Caller, Plane
from modelyard.registry.records import AliasChange, ArtifactInfo, VersionInfo, VersionSpec
from modelyard.registry.versions import MAX_FILES
from modelyard.types import ArtifactKind, FileEntry, Role, check_path


class FilesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files: list[FileEntry] = Field(max_length=MAX_FILES)


class AliasSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, lt=2**31)


class Transfer(BaseModel):
    path: str
    present: bool | None = None
    sha256: str | None = None
    size: int | None = None
    url: str | None = Field(default=None, description="Direct location in the blob store")
    method: str | None = None
    headers: dict[str, str] = {}
    api_url: str | None = Field(default=None, description="Fallback through this API")


class DownloadPlan(BaseModel):
    version: VersionInfo
    files: list[Transfer]


def artifact_router(kind: ArtifactKind) -> APIRouter:
    router = APIRouter(prefix=f"/namespaces/{{namespace}}/{kind}s", tags=[f"{kind}s"])

    def base(request: Request, namespace: str, name: str) -> str:
        return f"{str(request.base_url).rstrip('/')}/api/v1/namespaces/{namespace}/{kind}s/{name}"

    @router.get("", name=f"list_{kind}s")
    def list_artifacts(namespace: str, plane: Plane, caller: Caller) -> list[ArtifactInfo]:
        caller.require(namespace, Role.VIEWER)
        return plane.versions.list_artifacts(kind, namespace)

    @router.get("/{name}", name=f"get_{kind}")
    def get_artifact(namespace: str, name: str, plane: Plane, caller: Caller) -> ArtifactInfo:
        caller.require(namespace, Role.VIEWER)
        return plane.versions.get_artifact(kind, namespace, name)

    @router.get("/{name}/versions", name=f"list_{kind}_versions")
    def list_versions(namespace: str, name: str, plane: Plane, caller: Caller) -> list[VersionInfo]:
        caller.require(namespace, Role.VIEWER)
        return plane.versions.list_versions(kind, namespace, name)

    @router.post("/{name}/versions", status_code=201, name=f"create_{kind}_draft")
    def create_draft(
        namespace: str, name: str, spec: VersionSpec, plane: Plane, caller: Caller
    ) -> VersionInfo:
        """Start a version: returns a draft whose ``id`` names it until it is committed."""
        caller.require(namespace, Role.EDITOR)
        return plane.versions.create_draft(kind, namespace, name, spec, actor=caller.key_id)

    @router.get("/{name}/versions/{ref}", name=f"get_{kind}_version")
    def get_version(
        namespace: str, name: str, ref: str, plane: Plane, caller: Caller
    ) -> VersionInfo:
        """``ref`` is a version number, an alias or ``latest``."""
        caller.require(namespace, Role.VIEWER)
        return plane.versions.get(kind, namespace, name, ref)

    @router.get("/{name}/versions/{ref}/downloads", name=f"plan_{kind}_download")
    def plan_download(
        request: Request, namespace: str, name: str, ref: str, plane: Plane, caller: Caller
    ) -> DownloadPlan:
        caller.require(namespace, Role.VIEWER)
        version = plane.versions.get(kind, namespace, name, ref)
        files = plane.versions.download_plan(version, base(request, namespace, name))
        return DownloadPlan(version=version, files=[Transfer(**f) for f in files])

    @router.get(
        "/{name}/versions/{ref}/files/{path:path}",
        name=f"download_{kind}_file",
        response_class=StreamingResponse,
    )
    def download_file(
        namespace: str, name: str, ref: str, path: str, plane: Plane, caller: Caller
    ) -> StreamingResponse:
        caller.require(namespace, Role.VIEWER)
        version = plane.versions.get(kind, namespace, name, ref)
        entry, chunks = plane.versions.open_file(version, check_path(path))
        return StreamingResponse(
            chunks,
            media_type="application/octet-stream",
            headers={"Content-Length": str(entry.size), "ETag": f'"{entry.sha256}"'},
        )

    @router.get("/{name}/drafts/{draft_id}", name=f"get_{kind}_draft")
    def get_draft(
        namespace: str, name: str, draft_id: str, plane: Plane, caller: Caller
    ) -> VersionInfo:
        caller.require(namespace, Role.EDITOR)
        return plane.versions.get_draft(kind, namespace, name, draft_id)

    @router.post("/{name}/drafts/{draft_id}/uploads", name=f"plan_{kind}_upload")
    def plan_upload(
        request: Request,
        namespace: str,
        name: str,
        draft_id: str,
        body: FilesBody,
        plane: Plane,
        caller: Caller,
    ) -> list[Transfer]:
        """Per file: ``present`` when the store has its content already, else where to put it."""
        caller.require(namespace, Role.EDITOR)
        plan = plane.versions.upload_plan(
            kind, namespace, name, draft_id, body.files, base(request, namespace, name)
        )
        return [Transfer(**item) for item in plan]

    @router.put("/{name}/drafts/{draft_id}/files/{path:path}", name=f"upload_{kind}_file")
    async def upload_file(
        request: Request,
        namespace: str,
        name: str,
        draft_id: str,
        path: str,
        plane: Plane,
        caller: Caller,
    ) -> FileEntry:
        """Upload one small file through the API (bounded by the body limit)."""
        caller.require(namespace, Role.EDITOR)
        data = await request.body()
        return await run_in_threadpool(
            plane.versions.put_file, kind, namespace, name, draft_id, path, [data]
        )

    @router.post("/{name}/drafts/{draft_id}/commit", status_code=201, name=f"commit_{kind}")
    def commit(
        namespace: str, name: str, draft_id: str, body: FilesBody, plane: Plane, caller: Caller
    ) -> VersionInfo:
        """Verify every file's digest and size, then make the version visible at once."""
        caller.require(namespace, Role.EDITOR)
        return plane.versions.commit(
            kind, namespace, name, draft_id, body.files, actor=caller.key_id
        )

    @router.delete("/{name}/drafts/{draft_id}", status_code=204, name=f"abort_{kind}_draft")
    def abort(namespace: str, name: str, draft_id: str, plane: Plane, caller: Caller) -> None:
        caller.require(namespace, Role.EDITOR)
        plane.versions.abort(kind, namespace, name, draft_id)

    @router.put("/{name}/aliases/{alias}", name=f"set_{kind}_alias")
    def set_alias(
        namespace: str, name: str, alias: str, body: AliasSet, plane: Plane, caller: Caller
    ) -> AliasChange:
        caller.require(namespace, Role.EDITOR)
        return plane.aliases.set(kind, namespace, name, alias, body.version, actor=caller.key_id)

    @router.delete("/{name}/aliases/{alias}", name=f"delete_{kind}_alias")
    def delete_alias(
        namespace: str, name: str, alias: str, plane: Plane, caller: Caller
    ) -> AliasChange:
        caller.require(namespace, Role.EDITOR)
        return plane.aliases.delete(kind, namespace, name, alias, actor=caller.key_id)

    @router.get("/{name}/aliases", name=f"{kind}_alias_history")
    def alias_history(
        namespace: str, name: str, plane: Plane, caller: Caller, alias: str | None = None
    ) -> list[AliasChange]:
        """Every move of this artifact's aliases (or of one alias), oldest first."""
        caller.require(namespace, Role.VIEWER)
        return plane.aliases.history(kind, namespace, name, alias)

    return router
