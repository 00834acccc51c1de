"""Replicas as Kubernetes pods: the `Orchestrator` that writes Deployments and watches Pods.

``scale`` renders a revision (`modelyard.kube.render`) and server-side applies it the first time
it is asked for (anchor ConfigMap, Secret, Deployment with the wanted replicas); after that it only
patches the scale subresource, and only when the count changes: at steady state the only API
traffic is one open Pod watch per Kubernetes namespace. ``replicas`` and ``failure`` answer from
what that watch last said (list, then watch from the list's resource version; list again when the
version expired), so they never block on the API server.

A call the API server refuses for good (a missing namespace, a permission RBAC does not grant, an
invalid object) fails the revision with Kubernetes' own reason; one it cannot answer now
(unreachable, 409, 429, 5xx) is tried again at the controller's next call. Pods that cannot start
(`modelyard.kube.pods.failure`) fail the revision too, and the controller then scales it to zero:
nothing is retried forever.

Unlike local processes, pods are the cluster's: ``stop`` leaves them serving whatever
``keep_replicas`` says (a control plane pod that is rescheduled must not take the serving down with
it), and the next control plane adopts the Deployments it finds (listed at ``start`` in every
namespace of the ``kubernetes.namespaces`` mapping, re-applied on first use elsewhere).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelyard.errors import NotFound
from modelyard.kube import logs, pods, render
from modelyard.kube.api import (
    CONFIGMAPS,
    DEPLOYMENTS,
    SECRETS,
    KubeApi,
    KubeApiError,
)
from modelyard.kube.config import KubernetesSettings, load_cluster
from modelyard.kube.watch import PodWatches
from modelyard.loops import Loop
from modelyard.serving.deployments import Revision
from modelyard.serving.logs import LogLine
from modelyard.serving.records import ReplicaInfo
from modelyard.serving.replica_command import replica_environment

if TYPE_CHECKING:
    from modelyard.settings import Settings

log = logging.getLogger(__name__)
TRANSIENT = frozenset({0, 409, 429})
"""API statuses worth trying again (with every 5xx); any other fails the revision."""


@dataclass
class _Applied:
    kube_namespace: str
    name: str
    deployment: str
    replicas: int | None


class KubeOrchestrator:
    def __init__(
        self, settings: KubernetesSettings, api: KubeApi, control_plane_url: str | None = None
    ) -> None:
        self.settings = settings
        self.api = api
        self.control_plane_url = control_plane_url
        """Replaces the MODELYARD_URL of ``env_for``, which is where the control plane's own
        processes reach it (often 127.0.0.1), not where pods do."""
        self.on_change: Callable[[], None] = lambda: None
        self.env_for: Callable[[Revision], dict[str, str]] = lambda revision: {}
        self._lock = threading.Lock()
        self._applied: dict[str, _Applied] = {}
        self._pods: dict[tuple[str, str], dict[str, Any]] = {}
        self._failures: dict[str, str] = {}
        self._watches = PodWatches(api, "kube-watch", render.SELECTOR, self._relisted, self._event)

    @classmethod
    def from_settings(cls, settings: Settings) -> KubeOrchestrator:
        kube = settings.kubernetes
        url = kube.control_plane_url or settings.url
        return cls(kube, KubeApi(load_cluster(kube), kube.field_manager), url)

    # the interface ------------------------------------------------------------------------------
    def warm(self) -> None:
        pass

    def scale(self, revision: Revision, replicas: int) -> None:
        kube_namespace = self.settings.namespace_for(revision.namespace)
        self._watches.watch(kube_namespace)
        with self._lock:
            applied = self._applied.get(revision.id)
            failed = revision.id in self._failures
        if (applied is not None and applied.replicas == replicas) or (
            applied is None and (replicas == 0 or failed)
        ):
            return
        try:
            if applied is None:
                self._create(revision, kube_namespace, replicas)
            else:
                self.api.scale(kube_namespace, applied.name, replicas)
                applied.replicas = replicas
        except KubeApiError as exc:
            if exc.status in TRANSIENT or exc.status >= 500:
                log.warning("revision %s: %s; trying again", revision.name, exc)
                return
            with self._lock:
                self._failures[revision.id] = str(exc)
            self.on_change()

    def stop_revision(self, revision_id: str) -> None:
        with self._lock:
            applied = self._applied.pop(revision_id, None)
            self._failures.pop(revision_id, None)
        if applied is None:
            return  # deleted already; its pods go away by themselves
        kube_namespace = applied.kube_namespace
        try:
            self.api.delete(DEPLOYMENTS, kube_namespace, applied.name)
            self.api.delete(SECRETS, kube_namespace, applied.name)
            with self._lock:
                others = any(
                    a.kube_namespace == kube_namespace and a.deployment == applied.deployment
                    for a in self._applied.values()
                )
            if not others:
                # its last revision: the anchor goes, and with it anything left behind
                self.api.delete(CONFIGMAPS, kube_namespace, render.anchor_name(applied.deployment))
        except KubeApiError as exc:
            log.warning("revision %s not deleted (%s): trying again", applied.name, exc)
            with self._lock:
                self._applied.setdefault(revision_id, applied)

    def replicas(self, revision_id: str) -> list[ReplicaInfo]:
        with self._lock:
            found = [p for p in self._pods.values() if pods.revision_id(p) == revision_id]
        return sorted((pods.replica(p) for p in found), key=lambda r: r.started_at)

    def failure(self, revision_id: str) -> str | None:
        with self._lock:
            if revision_id in self._failures:
                return self._failures[revision_id]
            found = [p for p in self._pods.values() if pods.revision_id(p) == revision_id]
        return next((reason for p in found if (reason := pods.failure(p))), None)

    def logs(
        self,
        revision_ids: Collection[str],
        *,
        replica: str | None = None,
        since: dt.datetime | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> Iterator[list[LogLine]]:
        """From the pods' logs (`modelyard.kube.logs`): the pods that exist now, and with
        ``follow`` those that appear meanwhile."""

        def found() -> list[tuple[str, str]]:
            with self._lock:
                keys = [k for k, p in self._pods.items() if pods.revision_id(p) in revision_ids]
            return sorted(k for k in keys if replica in (None, k[1]))

        if replica is not None and not found():
            raise NotFound(f"no replica {replica!r} among the revision's pods")
        return logs.read(self.api, found, since=since, tail=tail, follow=follow)

    def revisions(self) -> set[str]:
        with self._lock:
            running = {pods.revision_id(p) for p in self._pods.values()}
            return set(self._applied) | {r for r in running if r is not None}

    def start(self) -> None:
        self._watches.reopen()
        for kube_namespace in sorted(set(self.settings.namespaces.values())):
            self._adopt(kube_namespace)
            self._watches.watch(kube_namespace)

    def stop(self, *, keep_replicas: bool = False) -> None:
        self._watches.close()

    def loops(self) -> list[Loop]:
        """The pod watches, one per Kubernetes namespace."""
        return self._watches.loops()

    # writing ------------------------------------------------------------------------------------
    def _create(self, revision: Revision, kube_namespace: str, replicas: int) -> None:
        # Applied with every new revision, not cached: the owner's uid must be the live one, or
        # garbage collection would delete the new objects at once.
        owner = self.api.apply(render.anchor(revision, kube_namespace))
        base = self.env_for(revision)
        if self.control_plane_url:
            base = {**base, "MODELYARD_URL": self.control_plane_url}
        env = replica_environment(revision, base)
        self.api.apply(render.secret(revision, env, kube_namespace, owner))
        manifest = render.deployment(
            revision,
            env,
            kube_namespace,
            owner,
            image=self.settings.image,
            replicas=replicas,
            image_pull_policy=self.settings.image_pull_policy,
            service_account=self.settings.service_account,
        )
        self.api.apply(manifest)
        with self._lock:
            self._applied[revision.id] = _Applied(
                kube_namespace, render.object_name(revision), revision.deployment, replicas
            )
        log.info(
            "revision %s applied in %s (%d replicas)",
            render.object_name(revision),
            kube_namespace,
            replicas,
        )

    def _adopt(self, kube_namespace: str) -> None:
        """Learn the Deployments an earlier control plane applied, so that nothing is re-applied
        and deleted deployments' leftovers are found."""
        try:
            items, _ = self.api.list(DEPLOYMENTS, kube_namespace, render.SELECTOR)
        except KubeApiError as exc:
            log.warning("cannot list Deployments in %s (%s)", kube_namespace, exc)
            return
        with self._lock:
            for item in items:
                labels = item["metadata"].get("labels") or {}
                self._applied[labels[render.REVISION_ID_LABEL]] = _Applied(
                    kube_namespace,
                    item["metadata"]["name"],
                    labels.get(render.DEPLOYMENT_LABEL, ""),
                    (item.get("spec") or {}).get("replicas"),
                )

    def _relisted(self, kube_namespace: str, items: list[dict[str, Any]]) -> None:
        with self._lock:
            for key in [k for k in self._pods if k[0] == kube_namespace]:
                del self._pods[key]
            for pod in items:
                self._pods[(kube_namespace, pod["metadata"]["name"])] = pod
        self.on_change()

    def _event(self, kube_namespace: str, kind: str, pod: dict[str, Any]) -> None:
        key = (kube_namespace, pod["metadata"]["name"])
        with self._lock:
            if kind == "DELETED":
                self._pods.pop(key, None)
            else:
                self._pods[key] = pod
        if kind != "DELETED" and (reason := pods.pending_reason(pod)):
            log.info("pod %s waits for a node: %s", key[1], reason)
        self.on_change()
