"""Pulling a version into a local cache: what a model server does at start instead of baking
images.

The files are downloaded into a temporary folder beside the final one, each verified against its
sha256 and size while it streams, fsynced, and the folder is renamed into place in one step. A
folder that exists is complete, so a second pull of the same version reuses it at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from modelyard.errors import IntegrityError
from modelyard.registry.records import VersionInfo
from modelyard.types import FileEntry

MARKER = ".modelyard-version.json"
Progress = Callable[[str, int], None]
Fetch = Callable[[FileEntry], Iterator[bytes]]


def cache_path(cache_dir: Path, version: VersionInfo) -> Path:
    digest = (version.manifest_digest or version.id)[:16]
    return (
        cache_dir
        / f"{version.kind}s"
        / version.namespace
        / version.name
        / f"{version.number}-{digest}"
    )


def is_cached(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def write_verified(
    entry: FileEntry, chunks: Iterable[bytes], dest: Path, progress: Progress | None = None
) -> None:
    """Write ``chunks`` to ``dest`` while hashing; raise IntegrityError naming the file on a
    mismatch. The data is fsynced before returning."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with open(dest, "wb") as out:
        for chunk in chunks:
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
            if progress is not None:
                progress(entry.path, len(chunk))
        out.flush()
        os.fsync(out.fileno())
    if size != entry.size or digest.hexdigest() != entry.sha256:
        raise IntegrityError(
            f"downloaded {entry.path!r} does not match the version: expected {entry.size} bytes "
            f"sha256 {entry.sha256}, got {size} bytes sha256 {digest.hexdigest()}",
            path=entry.path,
        )


def pull(
    version: VersionInfo, fetch: Fetch, cache_dir: Path, progress: Progress | None = None
) -> Path:
    """Return the cached folder of ``version``, downloading and verifying it when missing."""
    final = cache_path(cache_dir, version)
    if is_cached(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        for entry in version.files:
            write_verified(entry, fetch(entry), temp / entry.path, progress)
        (temp / MARKER).write_text(json.dumps(version.to_dict(), indent=2))
        _fsync_dir(temp)
        try:
            os.rename(temp, final)
        except OSError:
            if not is_cached(final):  # not a concurrent pull that won the race
                raise
        _fsync_dir(final.parent)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return final


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
