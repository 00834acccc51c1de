"""Content-addressed blob stores, one plug-in per backend, all on fsspec.

Layout under the store's root: ``sha256/ab/<digest>`` for committed content (written once, never
changed) and ``staging/<draft-id>/<path>`` for uploads a commit has not verified yet.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from modelyard.errors import ConfigError
from modelyard.store.blobs.base import BlobStore, Transfer

__all__ = ["BlobStore", "Transfer", "open_blob_store"]


def open_blob_store(url: str, options: dict[str, Any] | None = None) -> BlobStore:
    """The store for ``url``: ``file://`` (default), ``s3://``, or any other fsspec protocol."""
    scheme = urlsplit(url).scheme or "file"
    if scheme == "file":
        from modelyard.store.blobs.local import LocalBlobStore

        return LocalBlobStore(url, options or {})
    if scheme in ("s3", "s3a"):
        from modelyard.store.blobs.s3 import S3BlobStore

        return S3BlobStore(url, options or {})
    try:
        return BlobStore(url, options or {})
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"blob store {url!r}: {exc}. Install the fsspec backend for it.") from exc
