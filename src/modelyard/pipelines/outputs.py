"""Artifacts between the blob store and a step's folders.

An artifact is a file or a folder. Its record keeps every file's sha256, and its ``digest`` is
the sha256 of the file, or the manifest digest of the folder: what the cache key hashes, so the
same content under another name hits and changed content never does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from modelyard.errors import InvalidInput
from modelyard.registry.records import VersionInfo, manifest_digest
from modelyard.store.blobs import BlobStore
from modelyard.types import FileEntry


def store_output(
    blobs: BlobStore, path: Path, type: str, metadata: dict[str, Any], uri: str
) -> dict[str, Any]:
    """Move a step's output at ``path`` into the blob store; return its record."""
    if path.is_file():
        digest, size = blobs.put_file(str(path))
        files = [{"path": path.name, "sha256": digest, "size": size}]
        return {
            "type": type,
            "kind": "file",
            "digest": digest,
            "size": size,
            "files": files,
            "metadata": metadata,
            "uri": uri,
        }
    if path.is_dir():
        entries = []
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest, size = blobs.put_file(str(file))
            entries.append(FileEntry(file.relative_to(path).as_posix(), digest, size))
        return {
            "type": type,
            "kind": "dir",
            "digest": manifest_digest(entries),
            "size": sum(e.size for e in entries),
            "files": [vars(e) for e in entries],
            "metadata": metadata,
            "uri": uri,
        }
    raise InvalidInput(
        f"the step did not write its output {path.name!r}: write a file or a "
        f"folder at {type.lower()}.path"
    )


def registry_record(version: VersionInfo) -> dict[str, Any]:
    """A committed registry version as an input artifact."""
    return {
        "type": "Model" if version.kind == "model" else "Dataset",
        "kind": "dir",
        "digest": version.manifest_digest,
        "size": version.size_bytes,
        "files": [vars(f) for f in version.files],
        "metadata": {"ref": version.ref},
        "uri": f"modelyard://{version.kind}s/{version.ref}",
    }


def materialize(blobs: BlobStore, record: dict[str, Any], dest: Path) -> dict[str, Any]:
    """Copy an artifact to ``dest`` (a file, or a folder); return what the step is handed."""
    if record["kind"] == "file":
        dest.parent.mkdir(parents=True, exist_ok=True)
        blobs.get_file(record["digest"], str(dest))
    else:
        for item in record["files"]:
            target = dest / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            blobs.get_file(item["sha256"], str(target))
        dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755 if dest.is_dir() else 0o644)
    return {
        "type": record["type"],
        "path": str(dest),
        "uri": record.get("uri", ""),
        "metadata": record.get("metadata", {}),
    }


def version_files(record: dict[str, Any], output: str) -> list[FileEntry]:
    """The files of a registry version made from an output: a file keeps the output's name."""
    if record["kind"] == "file":
        return [FileEntry(output, record["digest"], record["size"])]
    return [FileEntry(f["path"], f["sha256"], f["size"]) for f in record["files"]]
