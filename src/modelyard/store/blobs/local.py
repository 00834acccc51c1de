"""A local folder: the embedded default. Writes are atomic (temporary name, fsync, rename)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modelyard.errors import Conflict
from modelyard.store.blobs.base import BlobStore, Transfer


class LocalBlobStore(BlobStore):
    def __init__(self, url: str, options: dict[str, Any]) -> None:
        super().__init__(url, options)
        Path(self.root, "staging").mkdir(parents=True, exist_ok=True)

    def _write_stream(self, key: str, chunks: Iterable[bytes]) -> tuple[str, int]:
        final = Path(key)
        temp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with self._guard("uploading"):
                final.parent.mkdir(parents=True, exist_ok=True)
            result = super()._write_stream(str(temp), chunks)
            with self._guard("uploading"):
                os.replace(temp, final)
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            raise Conflict(
                f"{final.relative_to(self.root).as_posix().split('/', 2)[-1]!r} clashes with a "
                "file or folder of the same name in this draft: rename one of them"
            ) from exc
        finally:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
        return result

    def _move_into_place(self, src: str, dst: str) -> None:
        with self._guard("storing"):
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
            os.utime(src)  # a fresh mtime: GC spares young blobs of commits in flight
            fd = os.open(src, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(src, dst)
            dir_fd = os.open(Path(dst).parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def upload_target(self, draft_id: str, path: str) -> Transfer:
        return Transfer(Path(self.staging_key(draft_id, path)).as_uri(), "WRITE")

    def download_target(self, digest: str) -> Transfer:
        return Transfer(Path(self.cas_key(digest)).as_uri(), "READ")
