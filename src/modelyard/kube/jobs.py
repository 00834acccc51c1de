"""Pipeline steps as Kubernetes Jobs: the ``kubernetes`` step backend.

``launch`` server-side applies the attempt's Job and then its Secret (task spec, environment;
owned by the Job, see :mod:`modelyard.kube.steps`) in the Kubernetes namespace that
``kubernetes.namespaces`` maps the run's namespace to. A Pod watch per Kubernetes namespace (list,
then watch from the list's version; list again when it expired) follows the attempts' pods. Once
an attempt's pod is seen, a `modelyard.kube.logs.LogCopy` follows its log into the node's log
file (``HOME/runs/RUN/NODE.log``, where ``runs logs`` reads every backend's, ``-f`` included), so
its lines show while it runs. When the pod ends, the watch thread copies the rest of its log,
deletes the Job (its pod and Secret go with it), reads the result back (from the termination
message, or from the blob store when it was longer than the message keeps: the task's
``result_limit``), remembers how it ended and calls ``on_exit``, so ``check`` answers from memory
and never blocks.

A pod that cannot ever run (an image that cannot be pulled, a bad config, no node for
``pods.UNSCHEDULABLE_SECONDS``) ends its attempt with Kubernetes' reason as the step's error;
the executor's own retries then apply, nothing is retried by Kubernetes. ``terminate`` deletes
the Job (``force``: with no grace period); an attempt whose Job is gone, or whose pod went without
saying how it ended, ended by that signal. ``logs`` reads the node's log file, as the local
backend's does.

Like local steps, attempts do not outlive the executor: ``close`` deletes their Jobs, and the
first list of a namespace deletes the Jobs a control plane that died left running (the executor
runs those attempts again). Two control planes on one namespace would delete each other's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from modelyard.kube import steps
from modelyard.kube.api import JOBS, KubeApi, KubeApiError
from modelyard.kube.config import KubernetesSettings, load_cluster
from modelyard.kube.logs import LogCopy
from modelyard.kube.pods import UNSCHEDULABLE_SECONDS, unschedulable_since
from modelyard.kube.watch import PodWatches
from modelyard.pipelines.backends import StepExit, StepLaunch, node_log
from modelyard.pipelines.runner import load_result
from modelyard.pipelines.task import BlobLocation, StepTask
from modelyard.serving.logs import FOLLOW_SECONDS

if TYPE_CHECKING:
    from modelyard.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


def _once_more(call: Callable[[], T]) -> T:
    """``call()``, and once more after a dropped connection (a KubeApiError of status 0)."""
    try:
        return call()
    except KubeApiError as exc:
        if exc.status != 0:
            raise
    return call()


@dataclass
class _Attempt:
    run_id: str
    node: str
    kube_namespace: str
    job: str
    blobs: BlobLocation
    """Where the runner puts a result too long for the pod's termination message."""
    pod: str | None = None
    last: dict[str, Any] | None = field(default=None, repr=False)
    """The pod as the watch last saw it."""
    terminated: signal.Signals | None = None
    ended: StepExit | None = None
    timer: threading.Timer | None = field(default=None, repr=False)
    copy: LogCopy | None = field(default=None, repr=False)
    """Copies the pod's log into the node's log file while it runs."""


class KubeStepBackend:
    def __init__(
        self,
        settings: KubernetesSettings,
        api: KubeApi,
        home: Path,
        control_plane_url: str | None = None,
        grace_seconds: float = 30.0,
    ) -> None:
        self.settings = settings
        self.api = api
        self.home = home
        self.control_plane_url = control_plane_url
        """Replaces the MODELYARD_URL of a step's environment: where pods reach the API."""
        self.grace_seconds = grace_seconds
        """How long a step may take to stop before Kubernetes kills it (``step_grace_seconds``):
        a forced ``terminate`` finds the Job deleted already, and its pod goes by this."""
        self.on_exit: Callable[[], None] = lambda: None
        self._lock = threading.Lock()
        self._attempts: dict[tuple[str, str], _Attempt] = {}
        self._jobs: dict[tuple[str, str], _Attempt] = {}
        """(Kubernetes namespace, Job name) -> its attempt."""
        self._watches = PodWatches(
            api, "kube-steps", steps.SELECTOR, self._relisted, self._pod_changed
        )
        self._listed: set[str] = set()
        """The Kubernetes namespaces whose step pods were listed once."""
        self._copies: list[LogCopy] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> KubeStepBackend:
        kube = settings.kubernetes
        api = KubeApi(load_cluster(kube), kube.field_manager)
        url = kube.control_plane_url or settings.url
        return cls(kube, api, settings.home / "runs", url, settings.step_grace_seconds)

    def log_path(self, run_id: str, node: str) -> Path:
        return node_log(self.home, run_id, node)

    # the interface ------------------------------------------------------------------------------
    def launch(self, launch: StepLaunch) -> None:
        kube_namespace = self.settings.namespace_for(launch.namespace or "default")
        name = steps.job_name(launch)
        env = dict(launch.env)
        if self.control_plane_url and "MODELYARD_URL" in env:
            env["MODELYARD_URL"] = self.control_plane_url
        task: StepTask = {**launch.task, "result_limit": steps.MESSAGE_LIMIT}
        launch = dataclasses.replace(launch, env=env, task=task)
        self._watches.watch(kube_namespace)
        path = self.log_path(launch.run_id, launch.node)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as out:
            out.write(f"--- attempt {launch.attempt} of {launch.node} (Job {name})\n")
        attempt = _Attempt(launch.run_id, launch.node, kube_namespace, name, task["blobs"])
        with self._lock:
            self._attempts[(launch.run_id, launch.node)] = attempt
            self._jobs[(kube_namespace, name)] = attempt
        manifest = steps.job(
            launch,
            name,
            launch.namespace,
            kube_namespace,
            image=self.settings.image,
            image_pull_policy=self.settings.image_pull_policy,
            service_account=self.settings.service_account,
            grace_seconds=self.grace_seconds,
        )
        try:
            owner = self.api.apply(manifest)
            self.api.apply(steps.secret(launch, name, launch.namespace, kube_namespace, owner))
        except KubeApiError:
            with self._lock:
                self._attempts.pop((launch.run_id, launch.node), None)
                self._jobs.pop((kube_namespace, name), None)
            self._delete(attempt, grace=None)
            raise
        log.info(
            "step %s of run %s: Job %s in %s", launch.node, launch.run_id, name, kube_namespace
        )

    def check(self, run_id: str, node: str) -> StepExit | None:
        with self._lock:
            attempt = self._attempts.get((run_id, node))
            if attempt is None or attempt.ended is None:
                return None
            del self._attempts[(run_id, node)]
            self._jobs.pop((attempt.kube_namespace, attempt.job), None)
            return attempt.ended

    def terminate(self, run_id: str, node: str, *, force: bool = False) -> None:
        with self._lock:
            attempt = self._attempts.get((run_id, node))
            if attempt is None or attempt.ended is not None:
                return
            first = attempt.terminated is None
            attempt.terminated = signal.SIGKILL if force else signal.SIGTERM
            pod = attempt.pod
        if first and pod is not None:
            self._finish_log(attempt, None)  # deleting the Job deletes its log
        gone = not self._delete(attempt, grace=0 if force else None)
        with self._lock:
            # A Job deleted before its pod was made, or already gone: nothing will say more.
            quiet = attempt.pod is None or gone
        if quiet:
            self._end(attempt, StepExit(-attempt.terminated, {}))

    def logs(self, run_id: str, node: str) -> str:
        path = self.log_path(run_id, node)
        return path.read_text(errors="replace") if path.is_file() else ""

    def close(self) -> None:
        with self._lock:
            running = [a for a in self._attempts.values() if a.ended is None]
            self._attempts.clear()
            self._jobs.clear()
            copies, self._copies = self._copies, []
        for attempt in running:
            if attempt.timer is not None:
                attempt.timer.cancel()
            self._delete(attempt, grace=0)
        for copy in copies:
            copy.stop()
        for copy in copies:
            copy.stop(wait=2 * FOLLOW_SECONDS)
        self._watches.close()  # closes the API, which ends the open watches

    # ending an attempt --------------------------------------------------------------------------
    def _delete(self, attempt: _Attempt, grace: int | None) -> bool:
        """Delete the attempt's Job, its pod with it; False when it was gone already."""
        try:
            return _once_more(
                lambda: self.api.delete(
                    JOBS, attempt.kube_namespace, attempt.job, grace_seconds=grace
                )
            )
        except KubeApiError as exc:
            log.warning("Job %s not deleted (%s)", attempt.job, exc)
            return True

    def _end(self, attempt: _Attempt, ended: StepExit) -> None:
        with self._lock:
            if attempt.ended is not None:
                return
            attempt.ended = ended
            if attempt.timer is not None:
                attempt.timer.cancel()
            copy = attempt.copy
        if copy is not None:
            copy.stop()
        self.on_exit()

    def _pod_changed(self, kube_namespace: str, kind: str, pod: dict[str, Any]) -> None:
        labels = pod["metadata"].get("labels") or {}
        with self._lock:
            attempt = self._jobs.get((kube_namespace, labels.get(steps.JOB_NAME_LABEL, "")))
            if attempt is None or attempt.ended is not None:
                return
            attempt.pod, attempt.last = pod["metadata"]["name"], pod
            terminated = attempt.terminated
            if attempt.copy is None:
                attempt.copy = LogCopy(
                    self.api,
                    kube_namespace,
                    attempt.pod,
                    steps.CONTAINER,
                    self.log_path(attempt.run_id, attempt.node),
                ).start()
                self._copies = [c for c in self._copies if c.running()] + [attempt.copy]
        outcome = steps.ended(pod)
        if outcome is None and kind == "DELETED":
            # gone without a word: deleted by us (terminate) or by someone else
            self._end(attempt, StepExit(-(terminated or signal.SIGKILL), {}))
            return
        if outcome is None:
            self._wait_for_a_node(attempt, pod)
            return
        code, result = outcome
        if terminated is None:  # else its log was kept when it was told to stop
            ran = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
            self._finish_log(attempt, None if ran else result.get("error"))
            self._delete(attempt, grace=None)
        result = load_result(result, attempt.blobs)
        self._end(attempt, StepExit(code if terminated is None else -terminated, result))

    def _finish_log(self, attempt: _Attempt, reason: str | None) -> None:
        """Append the rest of what the pod printed (and why it could not run) to the node's log
        file, before the pod and its log go."""
        if attempt.copy is not None:
            attempt.copy.finish(reason)
        elif reason:
            with open(self.log_path(attempt.run_id, attempt.node), "a") as out:
                out.write(f"{reason}\n")

    def _wait_for_a_node(self, attempt: _Attempt, pod: dict[str, Any]) -> None:
        """An unschedulable pod fails its attempt after a while, even if no event says so."""
        since = unschedulable_since(pod)
        if since is None or attempt.timer is not None:
            return
        waited = (dt.datetime.now(dt.UTC) - since).total_seconds()
        timer = threading.Timer(
            max(0.0, UNSCHEDULABLE_SECONDS - waited) + 1.0,
            functools.partial(self._recheck, attempt),
        )
        timer.daemon = True
        attempt.timer = timer
        timer.start()

    def _recheck(self, attempt: _Attempt) -> None:
        with self._lock:
            attempt.timer, pod = None, attempt.last
        if pod is not None:
            self._pod_changed(attempt.kube_namespace, "MODIFIED", pod)

    def _relisted(self, kube_namespace: str, items: list[dict[str, Any]]) -> None:
        """Follow the listed pods; an attempt whose pod went while nobody watched ended. At the
        first list, Jobs of a control plane that died (pods of no attempt of ours) are deleted:
        the executor runs those attempts again."""
        first = kube_namespace not in self._listed
        self._listed.add(kube_namespace)
        listed = {pod["metadata"]["name"] for pod in items}
        for pod in items:
            job = (pod["metadata"].get("labels") or {}).get(steps.JOB_NAME_LABEL, "")
            with self._lock:
                ours = (kube_namespace, job) in self._jobs
            if ours:
                self._pod_changed(kube_namespace, "ADDED", pod)
            elif first and job:
                log.info("deleting Job %s of an earlier control plane", job)
                orphan = _Attempt("", "", kube_namespace, job, {"url": "", "options": {}})
                self._delete(orphan, grace=0)
        with self._lock:
            vanished = [
                a
                for (namespace, _), a in self._jobs.items()
                if namespace == kube_namespace
                and a.ended is None
                and a.last is not None
                and a.pod not in listed
            ]
        for attempt in vanished:
            assert attempt.last is not None
            self._pod_changed(kube_namespace, "DELETED", attempt.last)
