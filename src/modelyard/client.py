"""The Python SDK: ``modelyard.Client`` talks to the control plane over HTTP.

It finds the server from ``MODELYARD_URL`` and the key from ``MODELYARD_API_KEY`` or the
``admin.key`` file a local server wrote, exactly like the CLI. Large files move straight between
the client and the blob store at the locations the API hands out; the API verifies them at commit.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import os
import re
import ssl
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx

from modelyard.errors import (
    DeploymentFailed,
    IntegrityError,
    InvalidInput,
    NotFound,
    ServerUnreachable,
    Unavailable,
    error_from_body,
)
from modelyard.registry import pull as pulling
from modelyard.registry.records import (
    AliasChange,
    ArtifactInfo,
    NamespaceInfo,
    VersionInfo,
    VersionSpec,
    manifest_digest,
)
from modelyard.settings import Settings, load_settings
from modelyard.sql.source import ImportResult, SqlSource
from modelyard.types import ArtifactKind, FileEntry, ModelRef, Role, check_name

# The records of pipelines, deployments, SLOs, events and keys load in the methods that return
# them: a process that only moves versions (``datasets import-sql``, ``pull``) starts without them.
if TYPE_CHECKING:
    from modelyard.auth.records import KeyInfo
    from modelyard.delivery.burnrate import Objective
    from modelyard.delivery.records import AlertInfo, RolloutInfo, SloStatus
    from modelyard.events.records import Event, Webhook
    from modelyard.pipelines.dsl import Pipeline
    from modelyard.pipelines.records import PipelineInfo, RunInfo, ScheduleInfo, ScheduleSpec
    from modelyard.pipelines.spec import PipelineSpec
    from modelyard.realtime.sdk import RealtimeClient, Stream
    from modelyard.serving.logs import LogLine
    from modelyard.serving.records import DeploymentInfo

log = logging.getLogger(__name__)

CHUNK = 4 * 1024 * 1024
MAX_RETRY_WAIT = 5.0
"""The longest one wait between tries of a request a standby refused, whatever its Retry-After."""
Progress = Callable[[str, int], None]
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
# "ValueError: ...", "modelyard.errors.InvalidInput: ...": the line a Python traceback ends with
# (a dotted CapWords name at the start of a line, not a log level like "INFO:").
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*[a-z]\w*(?:: .*)?$")


def status_line(status: str) -> str:
    """A deployment's status on one line: a failure reason that holds a replica's last log lines
    (a traceback) keeps its first line and the error line the traceback ends with."""
    head, newline, rest = status.partition("\n")
    if not newline:
        return status
    serving = ""
    if "; still serving " in rest:
        rest, _, serving = rest.rpartition("; still serving ")
    lines = [line.rstrip() for line in rest.splitlines() if line.strip()]
    final = next((line for line in reversed(lines) if _ERROR_LINE.match(line)), None)
    final = final or (lines[-1].strip() if lines else "")
    head = head.removesuffix("; last log lines:").rstrip(" :")
    return f"{head}: {final}" + (f"; still serving {serving}" if serving else "")


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


def _retry_after(response: httpx.Response) -> float:
    """The seconds a ``Retry-After`` header asks for (1 when absent, or an HTTP date)."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


def _tls(url: str) -> ssl.SSLContext | bool:
    """What the API client verifies TLS with: the trust store for an ``https`` control plane;
    for plain ``http`` a context that trusts nothing, so no HTTPS request could pass unverified,
    made without loading the trust store (40-60 ms of every command's start-up)."""
    if urlsplit(url).scheme == "https":
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class Client:
    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        settings: Settings | None = None,
        timeout: float = 60.0,
        cache_dir: Path | None = None,
        gateway_url: str | None = None,
        retry_unavailable_s: float = 30.0,
    ) -> None:
        """``retry_unavailable_s``: how long a request a standby control plane refused (503
        ``unavailable``, during a failover) is sent again before its error is raised; 0 never."""
        settings = settings or load_settings().settings
        self.retry_unavailable_s = retry_unavailable_s
        self.settings = settings
        self.url = (url or settings.url).rstrip("/")
        host = "127.0.0.1" if settings.gateway_host in ("0.0.0.0", "::") else settings.gateway_host
        self.gateway_url = gateway_url or f"http://{host}:{settings.gateway_port}"
        """Where events and prediction reads go (``realtime``)."""
        self.api_key = api_key or settings.resolved_api_key()
        self.cache_dir = cache_dir or settings.cache_dir or settings.home / "cache"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.http = httpx.Client(
            base_url=f"{self.url}/api/v1", headers=headers, timeout=timeout, verify=_tls(self.url)
        )
        self._timeout = timeout
        self._local = urlsplit(self.url).hostname in _LOOPBACK

    @functools.cached_property
    def _plain(self) -> httpx.Client:
        """The client for blob-store URLs, made on first use: each httpx client loads the TLS
        trust store (tens of ms), and with a local blob store it is never used."""
        return httpx.Client(timeout=self._timeout)

    # plumbing ------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call (``path`` under ``/api/v1``): the decoded JSON answer, None when empty; an
        error answer raises the `ModelyardError` it names.

        A request a standby refused (503 ``unavailable``: it was not executed) is sent again after
        its ``Retry-After`` (at most `MAX_RETRY_WAIT` s a time) for up to ``retry_unavailable_s``,
        so that a write during a failover waits for the new leader instead of failing; a streamed
        body (a file's chunks) cannot be sent twice and is not retried.

        Example: ``client.request("GET", "/namespaces")``
        """
        content = kwargs.get("content")
        replayable = isinstance(content, bytes | str | None) and "files" not in kwargs
        budget = self.retry_unavailable_s if replayable else 0.0
        started, tries = time.monotonic(), 0
        while True:
            tries += 1
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise ServerUnreachable(
                    f"cannot reach the control plane at {self.url} ({exc}): start it with "
                    "'modelyard up' or set MODELYARD_URL"
                ) from exc
            if response.is_success:
                break
            try:
                body = response.json()
            except json.JSONDecodeError:
                body = None
            error = error_from_body(response.status_code, body)
            if response.status_code != 503 or not isinstance(error, Unavailable):
                raise error
            elapsed = time.monotonic() - started
            if elapsed >= budget:
                if tries > 1:
                    raise Unavailable(
                        f"{error.message} (sent {tries} times over {elapsed:.1f} s)",
                        **error.details,
                    )
                raise error
            # At least a tenth of a second, so that a "Retry-After: 0" does not spin.
            wait = min(max(_retry_after(response), 0.1), MAX_RETRY_WAIT, budget - elapsed)
            log.info(
                "%s %s refused by a standby control plane: retry in %.1f s", method, path, wait
            )
            time.sleep(wait)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    @functools.cached_property
    def realtime(self) -> RealtimeClient:
        """Streams, realtime deployments, events and predictions (`modelyard.realtime.sdk`).

        Example: ``client.realtime.prediction("team", "cart-score", "u42")``
        """
        from modelyard.realtime.sdk import RealtimeClient

        return RealtimeClient(self)

    def stream(self, namespace: str, name: str) -> Stream:
        """A stream to send events to, through the gateway (`modelyard.realtime.sdk.Stream`).

        Example: ``client.stream("team", "clicks").send({"user_id": "u42", "type": "view"})``
        """
        return self.realtime.stream(namespace, name)

    def close(self) -> None:
        """Close the HTTP connections (also at the end of a ``with Client() as client:`` block).

        Example: ``client.close()``
        """
        self.http.close()
        if "_plain" in self.__dict__:  # made only if it was used
            self._plain.close()
        if "realtime" in self.__dict__:
            self.realtime.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @staticmethod
    def _base(kind: ArtifactKind, namespace: str, name: str) -> str:
        return f"/namespaces/{check_name(namespace, 'namespace')}/{kind}s/{check_name(name)}"

    # meta, namespaces, keys ---------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The control plane's answer to a health check: ``{"status": "ok", "version": ...}``.

        Example: ``client.health()["status"]``
        """
        result: dict[str, Any] = self.request("GET", "/health")
        return result

    def whoami(self) -> dict[str, Any]:
        """The calling key: its id, name, admin flag and roles per namespace.

        Example: ``client.whoami()["roles"]``
        """
        result: dict[str, Any] = self.request("GET", "/whoami")
        return result

    def create_namespace(self, name: str, description: str = "") -> NamespaceInfo:
        """A new namespace (admin keys only).

        Example: ``client.create_namespace("team", "the ranking team")``
        """
        return NamespaceInfo.model_validate(
            self.request("POST", "/namespaces", json={"name": name, "description": description})
        )

    def list_namespaces(self) -> list[NamespaceInfo]:
        """The namespaces this key may read.

        Example: ``[ns.name for ns in client.list_namespaces()]``
        """
        return [NamespaceInfo.model_validate(n) for n in self.request("GET", "/namespaces")]

    def create_key(
        self,
        name: str,
        roles: dict[str, Role | str] | None = None,
        *,
        admin: bool = False,
        expires_at: dt.datetime | None = None,
    ) -> tuple[KeyInfo, str]:
        """A new key and its token (shown only now); from ``expires_at`` on it is refused.

        Example: ``key, token = client.create_key("ci", {"team": "editor"})``
        """
        from modelyard.auth.records import KeyInfo

        body = self.request(
            "POST",
            "/keys",
            json={
                "name": name,
                "roles": {k: str(v) for k, v in (roles or {}).items()},
                "admin": admin,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
        return KeyInfo.model_validate(body["key"]), str(body["token"])

    def list_keys(self) -> list[KeyInfo]:
        """The keys this key may see (an admin: every key, revoked ones too), never their tokens.

        Example: ``[k.name for k in client.list_keys() if k.revoked_at is None]``
        """
        from modelyard.auth.records import KeyInfo

        return [KeyInfo.model_validate(k) for k in self.request("GET", "/keys")]

    def revoke_key(self, key: str) -> KeyInfo:
        """Revoke a key by its id, or by its name when one live key has that name.

        Example: ``client.revoke_key("ci")``
        """
        from modelyard.auth.records import KeyInfo

        return KeyInfo.model_validate(self.request("DELETE", f"/keys/{check_name(key, 'key')}"))

    # models and datasets ----------------------------------------------------------------------
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
            ClientRegistry(self),
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

    # pipelines and runs -------------------------------------------------------------------------
    def register_pipeline(self, namespace: str, pipeline: Pipeline | PipelineSpec) -> PipelineInfo:
        """Compile (when given a ``@pipeline``) and register; the same content is one version.

        Example: ``client.register_pipeline("team", training)  # a @pipeline function``
        """
        from modelyard.pipelines.dsl import Pipeline
        from modelyard.pipelines.records import PipelineInfo

        spec = pipeline.compile() if isinstance(pipeline, Pipeline) else pipeline
        return PipelineInfo.model_validate(
            self.request(
                "POST",
                f"/namespaces/{check_name(namespace, 'namespace')}/pipelines",
                json=spec.model_dump(mode="json"),
            )
        )

    def list_pipelines(self, namespace: str) -> list[PipelineInfo]:
        """The pipelines registered in a namespace.

        Example: ``[p.name for p in client.list_pipelines("team")]``
        """
        from modelyard.pipelines.records import PipelineInfo

        return [
            PipelineInfo.model_validate(p)
            for p in self.request("GET", f"/namespaces/{namespace}/pipelines")
        ]

    def get_pipeline(self, namespace: str, name: str) -> tuple[PipelineInfo, PipelineSpec]:
        """A pipeline and the spec of its latest version.

        Example: ``info, spec = client.get_pipeline("team", "training")``
        """
        from modelyard.pipelines.records import PipelineInfo
        from modelyard.pipelines.spec import PipelineSpec

        body = self.request("GET", f"/namespaces/{namespace}/pipelines/{name}")
        return (
            PipelineInfo.model_validate(body["pipeline"]),
            PipelineSpec.model_validate(body["spec"]),
        )

    def export_pipeline(self, namespace: str, name: str, format: str = "kfp") -> str:
        """The pipeline in another format: ``kfp`` (a Kubeflow Pipelines v2 spec, YAML).

        Example: ``Path("training.yaml").write_text(client.export_pipeline("team", "training"))``
        """
        response = self.http.get(
            f"/namespaces/{namespace}/pipelines/{name}/export", params={"format": format}
        )
        if not response.is_success:
            raise error_from_body(response.status_code, response.json())
        return response.text

    def run_pipeline(
        self, namespace: str, name: str, params: dict[str, Any] | None = None
    ) -> RunInfo:
        """Start a run of the pipeline's latest version with ``params``; it is queued at once.

        Example: ``run = client.run_pipeline("team", "training", {"lr": 0.05})``
        """
        from modelyard.pipelines.records import RunInfo

        return RunInfo.model_validate(
            self.request(
                "POST",
                f"/namespaces/{namespace}/pipelines/{name}/runs",
                json={"params": params or {}},
            )
        )

    def get_run(self, namespace: str, run_id: str) -> RunInfo:
        """One run with its steps and history; ``run_id`` may be a unique prefix.

        Example: ``client.get_run("team", run.id).state``
        """
        from modelyard.pipelines.records import RunInfo

        return RunInfo.model_validate(self.request("GET", f"/namespaces/{namespace}/runs/{run_id}"))

    def list_runs(self, namespace: str, pipeline: str | None = None) -> list[RunInfo]:
        """The runs of a namespace (of one ``pipeline`` when given), newest first.

        Example: ``client.list_runs("team", pipeline="training")``
        """
        from modelyard.pipelines.records import RunInfo

        params = {"pipeline": pipeline} if pipeline else {}
        return [
            RunInfo.model_validate(r)
            for r in self.request("GET", f"/namespaces/{namespace}/runs", params=params)
        ]

    def cancel_run(self, namespace: str, run_id: str) -> RunInfo:
        """Cancel a queued or running run; its running steps are stopped.

        Example: ``client.cancel_run("team", run.id)``
        """
        from modelyard.pipelines.records import RunInfo

        return RunInfo.model_validate(
            self.request("POST", f"/namespaces/{namespace}/runs/{run_id}/cancel")
        )

    def retry_run(self, namespace: str, run_id: str) -> RunInfo:
        """A new run of a failed or cancelled run that reuses the steps that succeeded.

        Example: ``client.retry_run("team", run.id)``
        """
        from modelyard.pipelines.records import RunInfo

        return RunInfo.model_validate(
            self.request("POST", f"/namespaces/{namespace}/runs/{run_id}/retry")
        )

    def wait_run(self, namespace: str, run_id: str, timeout: float = 600.0) -> RunInfo:
        """Block until the run ends, woken by its events (no polling); returns the final run.

        Example: ``client.wait_run("team", run.id, timeout=300).state``
        """
        from modelyard.pipelines.states import FINISHED, RUN_ENDED

        deadline = time.monotonic() + timeout
        after = int(self.request("GET", "/events/cursor")["last_id"])
        run = self.get_run(namespace, run_id)
        while run.state not in FINISHED:
            if time.monotonic() > deadline:
                raise ServerUnreachable(f"run {run_id} did not finish within {timeout:g} s")
            for event in self.events(
                after=after,
                types=["run.*"],
                follow=True,
                timeout=max(0.1, deadline - time.monotonic()),
            ):
                after = event.id
                if event.data.get("run") == run_id and event.type in RUN_ENDED.values():
                    break
            run = self.get_run(namespace, run_id)
        return run

    def run_logs(
        self, namespace: str, run_id: str, step: str | None = None, follow: bool = False
    ) -> Iterator[str]:
        """The log lines of a run (of one ``step``); with ``follow``, until the run ends.

        Example: ``for line in client.run_logs("team", run.id, follow=True): print(line)``
        """
        params: dict[str, Any] = {"follow": follow}
        if step:
            params["step"] = step
        yield from self._lines(f"/namespaces/{namespace}/runs/{run_id}/logs", params)

    def _lines(self, path: str, params: dict[str, Any]) -> Iterator[str]:
        """A streamed text answer's lines, as they come (no read timeout)."""
        with self.http.stream(
            "GET", path, params=params, timeout=httpx.Timeout(None, connect=10)
        ) as response:
            if not response.is_success:
                response.read()
                raise error_from_body(response.status_code, response.json())
            yield from response.iter_lines()

    def create_schedule(self, namespace: str, spec: ScheduleSpec) -> ScheduleInfo:
        """Run a pipeline on a cron, an interval or an event (``ScheduleSpec``).

        Example: ``client.create_schedule("team", ScheduleSpec(name="nightly", pipeline="train",
        cron="@daily"))``
        """
        from modelyard.pipelines.records import ScheduleInfo

        return ScheduleInfo.model_validate(
            self.request(
                "POST", f"/namespaces/{namespace}/schedules", json=spec.model_dump(mode="json")
            )
        )

    def list_schedules(self, namespace: str) -> list[ScheduleInfo]:
        """The schedules of a namespace, with their last and next fire.

        Example: ``client.list_schedules("team")``
        """
        from modelyard.pipelines.records import ScheduleInfo

        return [
            ScheduleInfo.model_validate(s)
            for s in self.request("GET", f"/namespaces/{namespace}/schedules")
        ]

    def pause_schedule(self, namespace: str, name: str, paused: bool = True) -> ScheduleInfo:
        """Pause a schedule (``paused=False`` resumes it).

        Example: ``client.pause_schedule("team", "nightly")``
        """
        from modelyard.pipelines.records import ScheduleInfo

        action = "pause" if paused else "resume"
        return ScheduleInfo.model_validate(
            self.request("POST", f"/namespaces/{namespace}/schedules/{name}/{action}")
        )

    def delete_schedule(self, namespace: str, name: str) -> None:
        """Delete a schedule; its runs stay.

        Example: ``client.delete_schedule("team", "nightly")``
        """
        self.request("DELETE", f"/namespaces/{namespace}/schedules/{name}")

    # events and webhooks ------------------------------------------------------------------------
    def events(
        self,
        *,
        after: int | None = None,
        types: list[str] | None = None,
        follow: bool = True,
        timeout: float | None = None,
        last: int | None = None,
    ) -> Iterator[Event]:
        """Server-sent events, in order; with ``follow`` it waits for new ones (when ``timeout``
        is given, it ends after that many seconds without any). Without ``after``, ``last``
        starts with the newest ``last`` events that match ``types``.

        Example: ``[e.type for e in client.events(types=["model.*"], last=10, follow=False)]``
        """
        from modelyard.events.records import Event

        params: dict[str, Any] = {"follow": follow}
        if after is not None:
            params["after"] = after
        elif last is not None:
            params["last"] = last
        if types:
            params["type"] = types
        try:
            with self.http.stream(
                "GET", "/events", params=params, timeout=httpx.Timeout(timeout, connect=10)
            ) as response:
                if not response.is_success:
                    response.read()
                    raise error_from_body(response.status_code, response.json())
                data: list[str] = []
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        yield Event.model_validate_json("\n".join(data))
                        data = []
        except httpx.ReadTimeout:
            return
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"event stream from {self.url} broke: {exc}") from exc

    def create_webhook(
        self, namespace: str, url: str, events: list[str] | None = None
    ) -> tuple[Webhook, str]:
        """Send a namespace's events (those matching ``events``) to ``url``, HMAC-signed; returns
        the webhook and its signing secret (shown only now).

        Example: ``hook, secret = client.create_webhook("team", "https://ci.example.com/hook")``
        """
        from modelyard.events.records import Webhook

        body = self.request(
            "POST",
            f"/namespaces/{namespace}/webhooks",
            json={"url": url, "events": events or ["*"]},
        )
        return Webhook.model_validate(body["webhook"]), str(body["secret"])

    def list_webhooks(self, namespace: str) -> list[Webhook]:
        """The webhooks of a namespace.

        Example: ``client.list_webhooks("team")``
        """
        from modelyard.events.records import Webhook

        return [
            Webhook.model_validate(w)
            for w in self.request("GET", f"/namespaces/{namespace}/webhooks")
        ]

    def delete_webhook(self, namespace: str, webhook_id: str) -> None:
        """Stop sending events to a webhook.

        Example: ``client.delete_webhook("team", hook.id)``
        """
        self.request("DELETE", f"/namespaces/{namespace}/webhooks/{webhook_id}")

    # deployments --------------------------------------------------------------------------------
    def create_deployment(
        self, namespace: str, name: str, model: str, **spec: Any
    ) -> DeploymentInfo:
        """Deploy ``model`` (``name@alias|latest|N`` of the namespace) as a Web API; ``spec``
        holds the other DeploymentSpec fields (autoscaling, batching, resources, ...).

        Example: ``client.create_deployment("team", "iris", "iris@production", timeout_s=10)``
        """
        from modelyard.serving.records import DeploymentInfo

        body = {"name": name, "model": model, **spec}
        return DeploymentInfo.model_validate(
            self.request("POST", f"/namespaces/{namespace}/deployments", json=body)
        )

    def list_deployments(self, namespace: str) -> list[DeploymentInfo]:
        """The deployments of a namespace, with their revisions and traffic.

        Example: ``[d.name for d in client.list_deployments("team")]``
        """
        from modelyard.serving.records import DeploymentInfo

        return [
            DeploymentInfo.model_validate(d)
            for d in self.request("GET", f"/namespaces/{namespace}/deployments")
        ]

    def get_deployment(self, namespace: str, name: str) -> DeploymentInfo:
        """One deployment: spec, traffic, revisions, replicas and status.

        Example: ``client.get_deployment("team", "iris").ready``
        """
        from modelyard.serving.records import DeploymentInfo

        return DeploymentInfo.model_validate(
            self.request("GET", f"/namespaces/{namespace}/deployments/{name}")
        )

    def update_deployment(self, namespace: str, name: str, **changes: Any) -> DeploymentInfo:
        """Change some fields of the spec (``DeploymentSpec``); a new revision when the model or the
        spec changed.

        Example: ``client.update_deployment("team", "iris", timeout_s=10)``
        """
        from modelyard.serving.records import DeploymentInfo

        return DeploymentInfo.model_validate(
            self.request("PATCH", f"/namespaces/{namespace}/deployments/{name}", json=changes)
        )

    def set_traffic(
        self,
        namespace: str,
        name: str,
        targets: list[dict[str, Any]],
        *,
        sticky_header: str | None = None,
        shadow: dict[str, int] | None = None,
    ) -> DeploymentInfo:
        """Split traffic by percent over ready revisions (``targets``: revision, percent, tag);
        ``sticky_header`` keeps one value of that header on one revision; ``shadow``
        ({"revision", "percent"}) copies a share of requests to a revision to compare.

        Example: ``client.set_traffic("team", "iris", [{"revision": 2, "percent": 100}])``
        """
        from modelyard.serving.records import DeploymentInfo

        body: dict[str, Any] = {"targets": targets}
        if sticky_header is not None:
            body["sticky_header"] = sticky_header
        if shadow is not None:
            body["shadow"] = shadow
        path = f"/namespaces/{namespace}/deployments/{name}/traffic"
        return DeploymentInfo.model_validate(self.request("PUT", path, json=body))

    def set_strategy(self, namespace: str, name: str, **strategy: Any) -> DeploymentInfo:
        """``strategy="canary"``, ``steps=[10, 50, 100]``, ``min_step_seconds``,
        ``max_step_seconds``, ``analysis={...}``; or ``strategy="replace"``.

        Example: ``client.set_strategy("team", "iris", strategy="canary", steps=[10, 50, 100])``
        """
        from modelyard.serving.records import DeploymentInfo

        path = f"/namespaces/{namespace}/deployments/{name}/strategy"
        return DeploymentInfo.model_validate(self.request("PUT", path, json=strategy))

    def start_rollout(self, namespace: str, name: str, revision: int) -> RolloutInfo:
        """Roll ``revision`` out with the deployment's canary steps, from the revision serving now.

        Example: ``client.start_rollout("team", "iris", 2)``
        """
        from modelyard.delivery.records import RolloutInfo

        path = f"/namespaces/{namespace}/deployments/{name}/rollouts"
        return RolloutInfo.model_validate(self.request("POST", path, json={"revision": revision}))

    def rollout_action(self, namespace: str, name: str, action: str) -> RolloutInfo:
        """``action``: promote, rollback, pause or resume the rollout under way.

        Example: ``client.rollout_action("team", "iris", "promote")``
        """
        from modelyard.delivery.records import RolloutInfo

        path = f"/namespaces/{namespace}/deployments/{name}/rollouts/{action}"
        return RolloutInfo.model_validate(self.request("POST", path))

    def rollouts(self, namespace: str, name: str, limit: int = 20) -> list[RolloutInfo]:
        """The deployment's rollouts, newest first, with each step's analysis.

        Example: ``client.rollouts("team", "iris", limit=5)``
        """
        from modelyard.delivery.records import RolloutInfo

        path = f"/namespaces/{namespace}/deployments/{name}/rollouts"
        return [
            RolloutInfo.model_validate(r)
            for r in self.request("GET", path, params={"limit": limit})
        ]

    def deployment_history(self, namespace: str, name: str, limit: int = 100) -> list[Event]:
        """The deployment's events (revisions, traffic, rollouts), newest first.

        Example: ``[e.type for e in client.deployment_history("team", "iris")]``
        """
        from modelyard.events.records import Event

        path = f"/namespaces/{namespace}/deployments/{name}/history"
        return [Event.model_validate(e) for e in self.request("GET", path, params={"limit": limit})]

    def deployment_logs(
        self,
        namespace: str,
        name: str,
        *,
        revision: int | None = None,
        replica: str | None = None,
        since: str | dt.datetime | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> Iterator[LogLine]:
        """What the deployment's replicas logged (of one ``revision`` or ``replica``), each line
        with its time and replica, merged in time order: since ``since`` (``10m``, ``2h``, an
        ISO time or a datetime), the last ``tail`` lines; with ``follow``, new lines as they
        come, until you stop iterating.

        Example: ``for line in client.deployment_logs("team", "iris", tail=20): print(line.text)``
        """
        from modelyard.serving.logs import LogLine

        params: dict[str, Any] = {"follow": follow}
        if revision is not None:
            params["revision"] = revision
        if replica is not None:
            params["replica"] = replica
        if since is not None:
            params["since"] = since.isoformat() if isinstance(since, dt.datetime) else since
        if tail is not None:
            params["tail"] = tail
        for line in self._lines(f"/namespaces/{namespace}/deployments/{name}/logs", params):
            if line:
                yield LogLine.parse(line)

    def delete_deployment(self, namespace: str, name: str) -> None:
        """Delete a deployment: its replicas stop and its route goes away.

        Example: ``client.delete_deployment("team", "iris")``
        """
        self.request("DELETE", f"/namespaces/{namespace}/deployments/{name}")

    def wait_deployment(
        self,
        namespace: str,
        name: str,
        *,
        version: int | None = None,
        revision: int | None = None,
        timeout: float = 120.0,
    ) -> DeploymentInfo:
        """Wait until the deployment serves (``version`` when given; revision number
        ``revision`` when given) with a ready replica; raise with the deployment's status when
        the latest revision failed (``revision``: failed or was rejected), or time ran out.

        Example: ``client.wait_deployment("team", "iris", version=3, timeout=120)``
        """
        from modelyard.serving.states import ReplicaState, RevisionState

        deadline = time.monotonic() + timeout
        while True:
            info = self.get_deployment(namespace, name)
            if revision is not None:
                target = next((r for r in info.revisions if r.number == revision), None)
                if target is None:
                    raise DeploymentFailed(f"{namespace}/{name} has no revision {revision}")
            else:
                target = info.revisions[-1] if info.revisions else None
            # a revision asked for may also have been rejected (a canary rolled back)
            ended = (
                (RevisionState.FAILED, RevisionState.REJECTED)
                if revision is not None
                else (RevisionState.FAILED,)
            )
            if target is not None and target.state in ended:
                raise DeploymentFailed(
                    f"{namespace}/{name}: {status_line(info.status)}", status=info.status
                )
            serving = [r for r in info.revisions if r.percent > 0]
            if revision is not None:
                serving = [r for r in serving if r.number == revision]
            if (
                info.ready
                and any(p.state == ReplicaState.READY for r in serving for p in r.replicas)
                and (version is None or any(r.model_version == version for r in serving))
            ):
                return info
            if time.monotonic() > deadline:
                raise DeploymentFailed(
                    f"{namespace}/{name} not serving after {timeout:.0f} s: "
                    f"{status_line(info.status)}",
                    status=info.status,
                )
            time.sleep(0.1)

    # slos ---------------------------------------------------------------------------------------
    def set_slos(
        self, namespace: str, name: str, objectives: Sequence[Objective | Mapping[str, Any]]
    ) -> list[Objective]:
        """Replace the deployment's objectives, e.g. ``[{"name": "availability", "kind":
        "availability", "target": 0.999}]``; ``[]`` removes them.

        Example: ``client.set_slos("team", "iris", objectives)``
        """
        from modelyard.delivery.burnrate import Objective

        body = {
            "objectives": [
                o.model_dump(exclude_none=True) if isinstance(o, Objective) else dict(o)
                for o in objectives
            ]
        }
        path = f"/namespaces/{namespace}/deployments/{name}/slos"
        answer = self.request("PUT", path, json=body)
        return [Objective.model_validate(o) for o in answer["objectives"]]

    def get_slos(self, namespace: str, name: str) -> list[Objective]:
        """The deployment's objectives.

        Example: ``[o.name for o in client.get_slos("team", "iris")]``
        """
        from modelyard.delivery.burnrate import Objective

        path = f"/namespaces/{namespace}/deployments/{name}/slos"
        return [Objective.model_validate(o) for o in self.request("GET", path)["objectives"]]

    def slo_status(self, namespace: str, name: str) -> SloStatus:
        """Per objective: SLI, error budget, burn rates over the alert windows, firing alerts.

        Example: ``client.slo_status("team", "iris").objectives[0].budget_remaining``
        """
        from modelyard.delivery.records import SloStatus

        path = f"/namespaces/{namespace}/deployments/{name}/slos/status"
        return SloStatus.model_validate(self.request("GET", path))

    def slo_alerts(self, namespace: str, name: str, limit: int = 50) -> list[AlertInfo]:
        """The deployment's latest alerts, firing or resolved, newest first.

        Example: ``client.slo_alerts("team", "iris", limit=10)``
        """
        from modelyard.delivery.records import AlertInfo

        path = f"/namespaces/{namespace}/deployments/{name}/slos/alerts"
        found = self.request("GET", path, params={"limit": limit})
        return [AlertInfo.model_validate(a) for a in found]

    def slo_rules(self, namespace: str, name: str) -> str:
        """The objectives as a Prometheus rule file (YAML).

        Example: ``Path("iris-rules.yaml").write_text(client.slo_rules("team", "iris"))``
        """
        response = self.http.get(f"/namespaces/{namespace}/deployments/{name}/slos/rules")
        if not response.is_success:
            raise error_from_body(response.status_code, response.json())
        return response.text
