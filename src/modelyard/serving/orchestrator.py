"""Where replicas run: the interface the serving controller drives, whatever runs them.

The controller says how many replicas each revision should have (``scale``); the orchestrator
converges on that by itself (starting, health-checking, restarting with backoff, draining) and
reports what runs (``replicas``) and, when a revision cannot start at all, why (``failure``).
``modelyard.serving.local`` runs replicas as local processes, ``modelyard.kube`` renders the same
calls to Kubernetes Deployments. ``load_orchestrator`` picks one by the ``orchestrator`` setting:
a built-in name, an entry point of the ``modelyard.orchestrators`` group, or
``package.module:ClassName``; the class is built with ``from_settings(settings)``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Protocol

from modelyard.errors import ConfigError
from modelyard.plugins import Family
from modelyard.serving.deployments import Revision
from modelyard.serving.logs import LogLine
from modelyard.serving.records import ReplicaInfo

if TYPE_CHECKING:
    from modelyard.settings import Settings

ENTRY_POINT_GROUP = "modelyard.orchestrators"
_BUILTINS = {
    "kubernetes": "modelyard.kube.orchestrator:KubeOrchestrator",
    "local": "modelyard.serving.local:LocalOrchestrator",
}


class Orchestrator(Protocol):
    on_change: Callable[[], None]
    """Called (from any thread) whenever a replica's state changed: routes must be rebuilt."""
    env_for: Callable[[Revision], dict[str, str]]
    """A revision's replica environment from the control plane (how to reach the repository, a
    key); set before ``start``. Secret values in it (`replica_command.SECRET_ENV`) must reach a
    replica only through its environment, never a command line or a manifest."""

    def warm(self) -> None:
        """Prepare what the first replica would otherwise wait for (a launcher's imports, a
        connection to the cluster); may do nothing."""

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

    def logs(
        self,
        revision_ids: Collection[str],
        *,
        replica: str | None = None,
        since: dt.datetime | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> Iterator[list[LogLine]]:
        """What the replicas of these revisions (of ``replica`` only) wrote, as batches of
        stamped lines (`modelyard.serving.logs`), merged across replicas in time order.

        The first batch is what there is now: the lines written at or after ``since``, the last
        ``tail`` of them. With ``follow``, the iterator goes on with the lines written after it,
        a batch (in time order) at least every second, empty when nothing was written, so a
        consumer can notice that its reader left and close the iterator, which releases what
        following holds (files, streams); replicas that start meanwhile join. Without, it ends
        after the first batch. The replicas are those whose logs the orchestrator still has:
        every replica that ran locally, the pods that exist on Kubernetes. `NotFound` (at the
        latest when the first batch is asked for) if ``replica`` is none of them."""

    def start(self) -> None: ...

    def stop(self, *, keep_replicas: bool = False) -> None:
        """Stop supervising; drain and stop every replica unless ``keep_replicas``, or unless
        replicas belong to something that outlives the control plane (Kubernetes pods)."""


ORCHESTRATORS: Family[object] = Family(
    "orchestrator", ENTRY_POINT_GROUP, object, _BUILTINS, error=ConfigError
)


def load_orchestrator(name: str, settings: Settings) -> Orchestrator:
    """The orchestrator ``name`` names, built from ``settings`` (nothing starts yet)."""
    orchestrator: Orchestrator = ORCHESTRATORS.from_settings(
        name, settings, "modelyard.serving.orchestrator.Orchestrator"
    )
    return orchestrator


def orchestrator_names() -> list[str]:
    """Built-in orchestrator names, then those that installed packages add, sorted."""
    return ORCHESTRATORS.names()
