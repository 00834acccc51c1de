"""Pod watches, one per Kubernetes namespace, for the orchestrator and the step backend alike.

Each is a :class:`~modelyard.loops.Loop` that lists the pods a label selector picks, hands the
list to ``relisted``, then follows their changes (``changed(namespace, kind, pod)``; bookmarks
only move the resource version) until stopped. An expired watch (410) lists again at once; any
other failure is logged by the loop and retried after ``RETRY_SECONDS``.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from modelyard.kube.api import PODS, Expired, KubeApi
from modelyard.loops import Loop

log = logging.getLogger(__name__)
WATCH_SECONDS = 300
RETRY_SECONDS = 2.0


class PodWatches:
    def __init__(
        self,
        api: KubeApi,
        name: str,
        selector: str,
        relisted: Callable[[str, list[dict[str, Any]]], None],
        changed: Callable[[str, str, dict[str, Any]], None],
    ) -> None:
        self.api = api
        self.name = name
        self.selector = selector
        self.relisted = relisted
        self.changed = changed
        self._lock = threading.Lock()
        self._loops: dict[str, Loop] = {}
        self._stop = threading.Event()

    def watch(self, kube_namespace: str) -> None:
        """Start watching ``kube_namespace`` unless it is watched already (or stopping)."""
        with self._lock:
            if kube_namespace in self._loops or self._stop.is_set():
                return
            loop = Loop(
                f"{self.name}-{kube_namespace}",
                functools.partial(self._round, kube_namespace),
                interval=0.0,
                error_wait=RETRY_SECONDS,
                join_timeout=5.0,
            )
            self._loops[kube_namespace] = loop
        loop.start()

    def loops(self) -> list[Loop]:
        with self._lock:
            return list(self._loops.values())

    def reopen(self) -> None:
        """Allow watches again after :meth:`close` (a restarted orchestrator)."""
        self._stop.clear()

    def close(self) -> None:
        """End every watch (the API ends the open watch requests at once), then close the API
        once the watch threads are done: closed under a request one of them has under way, the
        client would leave that request's connection open."""
        self._stop.set()
        with self._lock:
            loops = list(self._loops.values())
            self._loops.clear()
        for loop in loops:
            loop.request_stop()
        self.api.end_streams()
        for loop in loops:
            loop.join(5)
        self.api.close()

    def _round(self, kube_namespace: str) -> None:
        try:
            items, version = self.api.list(PODS, kube_namespace, self.selector)
            self.relisted(kube_namespace, items)
            while not self._stop.is_set():
                for kind, pod in self.api.watch(
                    PODS, kube_namespace, self.selector, version, WATCH_SECONDS
                ):
                    version = pod["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self.changed(kube_namespace, kind, pod)
        except Expired:
            log.info("%s: the watch in %s expired: listing again", self.name, kube_namespace)
