"""The executor: drives every run, in dependency order, N steps at a time.

One controller thread owns all scheduling. It sleeps on a condition until something happens
(a run is queued or cancelled, a step ends) or until the next deadline (a timeout, the end of a
retry's backoff, the grace period of a kill): no polling. What may run is decided by the run's
graph (:mod:`~modelyard.pipelines.graph`), every state change is written by the ledger
(:mod:`~modelyard.pipelines.ledger`) before it is acted on, steps run on the step backend the
settings name (:mod:`~modelyard.pipelines.backends`) and outputs are published through
:mod:`modelyard.registry.publish`. A control plane that stops and starts again resumes its runs:
finished steps are kept, steps that were running start again as a new attempt, and the run's
history says so.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.errors import InvalidInput, ModelyardError
from modelyard.events.log import EventLog
from modelyard.loops import FOREVER, Loop
from modelyard.pipelines import outputs as artifacts
from modelyard.pipelines.backends import StepBackend, StepExit, StepLaunch, node_log
from modelyard.pipelines.cache import cache_key
from modelyard.pipelines.graph import Node
from modelyard.pipelines.ledger import ActiveRun, RunLedger
from modelyard.pipelines.spec import Publish, Retry
from modelyard.pipelines.states import STEP_DONE, RunState, StepState
from modelyard.pipelines.task import StepTask
from modelyard.registry.aliases import Aliases
from modelyard.registry.publish import Publisher, lineage, numeric_metrics
from modelyard.registry.records import VersionSpec
from modelyard.registry.versions import Versions
from modelyard.store.blobs import BlobStore
from modelyard.types import ModelRef

log = logging.getLogger(__name__)


@dataclass
class Attempt:
    """A launched attempt and the deadlines the executor holds it to."""

    node: Node
    deadline: float | None
    timeout: float = 0.0
    kill_at: float | None = None
    why_killed: str | None = None


class Executor:
    def __init__(
        self,
        events: EventLog,
        blobs: BlobStore,
        versions: Versions,
        aliases: Aliases,
        home: Path,
        parallelism: int = 4,
        grace_seconds: float = 5.0,
        *,
        backend: StepBackend | None = None,
        blob_options: dict[str, Any] | None = None,
    ) -> None:
        self.events = events
        self.blobs = blobs
        self.blob_options = dict(blob_options or {})
        self.versions = versions
        self.ledger = RunLedger(events)
        self.publisher = Publisher(versions, aliases)
        self.home = home / "runs"
        if backend is None:
            from modelyard.pipelines.backends.local import LocalStepBackend

            backend = LocalStepBackend(self.home)
        self.backend = backend
        self.backend.on_exit = self._step_ended
        self.parallelism = max(1, parallelism)
        self.grace_seconds = grace_seconds
        self._cond = threading.Condition()
        self._runs: dict[str, ActiveRun] = {}
        self._procs: dict[tuple[str, str], Attempt] = {}
        self._cancel: set[str] = set()
        self._retry: set[str] = set()
        self._ended = False
        self._exited = False
        self.loop = Loop(
            "pipelines.executor",
            self._round,
            condition=self._cond,
            ready=self._pending,
            started=self._resume,
            finished=self._shutdown,
            error_wait=1.0,
        )
        # What a step of modelyard's own (``module:function``, e.g. sql_import) needs beyond its
        # task: the API and a key for the run's namespace. Set by the control plane; user steps
        # never get it (their log is readable by every viewer of the namespace).
        self.env_for: Callable[[str], dict[str, str]] | None = None

    # control from other threads -------------------------------------------------------------------
    def start(self) -> None:
        self.loop.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop scheduling and kill running steps: they resume as new attempts at next start."""
        self.loop.stop(timeout)

    def wake(self) -> None:
        self.loop.wake()

    def cancel(self, run_id: str) -> None:
        with self._cond:
            self._cancel.add(run_id)
            self._cond.notify_all()

    def retry(self, run_id: str) -> None:
        with self._cond:
            self._retry.add(run_id)
            self._cond.notify_all()

    def log_path(self, run_id: str, node: str) -> Path:
        """Where the local step backend writes a node's log."""
        return node_log(self.home, run_id, node)

    def _step_ended(self) -> None:
        """The backend's ``on_exit``: called from its thread when an attempt ended."""
        with self._cond:
            self._exited = True
            self._cond.notify_all()

    # the controller loop --------------------------------------------------------------------------
    # (a `Loop` on ``_cond``: resume, then rounds until stop, then shut the backend down)
    def _resume(self) -> None:
        for run in self.ledger.resume():
            self._runs[run.id] = run

    def _round(self) -> float:
        """One pass; returns the time to the next step deadline or retry (after a failure the
        loop tries again in a second)."""
        with self._cond:
            cancels, self._cancel = self._cancel, set()
            retries, self._retry = self._retry, set()
        self._tick(cancels, retries)
        with self._cond:
            deadline = self._next_deadline()
        return FOREVER if deadline is None else deadline

    def _pending(self) -> bool:
        """Called by the loop with ``_cond`` held: an attempt ended, a run finished, or a cancel
        or retry came in since the round began, so the loop does not sleep."""
        exited, self._exited = self._exited, False
        ended, self._ended = self._ended, False
        return exited or ended or bool(self._cancel) or bool(self._retry)

    def _shutdown(self) -> None:
        self.backend.close()
        self._procs.clear()

    def _next_deadline(self) -> float | None:
        now = time.monotonic()
        times = [t for a in self._procs.values() for t in (a.deadline, a.kill_at) if t]
        times += [
            n.ready_at
            for r in self._runs.values()
            for n in r.graph.nodes.values()
            if n.state == StepState.RETRYING
        ]
        return max(0.0, min(times) - now) if times else None

    def _tick(self, cancels: set[str], retries: set[str]) -> None:
        for run_id in retries:
            reopened = self.ledger.reopen(run_id)
            if reopened is not None:
                self._runs[run_id] = reopened
        for run in self.ledger.claim_queued():
            self._runs[run.id] = run
        for run_id in cancels:
            self._begin_cancel(run_id)
        for key, attempt in list(self._procs.items()):
            ended = self.backend.check(*key)
            if ended is not None:
                del self._procs[key]
                self._finished(self._runs[key[0]], attempt, ended)
            else:
                self._enforce_deadlines(key, attempt)
        for run in list(self._runs.values()):
            self._advance(run)

    # scheduling ---------------------------------------------------------------------------------
    def _advance(self, run: ActiveRun) -> None:
        if run.cancelling:
            self._finish_cancel(run)
            return
        for node in run.graph.candidates(time.monotonic()):
            verdict = run.graph.readiness(node)
            if verdict == "wait":
                continue
            if verdict != "ready":
                self.ledger.settle(run, node, verdict[0], verdict[1])
                continue
            if len(self._procs) >= self.parallelism:
                return
            self._launch(run, node)
        if run.graph.settled() and not any(key[0] == run.id for key in self._procs):
            self._complete(run)

    # one attempt of one node ----------------------------------------------------------------------
    def _launch(self, run: ActiveRun, node: Node) -> None:
        step = run.graph.step(node)
        node.attempt += 1
        try:
            params = run.graph.params_for(node)
            inputs, imports = self._inputs(run, node)
        except ModelyardError as exc:
            self.ledger.started(run, node, None)
            self._fail(run, node, f"inputs could not be prepared: {exc.message}")
            return
        env = {**step.env, **node.task.env}
        key = cache_key(step, run.spec.module_source, params, inputs, env)
        use_cache = node.task.cache if node.task.cache is not None else step.cache
        if use_cache and self.ledger.reuse_cached(
            run, node, key, step.cache_ttl_seconds, self._blobs_kept
        ):
            return
        self.ledger.started(run, node, key)
        if ":" in step.function and self.env_for is not None:
            env = {**self.env_for(run.namespace), **env}
        node.outputs = {"imports": imports}
        task: StepTask = {
            "module": run.spec.module,
            "module_source": run.spec.module_source,
            "code_root": run.spec.code_root,
            "function": step.function,
            "params": params,
            "inputs": inputs,
            "outputs": {
                o.name: {"type": o.type, "uri": f"modelyard://runs/{run.id}/{node.id}/{o.name}"}
                for o in step.outputs
            },
            "blobs": {"url": self.blobs.url, "options": self.blob_options},
        }
        launch = StepLaunch(
            run.id,
            node.id,
            node.attempt,
            task,
            env,
            step.resources.memory_mb,
            step.resources.cpu,
            run.namespace,
            step.image,
        )
        try:
            self.backend.launch(launch)
        except (OSError, ModelyardError) as exc:
            self._fail(run, node, f"could not start: {exc}")
            return
        timeout = node.task.timeout_seconds or step.timeout_seconds
        deadline = time.monotonic() + timeout if timeout else None
        self._procs[(run.id, node.id)] = Attempt(node, deadline, timeout or 0.0)

    def _inputs(self, run: ActiveRun, node: Node) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """The blob-store records of the node's inputs, and the registry versions among them."""
        records: dict[str, Any] = {}
        imports: list[dict[str, str]] = []
        for name, source in node.task.inputs.items():
            if source.registry_kind is None:
                records[name] = run.graph.upstream_artifacts(node, source)
                continue
            assert source.registry_ref is not None
            ref = ModelRef.parse(
                str(run.graph.value(source.registry_ref, node.iteration)),
                default_namespace=run.namespace,
            )
            if ref.namespace != run.namespace:
                raise ModelyardError(f"{ref} is in another namespace than the run")
            version = self.versions.get(source.registry_kind, ref.namespace, ref.name, ref.ref)
            records[name] = artifacts.registry_record(version)
            imports.append({"kind": source.registry_kind, "ref": version.ref})
        return records, imports

    def _blobs_kept(self, outputs: dict[str, Any]) -> bool:
        """Whether every blob of cached outputs is still stored (not collected since)."""
        return all(
            self.blobs.has(a["digest"] if a["kind"] == "file" else f["sha256"])
            for a in outputs.get("artifacts", {}).values()
            for f in (a["files"] if a["kind"] == "dir" else [a])
        )

    def _enforce_deadlines(self, key: tuple[str, str], attempt: Attempt) -> None:
        now = time.monotonic()
        if attempt.kill_at is not None and now >= attempt.kill_at:
            self.backend.terminate(*key, force=True)
            attempt.kill_at = None
        elif attempt.deadline is not None and now >= attempt.deadline:
            self._terminate(key, attempt, f"timed out after {attempt.timeout:g} s")

    def _terminate(self, key: tuple[str, str], attempt: Attempt, why: str) -> None:
        attempt.why_killed, attempt.deadline = why, None
        self.backend.terminate(*key)
        attempt.kill_at = time.monotonic() + self.grace_seconds

    def _finished(self, run: ActiveRun, attempt: Attempt, ended: StepExit) -> None:
        node, code, result = attempt.node, ended.code, ended.result
        if code == 0 and "error" not in result:
            try:
                self._succeed(run, node, result)
            except ModelyardError as exc:
                self._fail(run, node, exc.message, code)
            return
        if attempt.why_killed:
            reason = attempt.why_killed
        elif code < 0:
            name = signal.Signals(-code).name
            reason = f"killed by {name}" + (
                " (out of memory, or killed from outside)" if name == "SIGKILL" else ""
            )
        else:
            reason = result.get("error") or f"exited with code {code}"
        if run.cancelling:
            self.ledger.settle(run, node, StepState.CANCELLED, "cancelled while running", code)
        else:
            self._fail(run, node, reason, code)

    def _succeed(self, run: ActiveRun, node: Node, result: dict[str, Any]) -> None:
        step = run.graph.step(node)
        stored = result.get("artifacts") or {}
        for output in step.outputs:
            if output.name not in stored:
                raise InvalidInput(f"the step's runner stored no output {output.name!r}")
        node.outputs = {
            **node.outputs,
            "artifacts": {o.name: stored[o.name] for o in step.outputs},
            "result": result.get("result"),
        }
        published = [self._publish(run, node, p) for p in node.task.publish]
        node.outputs["published"] = published
        self.ledger.succeeded(run, node, published)

    def _publish(self, run: ActiveRun, node: Node, publish: Publish) -> str:
        """Commit one Model output as a version, with its metrics and lineage; its ref."""
        record = node.outputs["artifacts"][publish.output]
        imports = list(node.outputs.get("imports", []))
        for up in run.graph.ancestors(node):
            imports.extend(up.outputs.get("imports", []))
        # The version's metrics: the model's own metadata and the step's Metrics outputs.
        metrics = numeric_metrics(
            record.get("metadata", {}),
            *(
                node.outputs["artifacts"][o.name].get("metadata", {})
                for o in run.graph.step(node).outputs
                if o.type == "Metrics"
            ),
        )
        spec = VersionSpec(
            description=f"published by run {run.id}, step {node.id}",
            runtime=publish.runtime,
            metrics=metrics,
            tags={"pipeline": run.spec.name},
            lineage=lineage(run.id, node.id, imports),
        )
        version = self.publisher.publish(
            "model",
            ModelRef.parse(publish.model),
            artifacts.version_files(record, publish.output),
            spec,
            alias=publish.alias,
            actor=f"run:{run.id}"[:32],
        )
        return version.ref

    def _fail(self, run: ActiveRun, node: Node, reason: str, code: int | None = None) -> None:
        retry: Retry = node.task.retry or run.graph.step(node).retry
        if node.attempt <= retry.count and not run.cancelling:
            delay = retry.delay(node.attempt)
            self.ledger.settle(
                run,
                node,
                StepState.RETRYING,
                f"attempt {node.attempt} failed: {reason}; retrying in {delay:g} s",
                code,
            )
            node.ready_at = time.monotonic() + delay
            return
        self.ledger.settle(run, node, StepState.FAILED, reason, code)

    def _complete(self, run: ActiveRun) -> None:
        failed = [n for n in run.graph.nodes.values() if n.state == StepState.FAILED]
        state = RunState.FAILED if failed else RunState.SUCCEEDED
        reason = f"step {failed[0].id} failed" if failed else None
        self._end(run, state, reason)
        log.info("run %s %s (%d steps)", run.id, state, len(run.graph.nodes))

    def _end(self, run: ActiveRun, state: RunState, reason: str | None) -> None:
        self.ledger.end(run, state, reason)
        self._runs.pop(run.id, None)
        self._ended = True  # queued runs waiting for a schedule slot may start now

    # cancellation -------------------------------------------------------------------------------
    def _begin_cancel(self, run_id: str) -> None:
        run = self._runs.get(run_id)
        if run is None:
            self.ledger.cancel_queued(run_id)
            return
        self.ledger.cancelling(run, self.grace_seconds)
        for key, attempt in self._procs.items():
            if key[0] == run_id and attempt.why_killed is None:
                self._terminate(key, attempt, "cancelled")

    def _finish_cancel(self, run: ActiveRun) -> None:
        if any(rid == run.id for rid, _ in self._procs):
            return
        for node in run.graph.nodes.values():
            if node.state not in STEP_DONE:
                self.ledger.settle(run, node, StepState.CANCELLED, "the run was cancelled")
        self._end(run, RunState.CANCELLED, "cancelled by request")
