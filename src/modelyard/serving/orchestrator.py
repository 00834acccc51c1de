"""Where replicas run: the interface the serving controller drives, whatever runs them.

The controller says how many replicas each revision should have (``scale``); the orchestrator
converges on that by itself (starting, health-checking, restarting with backoff, draining) and
reports what runs (``replicas``) and, when a revision cannot start at all, why (``failure``).
``modelyard.serving.local`` runs replicas as local processes; a Kubernetes implementation renders
the same calls to Deployments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from modelyard.serving.deployments import ReplicaInfo, Revision

STARTING, READY, TERMINATING = "starting", "ready", "terminating"


class Orchestrator(Protocol):
    on_change: Callable[[], None]
    """Called (from any thread) whenever a replica's state changed: routes must be rebuilt."""

    def scale(self, revision: Revision, replicas: int) -> None:
        """Converge ``revision`` on ``replicas`` replicas (0 drains and stops them all). Each
        replica gets ``revision.token`` in its environment as ``MODELYARD_REPLICA_TOKEN`` (on
        Kubernetes from a Secret), never on its command line: it answers no one else."""

    def stop_revision(self, revision_id: str) -> None:
        """Drain and stop the replicas of a revision that no longer exists."""

    def replicas(self, revision_id: str) -> list[ReplicaInfo]:
        """The revision's replicas now, in start order."""

    def failure(self, revision_id: str) -> str | None:
        """Why the revision cannot start (crash loop, load error with its traceback), or None."""

    def revisions(self) -> set[str]:
        """Every revision that has replicas (running or stopping)."""

    def start(self) -> None: ...

    def stop(self, *, keep_replicas: bool = False) -> None:
        """Stop supervising; drain and stop every replica unless ``keep_replicas``."""
