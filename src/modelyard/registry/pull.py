"""Pulling a version into a local cache: what a model server does at start instead of baking
images.

The files are downloaded into a temporary folder beside the final one, each verified against its
sha256 and size while it streams, fsynced, and the folder is renamed into place in one step. A
folder that exists is complete, so a second pull of the same version reuses it at once.

A file the client can open itself (a local blob store) is not streamed through Python: the kernel
copies it (``copy_file_range``, else ``sendfile``) and fsyncs the copy in a worker thread while
this thread hashes the same open file, so hashing, the slowest part, overlaps the rest.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from pathlib import Path

from modelyard.errors import IntegrityError
from modelyard.registry.records import VersionInfo
from modelyard.types import FileEntry

MARKER = ".modelyard-version.json"
CHUNK = 4 * 1024 * 1024
Progress = Callable[[str, int], None]
# What to write for an entry: its bytes as they stream, or a local file to copy.
Fetch = Callable[[FileEntry], Iterable[bytes] | Path]
# Errors that say a way of copying does not work for these two files: try the next way.
_CANNOT_COPY_THIS_WAY = frozenset(
    {
        errno.EXDEV,
        errno.ENOSYS,
        errno.EINVAL,
        errno.EOPNOTSUPP,
        errno.ENOTSUP,
        errno.ENOTSOCK,
        errno.EPERM,
    }
)
_STEP = 1 << 30  # bytes per copy_file_range / sendfile call


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
    _check(entry, size, digest.hexdigest())


def copy_verified(
    entry: FileEntry,
    source: Path,
    dest: Path,
    progress: Progress | None = None,
    *,
    copier: Executor | None = None,
    buffer: bytearray | None = None,
) -> None:
    """Copy the local file ``source`` to ``dest`` and fsync it, checking what was copied against
    ``entry``: raise IntegrityError naming the file on a mismatch.

    The copy and fsync run on ``copier`` (a worker thread) while this thread hashes the same open
    file into ``buffer``, reused from call to call. Both read the one open file (the copy at
    explicit offsets), so the hashed bytes are the copied bytes.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if buffer is None:
        buffer = _buffer_for(entry.size)
    with contextlib.ExitStack() as stack:
        if copier is None:
            copier = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="pull-copy"))
        with open(source, "rb", buffering=0) as src, open(dest, "wb", buffering=0) as out:
            copying = copier.submit(_copy_and_sync, src.fileno(), out.fileno())
            try:
                digest, size, view = hashlib.sha256(), 0, memoryview(buffer)
                while count := src.readinto(view):
                    digest.update(view[:count])
                    size += count
                    if progress is not None:
                        progress(entry.path, count)
            finally:
                wait([copying])  # the worker uses both files: close them only after it ends
            copied = copying.result()
    _check(entry, size, digest.hexdigest())
    if copied != size:  # the file changed between the two reads: what was copied is unknown
        raise IntegrityError(
            f"copying {entry.path!r} read {copied} bytes, hashing it read {size}: the stored "
            "file changed during the pull; pull again",
            path=entry.path,
        )


def _buffer_for(size: int) -> bytearray:
    """A read buffer for files of up to ``size`` bytes: no larger than needed (it is zeroed when
    made), at least 64 KiB (a file may hold more than it should)."""
    return bytearray(min(CHUNK, max(64 * 1024, size)))


def _check(entry: FileEntry, size: int, sha256: str) -> None:
    if size != entry.size or sha256 != entry.sha256:
        raise IntegrityError(
            f"downloaded {entry.path!r} does not match the version: expected {entry.size} bytes "
            f"sha256 {entry.sha256}, got {size} bytes sha256 {sha256}",
            path=entry.path,
        )


def _copy_and_sync(src: int, dst: int) -> int:
    """Copy all of ``src`` to ``dst`` in the kernel and fsync it; return the bytes copied.

    Reads at explicit offsets, leaving the position of ``src`` to the hashing thread. Each way of
    copying is tried in turn, from the offset the previous one reached, until the file is done.
    """
    offset = 0
    for copy in (_copy_file_range, _sendfile, _read_write):
        try:
            while count := copy(src, dst, offset):
                offset += count
        except OSError as exc:
            if exc.errno not in _CANNOT_COPY_THIS_WAY or copy is _read_write:
                raise
            continue
        # copy_file_range and sendfile return 0 at the end of the file, but also on some files
        # they do not support: only an empty pread (the last way) surely means the end.
        if offset >= os.fstat(src).st_size:
            break
    os.fsync(dst)
    return offset


def _copy_file_range(src: int, dst: int, offset: int) -> int:
    if not hasattr(os, "copy_file_range"):  # Linux only
        raise OSError(errno.ENOSYS, "copy_file_range is not available")
    return os.copy_file_range(src, dst, _STEP, offset)


def _sendfile(src: int, dst: int, offset: int) -> int:
    return os.sendfile(dst, src, offset, _STEP)


def _read_write(src: int, dst: int, offset: int) -> int:
    data = memoryview(os.pread(src, CHUNK, offset))
    written = 0
    while written < len(data):
        written += os.write(dst, data[written:])
    return written


def pull(
    version: VersionInfo, fetch: Fetch, cache_dir: Path, progress: Progress | None = None
) -> Path:
    """Return the cached folder of ``version``, downloading and verifying it when missing."""
    final = cache_path(cache_dir, version)
    if is_cached(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.part")
    copier: ThreadPoolExecutor | None = None
    buffer: bytearray | None = None
    try:
        for entry in version.files:
            source = fetch(entry)
            if isinstance(source, Path):
                if copier is None:
                    copier = ThreadPoolExecutor(1, thread_name_prefix="pull-copy")
                    buffer = _buffer_for(max(f.size for f in version.files))
                copy_verified(
                    entry, source, temp / entry.path, progress, copier=copier, buffer=buffer
                )
            else:
                write_verified(entry, source, temp / entry.path, progress)
        (temp / MARKER).write_text(json.dumps(version.to_dict(), indent=2))
        _fsync_dir(temp)
        try:
            os.rename(temp, final)
        except OSError:
            if not is_cached(final):  # not a concurrent pull that won the race
                raise
        _fsync_dir(final.parent)
    finally:
        if copier is not None:
            copier.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    return final


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
