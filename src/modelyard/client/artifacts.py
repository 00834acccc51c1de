"""Models and datasets: push (hash, upload straight to the blob store, commit), pull into
the verified cache, versions, aliases, and SQL imports as dataset versions."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx

from modelyard.client.base import ClientBase
from modelyard.errors import (
    IntegrityError,
    InvalidInput,
    NotFound,
    ServerUnreachable,
    error_from_body,
)
from modelyard.registry import pull as pulling
from modelyard.registry.records import (
    AliasChange,
    ArtifactInfo,
    VersionInfo,
    VersionSpec,
    manifest_digest,
)
from modelyard.sql.source import ImportResult, SqlSource
from modelyard.types import ArtifactKind, FileEntry, ModelRef, check_name

if TYPE_CHECKING:
    from modelyard.client import Client

CHUNK = 4 * 1024 * 1024
Progress = Callable[[str, int], None]


def hash_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb", buffering=0) as handle:
        # One buffer for the whole file (no larger than needed), not a new 4 MiB object per read.
        size_hint = os.fstat(handle.fileno()).st_size
        view = memoryview(bytearray(min(CHUNK, max(64 * 1024, size_hint))))
        while count := handle.readinto(view):
            digest.update(view[:count])
            size += count
    return digest.hexdigest(), size


def scan_files(source: Path) -> list[tuple[Path, FileEntry]]:
    """The files of a version: ``source`` itself, or every file below the folder ``source``."""
    if source.is_file():
        return [(source, FileEntry(source.name, *hash_file(source)))]
    if not source.is_dir():
        raise InvalidInput(f"{source} does not exist: give a file or a folder to push")
    found = sorted(p for p in source.rglob("*") if p.is_file())
    if not found:
        raise InvalidInput(f"{source} holds no files")
    return [(p, FileEntry(p.relative_to(source).as_posix(), *hash_file(p))) for p in found]


def _read_file(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


class Artifacts(ClientBase):
    """Models and datasets (``kind``): versions, aliases, push and pull, SQL imports."""

    @staticmethod
    def _base(kind: ArtifactKind, namespace: str, name: str) -> str:
        return f"/namespaces/{check_name(namespace, 'namespace')}/{kind}s/{check_name(name)}"

    def push(
        self,
        ref: str | ModelRef,
        source: str | Path,
        spec: VersionSpec | None = None,
        *,
        kind: ArtifactKind = "model",
        alias: str | None = None,
        progress: Progress | None = None,
        files: Sequence[tuple[Path | None, FileEntry]] | None = None,
    ) -> VersionInfo:
        """Publish a file or a folder as the next version of ``namespace/name``; ``files`` is
        ``scan_files(source)`` when the caller made it already (it hashes every byte). A file
        given without a local path must be content the blob store holds already (a file of an
        earlier version): it is referenced by its digest, never uploaded.

        Example: ``client.push("team/iris", "./iris", VersionSpec(runtime="sklearn"))``
        """
        target = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
        files = scan_files(Path(source)) if files is None else files
        base = self._base(kind, target.namespace, target.name)
        draft = VersionInfo.model_validate(
            self.request(
                "POST", f"{base}/versions", json=(spec or VersionSpec()).model_dump(mode="json")
            )
        )
        entries = [entry for _, entry in files]
        plan = self.request(
            "POST", f"{base}/drafts/{draft.id}/uploads", json={"files": [vars(e) for e in entries]}
        )
        local = {entry.path: path for path, entry in files}
        sizes = {entry.path: entry.size for entry in entries}
        for item in plan:
            path = local[item["path"]]
            if item["present"]:
                if progress:
                    progress(item["path"], sizes[item["path"]])
                continue
            if path is None:
                raise IntegrityError(
                    f"{item['path']} is referenced by its digest, but the blob store does not "
                    "hold it: push the file itself",
                    path=item["path"],
                )
            self._upload(path, item, progress)
        version = VersionInfo.model_validate(
            self.request(
                "POST",
                f"{base}/drafts/{draft.id}/commit",
                json={"files": [vars(e) for e in entries]},
            )
        )
        if alias is not None:
            self.set_alias(version.ref, alias, kind=kind)
            version = self.get_version(version.ref, kind=kind)
        return version

    def identical_latest(
        self,
        ref: str | ModelRef,
        files: Sequence[FileEntry],
        spec: VersionSpec | None = None,
        *,
        kind: ArtifactKind = "model",
    ) -> VersionInfo | None:
        """The latest version when pushing ``files`` with ``spec`` would add nothing to it: the
        same content (paths, sizes, sha256) and what serving reads of the spec (runtime and
        signature). None when it differs or there is no version yet.

        Example: ``client.identical_latest("team/iris", [e for _, e in scan_files(Path("iris"))])``
        """
        target = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
        try:
            latest = self.get_version(ModelRef(target.namespace, target.name, "latest"), kind=kind)
        except NotFound:
            return None
        spec = spec or VersionSpec()
        same = (
            latest.manifest_digest == manifest_digest(files)
            and latest.runtime == spec.runtime
            and latest.signature == spec.signature
        )
        return latest if same else None

    def import_sql(
        self,
        ref: str | ModelRef,
        source: SqlSource,
        *,
        force: bool = False,
        allow_empty: bool = False,
        backfill: tuple[Any, Any] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Run ``source`` (a query on a connection of this client's settings) in one read-only
        snapshot and commit its result as the next version of the dataset ``ref``, in Parquet
        parts. Nothing is committed when the content equals the latest version's (unless
        ``force``), when the query returns no rows (unless ``allow_empty``), or when an
        incremental source has no new rows. ``backfill=(start, end)`` imports that range of an
        incremental source again. Needs the ``[sql]`` extra (pyarrow).

        Example: ``client.import_sql("sales/orders", SqlSource(connection="shop", query=QUERY))``
        """
        from modelyard.sql.snapshot import ClientRegistry, import_sql

        target = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
        return import_sql(
            ClientRegistry(cast("Client", self)),
            self.settings.connections,
            target,
            source,
            force=force,
            allow_empty=allow_empty,
            backfill=backfill,
            progress=progress,
        )

    def _upload(self, path: Path, item: dict[str, Any], progress: Progress | None) -> None:
        url, method = item.get("url"), item.get("method")

        def chunks() -> Iterator[bytes]:
            for chunk in _read_file(path):
                if progress:
                    progress(item["path"], len(chunk))
                yield chunk

        if url and method == "WRITE" and self._local:
            dest = Path(url2pathname(urlsplit(url).path))
            dest.parent.mkdir(parents=True, exist_ok=True)
            temp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
            with open(temp, "wb") as out:
                for chunk in chunks():
                    out.write(chunk)
            os.replace(temp, dest)
        elif url and method == "PUT":
            response = self._plain.put(
                url,
                content=chunks(),
                headers={**item.get("headers", {}), "Content-Length": str(path.stat().st_size)},
            )
            if not response.is_success:
                raise ServerUnreachable(
                    f"blob store refused the upload of {item['path']}: {response.status_code}"
                )
        else:
            self.request("PUT", item["api_url"].split("/api/v1", 1)[1], content=chunks())

    def get_version(self, ref: str | ModelRef, *, kind: ArtifactKind = "model") -> VersionInfo:
        """One version: ``ns/name@3``, ``@alias`` or ``@latest`` (the default).

        Example: ``client.get_version("team/iris@production").number``
        """
        target = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
        base = self._base(kind, target.namespace, target.name)
        return VersionInfo.model_validate(self.request("GET", f"{base}/versions/{target.ref}"))

    def list_versions(self, ref: str, *, kind: ArtifactKind = "model") -> list[VersionInfo]:
        """Every version of a model (or a dataset, ``kind="dataset"``), oldest first.

        Example: ``[v.number for v in client.list_versions("team/iris")]``
        """
        target = ModelRef.parse(ref)
        base = self._base(kind, target.namespace, target.name)
        return [VersionInfo.model_validate(v) for v in self.request("GET", f"{base}/versions")]

    def list_artifacts(self, namespace: str, *, kind: ArtifactKind = "model") -> list[ArtifactInfo]:
        """The models (or datasets) of a namespace, with their latest version and aliases.

        Example: ``client.list_artifacts("team", kind="dataset")``
        """
        return [
            ArtifactInfo.model_validate(a)
            for a in self.request(
                "GET", f"/namespaces/{check_name(namespace, 'namespace')}/{kind}s"
            )
        ]

    def set_alias(
        self, ref: str | ModelRef, alias: str, *, kind: ArtifactKind = "model"
    ) -> AliasChange:
        """Point ``alias`` at the version ``ref`` names (``ns/name@3`` or ``ns/name@other``).

        Example: ``client.set_alias("team/iris@candidate", "production")``
        """
        target = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
        number = target.version or self.get_version(target, kind=kind).number
        base = self._base(kind, target.namespace, target.name)
        return AliasChange.model_validate(
            self.request("PUT", f"{base}/aliases/{alias}", json={"version": number})
        )

    def delete_alias(self, ref: str, alias: str, *, kind: ArtifactKind = "model") -> AliasChange:
        """Remove ``alias`` from the model ``ref`` names; the versions stay.

        Example: ``client.delete_alias("team/iris", "candidate")``
        """
        target = ModelRef.parse(ref)
        base = self._base(kind, target.namespace, target.name)
        return AliasChange.model_validate(self.request("DELETE", f"{base}/aliases/{alias}"))

    def alias_history(
        self, ref: str, alias: str | None = None, *, kind: ArtifactKind = "model"
    ) -> list[AliasChange]:
        """Every move of the model's aliases (or of ``alias``), oldest first.

        Example: ``client.alias_history("team/iris", "production")``
        """
        target = ModelRef.parse(ref)
        base = self._base(kind, target.namespace, target.name)
        params = {"alias": alias} if alias else {}
        return [
            AliasChange.model_validate(a)
            for a in self.request("GET", f"{base}/aliases", params=params)
        ]

    def pull(
        self, ref: str | ModelRef, *, kind: ArtifactKind = "model", progress: Progress | None = None
    ) -> Path:
        """Download a version into the local cache (verified, atomic) and return its folder.

        Example: ``folder = client.pull("team/iris@production")``
        """
        target = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
        base = self._base(kind, target.namespace, target.name)
        plan = self.request("GET", f"{base}/versions/{target.ref}/downloads")
        version = VersionInfo.model_validate(plan["version"])
        folder = pulling.cache_path(self.cache_dir, version)
        if pulling.is_cached(folder):
            return folder
        transfers = {item["path"]: item for item in plan["files"]}
        return pulling.pull(
            version, lambda e: self._fetch(transfers[e.path]), self.cache_dir, progress
        )

    def _fetch(self, item: dict[str, Any]) -> Iterator[bytes] | Path:
        """A local blob's path (``pulling.pull`` copies it in the kernel), else its bytes."""
        url, method = item.get("url"), item.get("method")
        if url and method == "READ" and self._local:
            return Path(url2pathname(urlsplit(url).path))

        def stream() -> Iterator[bytes]:
            if url and method == "GET":
                client, path = self._plain, url
            else:
                client, path = self.http, item["api_url"].split("/api/v1", 1)[1]
            try:
                with client.stream("GET", path) as response:
                    if not response.is_success:
                        response.read()
                        raise error_from_body(
                            response.status_code,
                            response.json()
                            if "json" in response.headers.get("content-type", "")
                            else None,
                        )
                    yield from response.iter_bytes(CHUNK)
            except httpx.TransportError as exc:
                raise ServerUnreachable(f"download of {item['path']} failed: {exc}") from exc

        return stream()
