"""The local executor: every step in its own process, in dependency order, N at a time.

One controller thread owns all scheduling. It sleeps on a condition until something happens
(a run is queued or cancelled, a step process exits) or until the next deadline (a timeout, the
end of a retry's backoff, the grace period of a kill): no polling. Every state change is written
to the database first, so a control plane that stops and starts again resumes its runs: finished
steps are kept, steps that were running are started again as a new attempt, and the run's
history says so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from modelyard.errors import ModelyardError
from modelyard.events.log import EventLog
from modelyard.launcher import Handle, Launcher
from modelyard.pipelines import outputs as artifacts
from modelyard.pipelines.cache import cache_key
from modelyard.pipelines.spec import PipelineSpec, Retry, TaskSpec, Value
from modelyard.pipelines.validate import validate
from modelyard.registry.aliases import Aliases
from modelyard.registry.versions import Lineage, LineageInput, Versions, VersionSpec
from modelyard.store.blobs import BlobStore
from modelyard.store.schema import (
    CacheEntryRow,
    NamespaceRow,
    PipelineVersionRow,
    RunHistoryRow,
    RunRow,
    ScheduleRow,
    StepRunRow,
)
from modelyard.types import ModelRef

log = logging.getLogger(__name__)
DONE = {"succeeded", "cached", "skipped", "failed", "upstream_failed", "cancelled"}
OK = {"succeeded", "cached"}
_OPS = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@dataclass
class Node:
    """One schedulable unit: a task, or one iteration of a task inside a fan-out."""

    id: str
    task: TaskSpec
    iteration: int | None
    state: str = "pending"
    attempt: int = 0
    step_run_id: int | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    ready_at: float = 0.0  # monotonic time a retry may start


@dataclass
class Process:
    popen: Handle
    node: Node
    workdir: Path
    deadline: float | None
    timeout: float = 0.0
    kill_at: float | None = None
    why_killed: str | None = None
    returncode: int | None = None


@dataclass
class ActiveRun:
    id: str
    namespace: str
    spec: PipelineSpec
    params: dict[str, Any]
    order: list[str]
    nodes: dict[str, Node] = field(default_factory=dict)
    cancelling: bool = False


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
    ) -> None:
        self.events = events
        self.db = events.db
        self.blobs = blobs
        self.versions = versions
        self.aliases = aliases
        self.home = home / "runs"
        self.parallelism = max(1, parallelism)
        self.grace_seconds = grace_seconds
        self._cond = threading.Condition()
        self._runs: dict[str, ActiveRun] = {}
        self._procs: dict[tuple[str, str], Process] = {}
        self._cancel: set[str] = set()
        self._retry: set[str] = set()
        self._stop = False
        self._ended = False
        self._launcher = Launcher(["modelyard.pipelines.dsl", "modelyard.pipelines.runner"])
        self._thread: threading.Thread | None = None
        # What a step of modelyard's own (``module:function``, e.g. sql_import) needs beyond its
        # task: the API and a key for the run's namespace. Set by the control plane; user steps
        # never get it (their log is readable by every viewer of the namespace).
        self.env_for: Callable[[str], dict[str, str]] | None = None

    # control from other threads -------------------------------------------------------------------
    def start(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="pipelines.executor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop scheduling and kill running steps: they resume as new attempts at next start."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def cancel(self, run_id: str) -> None:
        with self._cond:
            self._cancel.add(run_id)
            self._cond.notify_all()

    def retry(self, run_id: str) -> None:
        with self._cond:
            self._retry.add(run_id)
            self._cond.notify_all()

    def log_path(self, run_id: str, node: str) -> Path:
        return self.home / run_id / f"{node}.log"

    # the controller loop --------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._resume()
        except Exception:
            log.exception("resuming runs failed")
        while True:
            with self._cond:
                if self._stop:
                    break
                cancels, self._cancel = self._cancel, set()
                retries, self._retry = self._retry, set()
            try:
                self._tick(cancels, retries)
            except Exception:
                log.exception("executor step failed; it goes on")
            with self._cond:
                if self._stop:
                    break
                exited = any(p.returncode is not None for p in self._procs.values())
                ended, self._ended = self._ended, False
                if not exited and not ended and not self._cancel and not self._retry:
                    self._cond.wait(self._next_deadline())
        self._shutdown()

    def _next_deadline(self) -> float | None:
        now = time.monotonic()
        times = [t for p in self._procs.values() for t in (p.deadline, p.kill_at) if t]
        times += [
            n.ready_at
            for r in self._runs.values()
            for n in r.nodes.values()
            if n.state == "retrying"
        ]
        return max(0.0, min(times) - now) if times else None

    def _tick(self, cancels: set[str], retries: set[str]) -> None:
        for run_id in retries:
            self._restart_failed(run_id)
        self._load_queued()
        for run_id in cancels:
            self._begin_cancel(run_id)
        for key, proc in list(self._procs.items()):
            if proc.returncode is not None:
                del self._procs[key]
                self._finished(self._runs[key[0]], proc)
            else:
                self._enforce_deadlines(proc)
        for run in list(self._runs.values()):
            self._advance(run)

    # loading and resuming -------------------------------------------------------------------------
    def _load(self, session: Session, row: RunRow) -> ActiveRun:
        version = session.get(PipelineVersionRow, row.pipeline_version_id)
        namespace = session.get(NamespaceRow, row.namespace_id)
        assert version is not None and namespace is not None
        spec = PipelineSpec.model_validate(version.spec)
        return ActiveRun(row.id, namespace.name, spec, dict(row.params), validate(spec))

    def _load_queued(self) -> None:
        with self.db.write() as session:
            rows = session.scalars(
                sa.select(RunRow).where(RunRow.state == "queued").order_by(RunRow.created_at)
            ).all()
            for row in rows:
                if row.schedule_id is not None and self._schedule_full(session, row):
                    continue  # overlap="wait": starts when one of the schedule's runs ends
                run = self._load(session, row)
                row.state, row.started_at = "running", self.events.clock()
                self._history(session, run.id, None, "started")
                self._event(session, run, "run.started")
                self._runs[run.id] = run

    def _schedule_full(self, session: Session, row: RunRow) -> bool:
        schedule = session.get(ScheduleRow, row.schedule_id)
        if schedule is None:
            return False
        active = (
            session.scalar(
                sa.select(sa.func.count())
                .select_from(RunRow)
                .where(
                    RunRow.schedule_id == row.schedule_id,
                    RunRow.state.in_(("running", "cancelling")),
                )
            )
            or 0
        )
        return active >= schedule.max_concurrency

    def _resume(self) -> None:
        """Pick up runs a previous control plane left running."""
        with self.db.write() as session:
            rows = session.scalars(
                sa.select(RunRow).where(RunRow.state.in_(("running", "cancelling")))
            ).all()
            for row in rows:
                run = self._load(session, row)
                steps = session.scalars(
                    sa.select(StepRunRow)
                    .where(StepRunRow.run_id == row.id)
                    .order_by(StepRunRow.attempt)
                ).all()
                for step in steps:
                    node = Node(
                        step.node,
                        run.spec.task(step.task_id),
                        _iteration(step.node),
                        step.state,
                        step.attempt,
                        step.id,
                        dict(step.outputs),
                    )
                    run.nodes[node.id] = node
                    if step.state == "running":
                        step.state, step.finished_at = "interrupted", self.events.clock()
                        step.reason = "the control plane stopped while it ran"
                        node.state = "pending"  # a new attempt, not counted against retries
                        self._history(
                            session,
                            run.id,
                            node.id,
                            f"attempt {step.attempt} interrupted by a control-plane "
                            "stop; it runs again",
                        )
                    elif step.state == "retrying":
                        node.ready_at = 0.0
                self._history(session, run.id, None, "resumed after a control-plane restart")
                run.cancelling = row.state == "cancelling"
                self._runs[run.id] = run

    def _restart_failed(self, run_id: str) -> None:
        with self.db.write() as session:
            row = session.get(RunRow, run_id)
            if row is None or row.state not in ("failed", "cancelled"):
                return
            run = self._load(session, row)
            for step in session.scalars(
                sa.select(StepRunRow)
                .where(StepRunRow.run_id == run_id)
                .order_by(StepRunRow.attempt)
            ):
                run.nodes[step.node] = Node(
                    step.node,
                    run.spec.task(step.task_id),
                    _iteration(step.node),
                    step.state,
                    step.attempt,
                    step.id,
                    dict(step.outputs),
                )
            for node in run.nodes.values():
                if node.state not in OK and node.state != "skipped":
                    node.state = "pending"
            row.state, row.finished_at, row.reason = "running", None, None
            self._history(session, run_id, None, "retried: failed and cancelled steps run again")
            self._event(session, run, "run.retried")
            self._runs[run_id] = run

    # scheduling ---------------------------------------------------------------------------------
    def _advance(self, run: ActiveRun) -> None:
        if run.cancelling:
            self._finish_cancel(run)
            return
        for task_id in run.order:
            task = run.spec.task(task_id)
            for node in self._expand(run, task):
                if node.state not in ("pending", "retrying"):
                    continue
                if node.state == "retrying" and node.ready_at > time.monotonic():
                    continue
                verdict = self._readiness(run, node)
                if verdict == "wait":
                    continue
                if verdict != "ready":
                    self._settle(run, node, verdict[0], verdict[1])
                    continue
                if len(self._procs) >= self.parallelism:
                    return
                self._launch(run, node)
        nodes = [self._expand(run, run.spec.task(t)) for t in run.order]
        if (
            all(n.state in DONE for group in nodes for n in group)
            and not any(key[0] == run.id for key in self._procs)
            and self._expanded(run)
        ):
            self._complete(run)

    def _expanded(self, run: ActiveRun) -> bool:
        return all(
            self._items(run, run.spec.task(t)) is not None
            for t in run.order
            if run.spec.task(t).loop is not None and not self._blocked(run, t)
        )

    def _blocked(self, run: ActiveRun, task_id: str) -> bool:
        """A fan-out whose items come from a task that will never succeed never expands."""
        task = run.spec.task(task_id)
        source = task.loop.items.task if task.loop else None
        node = run.nodes.get(source) if source else None
        return node is not None and node.state in DONE - OK

    def _items(self, run: ActiveRun, task: TaskSpec) -> list[Any] | None:
        assert task.loop is not None
        value = self._value(run, task.loop.items, None)
        return value if isinstance(value, list) else None

    def _expand(self, run: ActiveRun, task: TaskSpec) -> list[Node]:
        if task.loop is None:
            return [run.nodes.setdefault(task.id, Node(task.id, task, None))]
        items = self._items(run, task) if not self._blocked(run, task.id) else []
        if items is None:
            return []
        return [
            run.nodes.setdefault(f"{task.id}[{i}]", Node(f"{task.id}[{i}]", task, i))
            for i in range(len(items))
        ]

    def _upstream_nodes(self, run: ActiveRun, node: Node) -> list[Node] | None:
        found: list[Node] = []
        for up_id in run.spec.upstream(node.task):
            up = run.spec.task(up_id)
            if (
                up.loop is not None
                and node.task.loop is not None
                and up.loop.id == node.task.loop.id
            ):
                found.append(
                    run.nodes.setdefault(
                        f"{up.id}[{node.iteration}]",
                        Node(f"{up.id}[{node.iteration}]", up, node.iteration),
                    )
                )
            else:
                group = self._expand(run, up)
                if (
                    up.loop is not None
                    and self._items(run, up) is None
                    and not self._blocked(run, up.id)
                ):
                    return None
                found.extend(group)
        return found

    def _readiness(self, run: ActiveRun, node: Node) -> str | tuple[str, str]:
        upstream = self._upstream_nodes(run, node)
        if upstream is None or any(u.state not in DONE for u in upstream):
            return "wait"
        bad = [u for u in upstream if u.state in ("failed", "upstream_failed", "cancelled")]
        if bad:
            return ("upstream_failed", f"upstream {bad[0].id} {bad[0].state}")
        skipped = [u for u in upstream if u.state == "skipped"]
        if skipped:
            return ("skipped", f"upstream {skipped[0].id} was skipped")
        for condition in node.task.conditions:
            left = self._value(run, condition.left, node.iteration)
            right = self._value(run, condition.right, node.iteration)
            try:
                holds = bool(_OPS[condition.op](left, right))
            except TypeError as exc:
                return ("failed", f"condition {left!r} {condition.op} {right!r}: {exc}")
            if not holds:
                return ("skipped", f"condition {left!r} {condition.op} {right!r} is false")
        return "ready"

    def _value(self, run: ActiveRun, value: Value, iteration: int | None) -> Any:
        if value.param is not None:
            return run.params.get(value.param)
        if value.task is not None:
            up = run.spec.task(value.task)
            key = f"{up.id}[{iteration}]" if up.loop is not None else up.id
            node = run.nodes.get(key)
            return node.outputs.get("result") if node and node.state in OK else None
        if value.loop is not None:
            task = next(t for t in run.spec.tasks if t.loop and t.loop.id == value.loop)
            items = self._items(run, task)
            return items[iteration] if items is not None and iteration is not None else None
        return value.const

    # one attempt of one node ----------------------------------------------------------------------
    def _launch(self, run: ActiveRun, node: Node) -> None:
        step = run.spec.steps[node.task.step]
        node.attempt += 1
        workdir = self.home / run.id / node.id / f"attempt-{node.attempt}"
        try:
            params = {
                name: self._value(run, v, node.iteration) for name, v in node.task.params.items()
            }
            params = {p.name: params.get(p.name, p.default) for p in step.params}
            inputs, imports = self._inputs(run, node)
        except ModelyardError as exc:
            self._start_row(run, node, None)
            self._fail(run, node, f"inputs could not be prepared: {exc.message}")
            return
        env = {**step.env, **node.task.env}
        key = cache_key(step, run.spec.module_source, params, inputs, env)
        use_cache = node.task.cache if node.task.cache is not None else step.cache
        if use_cache and self._cache_hit(run, node, key, step.cache_ttl_seconds):
            return
        self._start_row(run, node, key)
        if ":" in step.function and self.env_for is not None:
            env = {**self.env_for(run.namespace), **env}
        try:
            task_file = self._prepare(run, node, workdir, params, inputs, imports)
            proc = self._spawn(run, node, workdir, task_file, env, step.resources.memory_mb)
        except (OSError, ModelyardError) as exc:
            self._fail(run, node, f"could not start: {exc}")
            return
        timeout = node.task.timeout_seconds or step.timeout_seconds
        process = Process(
            proc, node, workdir, time.monotonic() + timeout if timeout else None, timeout or 0.0
        )
        self._procs[(run.id, node.id)] = process
        proc.when_done(lambda code: self._exited(process, code))

    def _inputs(self, run: ActiveRun, node: Node) -> tuple[dict[str, Any], list[dict[str, str]]]:
        records: dict[str, Any] = {}
        imports: list[dict[str, str]] = []
        for name, source in node.task.inputs.items():
            if source.registry_kind is not None:
                assert source.registry_ref is not None
                ref = ModelRef.parse(
                    str(self._value(run, source.registry_ref, node.iteration)),
                    default_namespace=run.namespace,
                )
                if ref.namespace != run.namespace:
                    raise ModelyardError(f"{ref} is in another namespace than the run")
                version = self.versions.get(source.registry_kind, ref.namespace, ref.name, ref.ref)
                records[name] = artifacts.registry_record(version)
                imports.append({"kind": source.registry_kind, "ref": version.ref})
                continue
            up = run.spec.task(source.task or "")
            if source.collect:
                group = self._expand(run, up)
                records[name] = [n.outputs["artifacts"][source.output] for n in group]
            else:
                key = f"{up.id}[{node.iteration}]" if up.loop is not None else up.id
                records[name] = run.nodes[key].outputs["artifacts"][source.output]
        return records, imports

    def _prepare(
        self,
        run: ActiveRun,
        node: Node,
        workdir: Path,
        params: dict[str, Any],
        inputs: dict[str, Any],
        imports: list[dict[str, str]],
    ) -> Path:
        shutil.rmtree(workdir, ignore_errors=True)
        (workdir / "outputs").mkdir(parents=True)
        handed: dict[str, Any] = {}
        for name, record in inputs.items():
            if isinstance(record, list):
                handed[name] = [
                    artifacts.materialize(self.blobs, r, workdir / "inputs" / name / str(i))
                    for i, r in enumerate(record)
                ]
            else:
                handed[name] = artifacts.materialize(self.blobs, record, workdir / "inputs" / name)
        step = run.spec.steps[node.task.step]
        node.outputs = {"imports": imports}
        task = {
            "module": run.spec.module,
            "module_source": run.spec.module_source,
            "code_root": run.spec.code_root,
            "function": step.function,
            "params": params,
            "inputs": handed,
            "outputs": {
                o.name: {
                    "type": o.type,
                    "path": str(workdir / "outputs" / o.name),
                    "uri": f"modelyard://runs/{run.id}/{node.id}/{o.name}",
                }
                for o in step.outputs
            },
            "result_path": str(workdir / "result.json"),
        }
        task_file = workdir / "task.json"
        task_file.write_text(json.dumps(task))
        return task_file

    def _spawn(
        self,
        run: ActiveRun,
        node: Node,
        workdir: Path,
        task_file: Path,
        env: dict[str, str],
        memory_mb: int | None,
    ) -> Handle:
        log_file = self.log_path(run.id, node.id)
        with open(log_file, "ab") as out:
            out.write(f"--- attempt {node.attempt} of {node.id}\n".encode())
        return self._launcher.start(
            "modelyard.pipelines.runner:run_forked",
            str(task_file),
            str(log_file),
            str(workdir),
            env,
            memory_mb * 1024 * 1024 if memory_mb else None,
            os.getpid(),
        )

    def _exited(self, proc: Process, code: int) -> None:
        """Called by the launcher's reader thread when the step's process ended."""
        with self._cond:
            proc.returncode = code
            self._cond.notify_all()

    def _enforce_deadlines(self, proc: Process) -> None:
        now = time.monotonic()
        if proc.kill_at is not None and now >= proc.kill_at:
            _signal(proc, signal.SIGKILL)
            proc.kill_at = None
        elif proc.deadline is not None and now >= proc.deadline:
            self._terminate(proc, f"timed out after {proc.timeout:g} s")

    def _terminate(self, proc: Process, why: str) -> None:
        proc.why_killed, proc.deadline = why, None
        _signal(proc, signal.SIGTERM)
        proc.kill_at = time.monotonic() + self.grace_seconds

    def _finished(self, run: ActiveRun, proc: Process) -> None:
        node, code = proc.node, proc.returncode
        assert code is not None
        result_file = proc.workdir / "result.json"
        result = json.loads(result_file.read_text()) if result_file.is_file() else {}
        if code == 0 and "error" not in result:
            try:
                self._succeed(run, node, proc.workdir, result)
            except ModelyardError as exc:
                self._fail(run, node, exc.message, code)
            return
        if proc.why_killed:
            reason = proc.why_killed
        elif code < 0:
            name = signal.Signals(-code).name
            reason = f"killed by {name}" + (
                " (out of memory, or killed from outside)" if name == "SIGKILL" else ""
            )
        else:
            reason = result.get("error") or f"exited with code {code}"
        if run.cancelling:
            self._settle(run, node, "cancelled", "cancelled while running", code)
        else:
            self._fail(run, node, reason, code)

    def _succeed(self, run: ActiveRun, node: Node, workdir: Path, result: dict[str, Any]) -> None:
        step = run.spec.steps[node.task.step]
        stored = {}
        for output in step.outputs:
            metadata = result.get("metadata", {}).get(output.name, {})
            path = workdir / "outputs" / output.name
            if output.type == "Metrics" and not path.exists():
                path.write_text(json.dumps(metadata))
            stored[output.name] = artifacts.store_output(
                self.blobs,
                path,
                output.type,
                metadata,
                f"modelyard://runs/{run.id}/{node.id}/{output.name}",
            )
        node.outputs = {**node.outputs, "artifacts": stored, "result": result.get("result")}
        published = [
            self._publish(run, node, p.output, p.model, p.alias, p.runtime)
            for p in node.task.publish
        ]
        node.outputs["published"] = published
        with self.db.write() as session:
            row = session.get(StepRunRow, node.step_run_id)
            assert row is not None
            row.state, row.outputs, row.exit_code = "succeeded", node.outputs, 0
            row.finished_at = self.events.clock()
            if row.cache_key:
                session.merge(
                    CacheEntryRow(
                        key=row.cache_key,
                        step_run_id=row.id,
                        outputs=node.outputs,
                        created_at=row.finished_at,
                    )
                )
            note = f"succeeded (attempt {node.attempt})"
            if published:
                note += "; published " + ", ".join(published)
            self._history(session, run.id, node.id, note)
        node.state = "succeeded"

    def _publish(
        self,
        run: ActiveRun,
        node: Node,
        output: str,
        model: str,
        alias: str | None,
        runtime: str | None,
    ) -> str:
        ref = ModelRef.parse(model)
        record = node.outputs["artifacts"][output]
        imports = list(node.outputs.get("imports", []))
        for up in self._ancestors(run, node):
            imports.extend(up.outputs.get("imports", []))
        # The version's metrics: the model's own metadata and the step's Metrics outputs.
        step = run.spec.steps[node.task.step]
        sources = [record.get("metadata", {})] + [
            node.outputs["artifacts"][o.name].get("metadata", {})
            for o in step.outputs
            if o.type == "Metrics"
        ]
        metrics = {
            k: v
            for source in sources
            for k, v in source.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        spec = VersionSpec(
            description=f"published by run {run.id}, step {node.id}",
            runtime=runtime,
            metrics=metrics,
            tags={"pipeline": run.spec.name},
            lineage=Lineage(
                run=run.id,
                step=node.id,
                inputs=[
                    LineageInput(kind=i["kind"], ref=i["ref"])
                    for i in {(i["kind"], i["ref"]): i for i in imports}.values()
                ],
            ),
        )
        draft = self.versions.create_draft(
            "model", ref.namespace, ref.name, spec, actor=f"run:{run.id}"[:32]
        )
        version = self.versions.commit(
            "model",
            ref.namespace,
            ref.name,
            draft.id,
            artifacts.version_files(record, output),
            actor=f"run:{run.id}"[:32],
        )
        if alias:
            self.aliases.set(
                "model",
                ref.namespace,
                ref.name,
                alias,
                version.number or 0,
                actor=f"run:{run.id}"[:32],
            )
        return version.ref

    def _ancestors(self, run: ActiveRun, node: Node) -> list[Node]:
        seen: dict[str, Node] = {}
        stack = [node]
        while stack:
            for up in self._upstream_nodes(run, stack.pop()) or []:
                if up.id not in seen:
                    seen[up.id] = up
                    stack.append(up)
        return list(seen.values())

    def _cache_hit(self, run: ActiveRun, node: Node, key: str, ttl: float | None) -> bool:
        with self.db.write() as session:
            entry = session.get(CacheEntryRow, key)
            if entry is None:
                return False
            if ttl is not None and (self.events.clock() - entry.created_at).total_seconds() > ttl:
                return False
            if not all(
                self.blobs.has(a["digest"] if a["kind"] == "file" else f["sha256"])
                for a in entry.outputs.get("artifacts", {}).values()
                for f in (a["files"] if a["kind"] == "dir" else [a])
            ):
                return False  # the cached artifacts were collected since
            node.outputs = dict(entry.outputs)
            now = self.events.clock()
            row = StepRunRow(
                run_id=run.id,
                node=node.id,
                task_id=node.task.id,
                attempt=node.attempt,
                state="cached",
                cache_key=key,
                cached_from=entry.step_run_id,
                outputs=node.outputs,
                started_at=now,
                finished_at=now,
            )
            session.add(row)
            session.flush()
            node.step_run_id, node.state = row.id, "cached"
            self._history(
                session,
                run.id,
                node.id,
                f"cache hit: reused the outputs of step run {entry.step_run_id}",
            )
        return True

    def _start_row(self, run: ActiveRun, node: Node, key: str | None) -> None:
        with self.db.write() as session:
            row = StepRunRow(
                run_id=run.id,
                node=node.id,
                task_id=node.task.id,
                attempt=node.attempt,
                state="running",
                cache_key=key,
                outputs={},
                started_at=self.events.clock(),
            )
            session.add(row)
            session.flush()
            node.step_run_id, node.state = row.id, "running"

    def _fail(self, run: ActiveRun, node: Node, reason: str, code: int | None = None) -> None:
        step = run.spec.steps[node.task.step]
        retry: Retry = node.task.retry or step.retry
        if node.attempt <= retry.count and not run.cancelling:
            delay = retry.delay(node.attempt)
            self._settle(
                run,
                node,
                "retrying",
                f"attempt {node.attempt} failed: {reason}; retrying in {delay:g} s",
                code,
            )
            node.ready_at = time.monotonic() + delay
            return
        self._settle(run, node, "failed", reason, code)

    def _settle(
        self, run: ActiveRun, node: Node, state: str, reason: str, code: int | None = None
    ) -> None:
        """Record a node's state; a node that never started gets a row of its own."""
        with self.db.write() as session:
            row = session.get(StepRunRow, node.step_run_id) if node.step_run_id else None
            if row is None or row.state not in ("running",):
                row = StepRunRow(
                    run_id=run.id,
                    node=node.id,
                    task_id=node.task.id,
                    attempt=max(node.attempt, 1),
                    state=state,
                    outputs={},
                    started_at=None,
                )
                session.add(row)
                session.flush()
                node.step_run_id = row.id
            row.state, row.reason, row.exit_code = state, reason, code
            row.finished_at = self.events.clock()
            self._history(session, run.id, node.id, f"{state}: {reason}")
            if state == "failed":
                self._event(session, run, "step.failed", {"step": node.id, "reason": reason})
        node.state = state

    def _complete(self, run: ActiveRun) -> None:
        failed = [n for n in run.nodes.values() if n.state == "failed"]
        state = "failed" if failed else "succeeded"
        reason = f"step {failed[0].id} failed" if failed else None
        self._end(run, state, reason)
        log.info("run %s %s (%d steps)", run.id, state, len(run.nodes))

    def _end(self, run: ActiveRun, state: str, reason: str | None) -> None:
        with self.db.write() as session:
            row = session.get(RunRow, run.id)
            assert row is not None
            row.state, row.reason, row.finished_at = state, reason, self.events.clock()
            self._history(session, run.id, None, state + (f": {reason}" if reason else ""))
            self._event(session, run, f"run.{state}", {"reason": reason})
        self._runs.pop(run.id, None)
        self._ended = True  # queued runs waiting for a schedule slot may start now

    # cancellation -------------------------------------------------------------------------------
    def _begin_cancel(self, run_id: str) -> None:
        run = self._runs.get(run_id)
        if run is None:
            with self.db.write() as session:
                row = session.get(RunRow, run_id)
                if row is not None and row.state == "queued":
                    row.state, row.finished_at = "cancelled", self.events.clock()
                    self._history(session, run_id, None, "cancelled before it started")
            return
        run.cancelling = True
        with self.db.write() as session:
            row = session.get(RunRow, run_id)
            assert row is not None
            row.state = "cancelling"
            self._history(
                session,
                run_id,
                None,
                "cancel requested: SIGTERM to running steps, "
                f"SIGKILL after {self.grace_seconds:g} s",
            )
        for (rid, _), proc in self._procs.items():
            if rid == run_id and proc.why_killed is None:
                self._terminate(proc, "cancelled")

    def _finish_cancel(self, run: ActiveRun) -> None:
        if any(rid == run.id for rid, _ in self._procs):
            return
        for node in run.nodes.values():
            if node.state not in DONE:
                self._settle(run, node, "cancelled", "the run was cancelled")
        self._end(run, "cancelled", "cancelled by request")

    def _shutdown(self) -> None:
        for proc in self._procs.values():
            _signal(proc, signal.SIGKILL)
        for proc in self._procs.values():
            proc.popen.join(5)
        self._procs.clear()
        self._launcher.close()

    # bookkeeping --------------------------------------------------------------------------------
    def _history(self, session: Session, run_id: str, node: str | None, message: str) -> None:
        session.add(
            RunHistoryRow(run_id=run_id, node=node, message=message, at=self.events.clock())
        )

    def _event(
        self, session: Session, run: ActiveRun, type: str, data: dict[str, Any] | None = None
    ) -> None:
        self.events.append(
            session,
            type,
            f"{run.namespace}/runs/{run.id}",
            {"run": run.id, "pipeline": run.spec.name, **(data or {})},
            namespace=run.namespace,
        )


def _iteration(node_id: str) -> int | None:
    return int(node_id[node_id.rindex("[") + 1 : -1]) if node_id.endswith("]") else None


def _signal(proc: Process, sig: signal.Signals) -> None:
    pid = proc.popen.pid
    if pid is None:
        return
    try:
        os.killpg(pid, sig)  # the step and whatever it started
    except ProcessLookupError:  # not yet its own group leader, or gone
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
