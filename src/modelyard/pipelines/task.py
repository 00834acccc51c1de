"""The portable task spec: everything one attempt of a step needs, as one JSON document.

The executor writes it; :mod:`modelyard.pipelines.runner` reads it wherever the step runs (a
forked local process, a Kubernetes Job). It names no path of the control plane's machine: inputs
are blob-store records (content digests) that the runner copies into its own working folder,
outputs are written there and stored back into the same blob store by the runner, and the result
goes to ``result.json`` there, which the step backend reads back (a result longer than
``result_limit`` goes to the blob store, and ``result.json`` points to it). The runner's
working folder is its current directory. The blob location may carry the store's fsspec options:
keep credentials out of them (in the environment, or the machine's role) when steps run code
that others wrote.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class FileRecord(TypedDict):
    path: str
    sha256: str
    size: int


class ArtifactRecord(TypedDict):
    """An artifact in the blob store: a file (``digest`` is its sha256) or a folder (``digest``
    is the manifest digest of ``files``). What the cache key hashes and the registry commits."""

    type: str
    kind: str
    digest: str
    size: int
    files: list[FileRecord]
    metadata: dict[str, Any]
    uri: str


class OutputSlot(TypedDict):
    """An output the step writes: its artifact type and the URI its record will carry."""

    type: str
    uri: str


class BlobLocation(TypedDict):
    """The blob store the runner opens (``modelyard.store.blobs.open_blob_store``)."""

    url: str
    options: dict[str, Any]


class StepTask(TypedDict):
    """One attempt of one step."""

    module: str
    module_source: str
    code_root: str | None
    function: str
    """``name`` in ``module``, or ``package.module:function`` for a step of modelyard's own."""
    params: dict[str, Any]
    inputs: dict[str, ArtifactRecord | list[ArtifactRecord]]
    outputs: dict[str, OutputSlot]
    blobs: BlobLocation
    result_path: NotRequired[str]
    """Where the runner writes its :class:`StepResult`, relative to its working folder
    (``result.json`` when absent)."""
    result_limit: NotRequired[int]
    """The most bytes the result may take at ``result_path`` (a Kubernetes termination message
    keeps 4 KiB): a longer one goes to the blob store and ``result_path`` gets its
    :class:`StoredResult` instead (no limit when absent)."""


class StoredResult(TypedDict):
    """A result too long for ``result_path``, stored in the task's blob store by its sha256:
    the reader checks both before it trusts it."""

    sha256: str
    size: int


class StepResult(TypedDict, total=False):
    """What the runner writes to ``result_path``: ``error`` alone when the step failed."""

    result: Any
    metadata: dict[str, dict[str, Any]]
    artifacts: dict[str, ArtifactRecord]
    error: str
    stored: StoredResult
    """Alone: the result is in the blob store (``result_limit``)."""
