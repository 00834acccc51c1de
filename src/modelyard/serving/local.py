"""Replicas as local processes, supervised by the control plane.

Each replica is the model server (``modelyard.serving.server``) forked from a launcher process
that has the server and the runtimes' libraries imported already, so a replica starts in a
fraction of a second instead of seconds. The launcher binds each replica's listening socket on
port 0 before forking it: the kernel hands out ports, no two replicas can race for one. A
supervisor thread converges every revision on its wanted count: it starts replicas, polls
``/v2/health/ready`` until they are ready, checks liveness, restarts crashed replicas with backoff
and gives up on a revision whose replicas die before ever getting ready (its log tail says why).

Scaling down is two-phase: a replica is first marked ``terminating`` (routes drop it, and the
gateway fetches routes by long poll, so within milliseconds), then after ``drain_delay`` it gets
SIGTERM, finishes what it has in flight, and exits; SIGKILL after its grace period.

Replicas run in their own session with their own log file and a state file under
``<home>/replicas``: a control plane that crashes leaves them serving, and the next one adopts
the live ones when it starts. Each replica gets its revision's token in its environment and
answers only requests that carry it (`modelyard.serving.replica_headers`); the token is stored
with the revision, not in the state file, so the control plane that adopts a replica routes to
it with the token it was started with.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from modelyard.launcher import Handle, Launcher
from modelyard.loops import Loop
from modelyard.serving.deployments import Revision
from modelyard.serving.logfiles import LogFiles
from modelyard.serving.logs import LogLine, split_stamp
from modelyard.serving.records import ReplicaInfo
from modelyard.serving.replica_command import replica_command, replica_environment
from modelyard.serving.states import ReplicaState, Workload

if TYPE_CHECKING:
    from modelyard.settings import Settings

log = logging.getLogger(__name__)
TICK_SECONDS = 0.05
LIVENESS_SECONDS = 2.0
LIVENESS_FAILURES = 3
START_ATTEMPTS = 3
MAX_BACKOFF_SECONDS = 30.0
STABLE_SECONDS = 60.0
PRELOAD = [
    "modelyard.serving.server",
    "modelyard.client",
    "?uvloop",
    "?httptools",
    "?joblib",
    "?sklearn.linear_model",
    "?sklearn.pipeline",
    "?sklearn.preprocessing",
    "?onnxruntime",
]
"""Imported once by the launcher, shared by every replica it forks (optional ones if installed)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class _Process:
    id: str
    revision_id: str
    port: int
    pid: int
    handle: Handle | None  # None when adopted from an earlier control plane
    started_at: dt.datetime
    started: float
    state: ReplicaState = ReplicaState.STARTING
    ready_since: float | None = None
    last_live: float = 0.0
    live_failures: int = 0
    sigterm_at: float | None = None
    kill_at: float | None = None
    grace: float = 30.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def exit_code(self) -> int | None:
        if self.handle is not None and self.handle.exitcode is None:
            return None
        if self.handle is not None and self.handle.exitcode != -signal.SIGKILL:
            return self.handle.exitcode
        # Reported killed: also what the launcher's end reports for children it can no longer
        # watch. A replica runs in its own session and may well live on: believe the kernel.
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return -1
        except PermissionError:
            pass
        return None


@dataclass
class _Wanted:
    revision: Revision | None
    count: int = 0
    start_failures: int = 0
    crashes: int = 0
    not_before: float = 0.0
    failure: str | None = None
    restarts: int = 0


@dataclass
class LocalOrchestrator:
    home: Path
    env_for: Callable[[Revision], dict[str, str]] = field(default=lambda revision: {})
    """A revision's replica environment: how to reach the repository (MODELYARD_URL, a key)."""
    drain_delay: float = 1.0
    ready_timeout: float = 120.0
    _procs: dict[str, _Process] = field(default_factory=dict)
    _wanted: dict[str, _Wanted] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.on_change: Callable[[], None] = lambda: None
        self.launcher = Launcher(PRELOAD)
        self.loop = Loop("replicas", self._supervise, interval=TICK_SECONDS)
        self._http: httpx.Client | None = None
        self.log_files = LogFiles(self.folder)

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalOrchestrator:
        return cls(settings.home)

    def warm(self) -> None:
        self.launcher.warm()  # replicas fork from it: have its imports done before the first

    @property
    def folder(self) -> Path:
        return self.home / "replicas"

    # the interface ------------------------------------------------------------------------------
    def scale(self, revision: Revision, replicas: int) -> None:
        with self._lock:
            wanted = self._wanted.setdefault(revision.id, _Wanted(revision))
            wanted.revision = revision
            if wanted.count != replicas:
                wanted.count = replicas
                self.loop.wake()

    def stop_revision(self, revision_id: str) -> None:
        with self._lock:
            self._wanted.setdefault(revision_id, _Wanted(None)).count = 0
        self.loop.wake()

    def replicas(self, revision_id: str) -> list[ReplicaInfo]:
        with self._lock:
            restarts = self._wanted[revision_id].restarts if revision_id in self._wanted else 0
            return [
                ReplicaInfo(
                    id=p.id,
                    url=p.url,
                    state=p.state,
                    pid=p.pid,
                    started_at=p.started_at,
                    restarts=restarts,
                )
                for p in self._procs.values()
                if p.revision_id == revision_id
            ]

    def failure(self, revision_id: str) -> str | None:
        with self._lock:
            wanted = self._wanted.get(revision_id)
            return wanted.failure if wanted else None

    def revisions(self) -> set[str]:
        with self._lock:
            return {p.revision_id for p in self._procs.values()}

    def logs(
        self,
        revision_ids: Collection[str],
        *,
        replica: str | None = None,
        since: dt.datetime | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> Iterator[list[LogLine]]:
        return self.log_files.read(
            revision_ids, replica=replica, since=since, tail=tail, follow=follow
        )

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._adopt()
        self._http = httpx.Client(timeout=0.5)
        self.loop.start()

    def stop(self, *, keep_replicas: bool = False) -> None:
        self.loop.stop()
        if self._http is not None:
            self._http.close()
        if keep_replicas:
            return
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            self._signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + max((p.grace for p in procs), default=0)
        for proc in procs:
            while proc.exit_code() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.exit_code() is None:
                self._signal(proc, signal.SIGKILL)
                if proc.handle is not None:
                    proc.handle.join(5)
            self._forget(proc)
        self.launcher.close()

    def loops(self) -> list[Loop]:
        return [self.loop]

    # supervision --------------------------------------------------------------------------------
    def _supervise(self) -> None:
        assert self._http is not None, "started"
        self._tick(self._http)

    def _tick(self, http: httpx.Client) -> None:
        now = time.monotonic()
        changed = False
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            changed |= self._check(proc, http, now)
        with self._lock:
            plans = [(rid, w) for rid, w in self._wanted.items()]
        for revision_id, wanted in plans:
            changed |= self._converge(revision_id, wanted, now)
        if changed:
            self.on_change()

    def _check(self, proc: _Process, http: httpx.Client, now: float) -> bool:
        code = proc.exit_code()
        if code is not None:
            self._exited(proc, code, now)
            return True
        if proc.state == ReplicaState.TERMINATING:
            if proc.sigterm_at is not None and now >= proc.sigterm_at:
                self._signal(proc, signal.SIGTERM)
                proc.sigterm_at, proc.kill_at = None, now + proc.grace
            elif proc.kill_at is not None and now >= proc.kill_at:
                self._signal(proc, signal.SIGKILL)
            return False
        if proc.state == ReplicaState.STARTING:
            if self._ok(http, f"{proc.url}/v2/health/ready"):
                proc.state, proc.ready_since, proc.last_live = ReplicaState.READY, now, now
                return True
            if now - proc.started > self.ready_timeout:
                log.warning(
                    "replica %s not ready after %.0f s: killed", proc.id, self.ready_timeout
                )
                self._signal(proc, signal.SIGKILL)
            return False
        if now - proc.last_live >= LIVENESS_SECONDS:
            proc.last_live = now
            if self._ok(http, f"{proc.url}/v2/health/live"):
                proc.live_failures = 0
            else:
                proc.live_failures += 1
                if proc.live_failures >= LIVENESS_FAILURES:
                    log.warning("replica %s failed %d liveness checks: killed", proc.id, 3)
                    self._signal(proc, signal.SIGKILL)
        return False

    def _exited(self, proc: _Process, code: int, now: float) -> None:
        self._forget(proc)
        with self._lock:
            wanted = self._wanted.get(proc.revision_id)
        if wanted is None or proc.state == ReplicaState.TERMINATING:
            return
        if proc.state == ReplicaState.STARTING:
            wanted.start_failures += 1
            tail = _tail(self.folder / f"{proc.id}.log")
            log.warning(
                "replica %s of revision %s exited (%s) before ready", proc.id, _rev(wanted), code
            )
            if wanted.start_failures >= START_ATTEMPTS:
                wanted.failure = (
                    f"replicas exited before getting ready ({wanted.start_failures} attempts, "
                    f"last exit code {code}); last log lines:\n{tail}"
                )
                wanted.count = 0
                return
        else:
            stable = proc.ready_since is not None and now - proc.ready_since > STABLE_SECONDS
            wanted.crashes = 0 if stable else wanted.crashes + 1
            log.warning(
                "replica %s of revision %s crashed (exit %s): restarting",
                proc.id,
                _rev(wanted),
                code,
            )
        wanted.restarts += 1
        delay = (
            0.0
            if wanted.crashes <= 1 and proc.state != ReplicaState.STARTING
            else 0.5 * 2**wanted.crashes
        )
        wanted.not_before = now + min(MAX_BACKOFF_SECONDS, delay)

    def _converge(self, revision_id: str, wanted: _Wanted, now: float) -> bool:
        with self._lock:
            live = [
                p
                for p in self._procs.values()
                if p.revision_id == revision_id and p.state != ReplicaState.TERMINATING
            ]
            if (
                not live
                and wanted.count == 0
                and not any(p.revision_id == revision_id for p in self._procs.values())
            ):
                if wanted.failure is None:
                    del self._wanted[revision_id]
                return False
        if len(live) > wanted.count:
            # starting ones first (they serve nothing yet), then the newest
            live.sort(key=lambda p: (p.state == ReplicaState.READY, p.started))
            # A realtime worker takes no requests to drain: it stops at once (SIGTERM lets it
            # finish the triggers it holds), so the one it was replaced by works alone sooner.
            realtime = wanted.revision is not None and (
                wanted.revision.workload == Workload.REALTIME_WORKER
            )
            for proc in live[: len(live) - wanted.count]:
                proc.state, proc.sigterm_at = ReplicaState.TERMINATING, now + self.drain_delay
                if proc.ready_since is None or realtime:
                    proc.sigterm_at = now
            return True
        if len(live) < wanted.count and wanted.failure is None and now >= wanted.not_before:
            if wanted.revision is None:
                return False
            for _ in range(wanted.count - len(live)):
                self._launch(wanted.revision)
            return True
        return False

    # processes ----------------------------------------------------------------------------------
    def _launch(self, revision: Revision) -> None:
        replica_id = f"{revision.name}-{uuid.uuid4().hex[:6]}"
        log_path = self.log_files.path(replica_id)
        self.log_files.register(replica_id, revision.id)
        # The token goes in the environment: the launcher gets it on its stdin, the replica
        # reads it at start and takes it out of its environment (model code runs in that process
        # and may start others).
        env = replica_environment(revision, self.env_for(revision))
        module, arguments = replica_command(revision)
        handle = self.launcher.start(
            f"{module}:run_forked",
            arguments,
            env,
            str(log_path),
            listen="127.0.0.1",
        )
        assert handle.port is not None
        port = handle.port
        proc = _Process(
            id=replica_id,
            revision_id=revision.id,
            port=port,
            pid=handle.pid,
            handle=handle,
            started_at=_now(),
            started=time.monotonic(),
        )
        state = {"id": replica_id, "revision_id": revision.id, "port": port, "pid": handle.pid}
        temp = self.folder / f".{replica_id}.json"
        temp.write_text(json.dumps({**state, "started_at": proc.started_at.isoformat()}))
        temp.rename(self.folder / f"{replica_id}.json")
        with self._lock:
            self._procs[replica_id] = proc
        log.info(
            "replica %s of %s started on port %d (pid %d)",
            replica_id,
            revision.model,
            port,
            handle.pid,
        )

    def _adopt(self) -> None:
        """Take over the live replicas an earlier control plane left running."""
        with httpx.Client(timeout=1.0) as http:
            for path in self.folder.glob("*.json"):
                try:
                    state = json.loads(path.read_text())
                    proc = _Process(
                        id=state["id"],
                        revision_id=state["revision_id"],
                        port=int(state["port"]),
                        pid=int(state["pid"]),
                        handle=None,
                        started_at=dt.datetime.fromisoformat(state["started_at"]),
                        started=time.monotonic(),
                    )
                except (OSError, ValueError, KeyError):
                    path.unlink(missing_ok=True)
                    continue
                if proc.exit_code() is None and self._ok(http, f"{proc.url}/v2/health/ready"):
                    proc.state, proc.ready_since = ReplicaState.READY, time.monotonic()
                    self._procs[proc.id] = proc
                    # Keep what runs until the serving controller says how many it wants: a
                    # first round before its first reconciliation must not stop them.
                    self._wanted.setdefault(proc.revision_id, _Wanted(None)).count += 1
                    log.info("adopted replica %s (pid %d, port %d)", proc.id, proc.pid, proc.port)
                else:
                    path.unlink(missing_ok=True)

    def _forget(self, proc: _Process) -> None:
        with self._lock:
            self._procs.pop(proc.id, None)
        (self.folder / f"{proc.id}.json").unlink(missing_ok=True)

    @staticmethod
    def _signal(proc: _Process, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)

    @staticmethod
    def _ok(http: httpx.Client, url: str) -> bool:
        try:
            return http.get(url).status_code == 200
        except httpx.HTTPError:
            return False


def _tail(path: Path, lines: int = 30) -> str:
    """The log's last ``lines`` lines, without the times stamped on them."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - 16384))
            data = handle.read()
    except OSError:
        return "(no log)"
    return "\n".join(split_stamp(raw)[1] for raw in data.splitlines()[-lines:])


def _rev(wanted: _Wanted) -> str:
    return wanted.revision.name if wanted.revision else "?"
