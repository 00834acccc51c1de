"""The blob store contract and its generic fsspec implementation."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import fsspec

from modelyard.errors import IntegrityError, ModelyardError, NotFound, StoreError
from modelyard.types import FileEntry

CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Transfer:
    """Where a client moves bytes itself, bypassing the API: a URL, the method and headers."""

    url: str
    method: str
    headers: dict[str, str] = field(default_factory=dict)


class BlobStore:
    """Generic fsspec store. Plug-ins override what their backend does better."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.url = url.rstrip("/")
        fs, root = fsspec.core.url_to_fs(self.url, **options)
        self.fs = fs
        self.root = root.rstrip("/")

    # keys --------------------------------------------------------------------------------
    def cas_key(self, digest: str) -> str:
        return f"{self.root}/sha256/{digest[:2]}/{digest}"

    def staging_key(self, draft_id: str, path: str = "") -> str:
        return f"{self.root}/staging/{draft_id}" + (f"/{path}" if path else "")

    # reading -------------------------------------------------------------------------------
    def has(self, digest: str) -> bool:
        return bool(self._call("checking", self.fs.exists, self.cas_key(digest)))

    def open(self, digest: str) -> BinaryIO:
        try:
            handle: BinaryIO = self.fs.open(self.cas_key(digest), "rb")
        except FileNotFoundError as exc:
            raise NotFound(f"blob {digest} is missing from {self.url}") from exc
        return handle

    def iter_chunks(self, digest: str) -> Iterator[bytes]:
        with self.open(digest) as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    # writing -------------------------------------------------------------------------------
    def write_staging(self, draft_id: str, path: str, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store an upload that came through the API; returns its sha256 and size."""
        return self._write_stream(self.staging_key(draft_id, path), chunks)

    def _write_stream(self, key: str, chunks: Iterable[bytes]) -> tuple[str, int]:
        digest, size = hashlib.sha256(), 0
        with self._guard("uploading"), self.fs.open(key, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        return digest.hexdigest(), size

    def promote(self, draft_id: str, entry: FileEntry) -> None:
        """Verify the staged upload of ``entry`` and move it to its content address.

        Raises :class:`IntegrityError` naming the file when it is missing, or its size or digest
        differ from what the commit declared. Content already stored needs no upload.
        """
        key = self.staging_key(draft_id, entry.path)
        staged = self._call("checking", self.fs.exists, key)
        if not staged:
            if self.has(entry.sha256):
                stored = int(self._call("checking", self.fs.size, self.cas_key(entry.sha256)))
                if stored != entry.size:
                    raise IntegrityError(
                        f"file {entry.path!r} declares {entry.size} bytes, but its sha256 names "
                        f"stored content of {stored} bytes: fix the size",
                        path=entry.path,
                    )
                return
            raise IntegrityError(
                f"file {entry.path!r} was never uploaded: upload it, then commit again",
                path=entry.path,
            )
        self._verify(key, entry)
        if not self.has(entry.sha256):
            self._move_into_place(key, self.cas_key(entry.sha256))
        else:
            self._call("cleaning", self.fs.rm, key)

    def _verify(self, key: str, entry: FileEntry) -> None:
        digest, size = hashlib.sha256(), 0
        with self._guard("verifying"), self.fs.open(key, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        if size != entry.size or digest.hexdigest() != entry.sha256:
            raise IntegrityError(
                f"file {entry.path!r} does not match the commit: declared {entry.size} bytes "
                f"sha256 {entry.sha256}, uploaded {size} bytes sha256 {digest.hexdigest()}. "
                "Upload it again, then commit.",
                path=entry.path,
            )

    def _move_into_place(self, src: str, dst: str) -> None:
        self._call("storing", self.fs.mv, src, dst)

    def put_file(self, path: str) -> tuple[str, int]:
        """Store a local file at its content address (no-op when present); its sha256, size."""
        digest, size = hashlib.sha256(), 0
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        hexdigest = digest.hexdigest()
        if not self.has(hexdigest):
            temp = f"{self.root}/staging/.put-{uuid.uuid4().hex}"
            self._call("storing", self.fs.put_file, path, temp)
            self._move_into_place(temp, self.cas_key(hexdigest))
        return hexdigest, size

    def get_file(self, digest: str, dest: str) -> None:
        """Copy stored content to a local file."""
        try:
            self._call("reading", self.fs.get_file, self.cas_key(digest), dest)
        except FileNotFoundError as exc:
            raise NotFound(f"blob {digest} is missing from {self.url}") from exc

    def drop_staging(self, draft_id: str) -> None:
        key = self.staging_key(draft_id)
        if self._call("checking", self.fs.exists, key):
            self._call("cleaning", self.fs.rm, key, recursive=True)

    def delete(self, digest: str) -> None:
        self._call("deleting", self.fs.rm, self.cas_key(digest))

    def iter_blobs(self) -> Iterator[tuple[str, dt.datetime | None]]:
        """Every stored digest with its modification time, for garbage collection."""
        base = f"{self.root}/sha256"
        if not self._call("listing", self.fs.exists, base):
            return
        for path, info in self._call("listing", self.fs.find, base, detail=True).items():
            modified = info.get("mtime") or info.get("LastModified")
            if isinstance(modified, float | int):
                modified = dt.datetime.fromtimestamp(modified, dt.UTC)
            yield path.rsplit("/", 1)[-1], modified if isinstance(modified, dt.datetime) else None

    def staged_drafts(self) -> list[str]:
        base = f"{self.root}/staging"
        if not self._call("listing", self.fs.exists, base):
            return []
        # Dot-names are put_file() temporaries of artifacts being stored, not drafts.
        names = [
            p.rstrip("/").rsplit("/", 1)[-1]
            for p in self._call("listing", self.fs.ls, base, detail=False)
        ]
        return [name for name in names if not name.startswith(".")]

    # direct transfers: None means "go through the API" ---------------------------------------
    def upload_target(self, draft_id: str, path: str) -> Transfer | None:
        return None

    def download_target(self, digest: str) -> Transfer | None:
        return None

    # error mapping -----------------------------------------------------------------------------
    def _call(self, doing: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        with self._guard(doing):
            return func(*args, **kwargs)

    def _guard(self, doing: str) -> _Guard:
        return _Guard(self.url, doing)


class _Guard:
    """Map backend failures (network, permissions) to StoreError naming the store."""

    def __init__(self, url: str, doing: str) -> None:
        self.url, self.doing = url, doing

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or isinstance(exc, ModelyardError):
            return
        if isinstance(exc, FileExistsError | NotADirectoryError | IsADirectoryError):
            return  # a clash of names within a draft: the caller says which
        if (
            isinstance(exc, OSError | ConnectionError | TimeoutError)
            or "botocore" in type(exc).__module__
        ):
            raise StoreError(
                f"blob store {self.url} failed while {self.doing}: {exc}. Check that it is "
                "reachable and writable."
            ) from exc
