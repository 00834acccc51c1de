"""Publishing from inside the control plane: files already in the blob store become a version.

A pipeline step's outputs are stored by content before anything is published, so publishing is
the registry's commit protocol without the upload: a draft, a commit that verifies each digest
against the stored bytes and makes the version visible in one transaction (appending
``<kind>.version.committed``, which triggers delivery), then the alias when one is asked for. A
failure before the commit leaves only a draft, which garbage collection removes; a failure of the
alias leaves the version committed and the alias where it was. Clients (``push``, SQL imports,
realtime replays) publish through the API's draft, upload and commit calls instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from modelyard.registry.aliases import Aliases
from modelyard.registry.records import Lineage, LineageInput, VersionInfo, VersionSpec
from modelyard.registry.versions import Versions
from modelyard.types import ArtifactKind, FileEntry, ModelRef


def numeric_metrics(*sources: Mapping[str, Any]) -> dict[str, float]:
    """The numbers (not booleans) among ``sources``' values, later sources winning: a version's
    metrics out of artifact metadata."""
    return {
        key: value
        for source in sources
        for key, value in source.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def lineage(run: str, step: str, inputs: Iterable[Mapping[str, str]]) -> Lineage:
    """Where a version came from; ``inputs`` (``{"kind", "ref"}``) once each, first seen first."""
    unique = {(i["kind"], i["ref"]): i for i in inputs}
    return Lineage(
        run=run,
        step=step,
        inputs=[LineageInput(kind=i["kind"], ref=i["ref"]) for i in unique.values()],
    )


class Publisher:
    """Commits versions whose files are in the blob store already."""

    def __init__(self, versions: Versions, aliases: Aliases) -> None:
        self.versions = versions
        self.aliases = aliases

    def publish(
        self,
        kind: ArtifactKind,
        ref: ModelRef,
        files: list[FileEntry],
        spec: VersionSpec,
        *,
        alias: str | None = None,
        actor: str | None = None,
    ) -> VersionInfo:
        """Commit ``files`` as the next version of ``ref``'s model or dataset (created with its
        first version) and point ``alias`` at it; the committed version. Raises what the
        registry raises: IntegrityError for a file the store lacks, InvalidInput for bad
        files or names."""
        draft = self.versions.create_draft(kind, ref.namespace, ref.name, spec, actor=actor)
        version = self.versions.commit(kind, ref.namespace, ref.name, draft.id, files, actor=actor)
        if alias:
            self.aliases.set(kind, ref.namespace, ref.name, alias, version.number or 0, actor=actor)
        return version
