"""Realtime workers as local processes, one per realtime deployment, kept running by the control
plane.

A thread converges the running workers on the realtime deployments every ``TICK_SECONDS`` (and
when woken): it starts a worker for a new deployment, restarts one whose spec changed or that
exited (with backoff when it keeps crashing soon after its start), and stops the workers of
deleted deployments (SIGTERM, SIGKILL after ``GRACE_SECONDS``). Workers run in their own session
with a log file and a state file under ``<home>/realtime/workers``: a control plane killed with
-9 leaves them working, and the next one adopts them, so one deployment never has two workers.
The state file is written before the process starts, with a launch id that the process carries
on its command line: a kill between the start and the pid's write leaves the process findable.
An adopted worker is not a child of this process: it is alive while ``/proc`` shows its command
line (a zombie's is empty, and a reused pid shows another one).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelyard.loops import Loop
from modelyard.realtime.catalog import Catalog
from modelyard.realtime.records import RealtimeInfo

log = logging.getLogger(__name__)
TICK_SECONDS = 0.5
GRACE_SECONDS = 10.0
STABLE_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 30.0


@dataclass
class _Worker:
    key: str
    pid: int
    digest: str
    started: float
    popen: subprocess.Popen[bytes] | None = None
    crashes: int = 0
    not_before: float = 0.0
    last_exit: int | None = None

    def exit_code(self) -> int | None:
        if self.popen is not None:
            return self.popen.poll()
        # Adopted: not our child, so no exit status. Gone, a zombie (an empty command line) or
        # its pid taken by another process all mean it exited.
        return None if _is_worker(self.pid, self.key) else -1


def _is_worker(pid: int, key: str) -> bool:
    """Whether ``pid`` is a live worker process of the realtime deployment ``key``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"modelyard.realtime.worker" in cmdline and key.encode() in cmdline


class WorkerSupervisor:
    def __init__(
        self,
        catalog: Catalog,
        home: Path,
        env_for: Callable[[str], dict[str, str]] = lambda namespace: {},
    ) -> None:
        self.catalog = catalog
        self.folder = home / "realtime" / "workers"
        self.env_for = env_for
        """A namespace's worker environment: the API, a key that reads the namespace, stores."""
        self._workers: dict[str, _Worker] = {}
        self._restarts: dict[str, tuple[int, float, int | None]] = {}
        self.loop = Loop("realtime-workers", self.reconcile, interval=TICK_SECONDS)
        self._lock = threading.Lock()

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._adopt()
        self.loop.start()

    def stop(self, *, keep_workers: bool = False) -> None:
        self.loop.stop()
        if not keep_workers:
            for key in list(self._workers):
                self._terminate(key)

    def wake(self) -> None:
        self.loop.wake()

    def status(self, key: str) -> str:
        with self._lock:
            worker = self._workers.get(key)
            crashes, _, code = self._restarts.get(key, (0, 0.0, None))
        if worker is None:
            return f"restarting (exit code {code}, {crashes} crashes)" if crashes else "starting"
        note = f", restarted after {crashes} crashes" if crashes else ""
        return f"running (pid {worker.pid}{note})"

    def pid(self, key: str) -> int | None:
        with self._lock:
            worker = self._workers.get(key)
        return worker.pid if worker else None

    # convergence --------------------------------------------------------------------------------

    def reconcile(self) -> None:
        wanted = {info.key: info for info in self.catalog.list_deployments()}
        now = time.monotonic()
        for key in list(self._workers):
            worker = self._workers[key]
            code = worker.exit_code()
            if code is not None:
                log.warning("realtime worker of %s (pid %d) exited (%s)", key, worker.pid, code)
                crashes = worker.crashes + 1 if now - worker.started < STABLE_SECONDS else 1
                delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (crashes - 1)) if crashes > 1 else 0
                with self._lock:
                    self._restarts[key] = (crashes, now + delay, code)
                    del self._workers[key]
                (self.folder / f"{_file(key)}.json").unlink(missing_ok=True)
            elif key not in wanted or worker.digest != _digest(wanted[key]):
                self._terminate(key)
        for key, info in wanted.items():
            crashes, not_before, _ = self._restarts.get(key, (0, 0.0, None))
            if key not in self._workers and now >= not_before:
                self._launch(info, crashes)
        for key in set(self._restarts) - set(wanted):
            del self._restarts[key]

    def _launch(self, info: RealtimeInfo, crashes: int) -> None:
        key = info.key
        spec = info.spec.model_dump_json()
        launch, digest = uuid.uuid4().hex, _digest(info)
        command = [sys.executable, "-m", "modelyard.realtime.worker", "--deployment", key]
        env = {**os.environ, **self.env_for(info.namespace), **info.spec.env}
        # Written before the process exists: a control plane killed before it wrote the pid
        # leaves the launch's id, by which the next one finds the process (no second worker).
        self._write_state(key, {"key": key, "launch": launch, "digest": digest})
        with open(self.folder / f"{_file(key)}.log", "ab") as out:
            popen = subprocess.Popen(
                [*command, "--launch", launch, "--spec", spec],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        worker = _Worker(key, popen.pid, digest, time.monotonic(), popen, crashes)
        self._write_state(key, {"key": key, "launch": launch, "digest": digest, "pid": popen.pid})
        with self._lock:
            self._workers[key] = worker
        log.info("realtime worker of %s started (pid %d)", key, popen.pid)

    def _write_state(self, key: str, state: dict[str, object]) -> None:
        temp = self.folder / f".{_file(key)}.json"
        temp.write_text(json.dumps(state))
        temp.rename(self.folder / f"{_file(key)}.json")

    def _terminate(self, key: str) -> None:
        with self._lock:
            worker = self._workers.pop(key, None)
        if worker is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        while worker.exit_code() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if worker.exit_code() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
        (self.folder / f"{_file(key)}.json").unlink(missing_ok=True)

    def _adopt(self) -> None:
        """Take over the workers an earlier control plane left running."""
        for path in self.folder.glob("*.json"):
            try:
                state = json.loads(path.read_text())
                key, digest = str(state["key"]), str(state["digest"])
                pid = int(state["pid"]) if "pid" in state else _launched(str(state["launch"]))
            except (OSError, ValueError, LookupError):
                path.unlink(missing_ok=True)
                continue
            if not _is_worker(pid, key):
                path.unlink(missing_ok=True)
                continue
            self._workers[key] = _Worker(key, pid, digest, time.monotonic())
            log.info("adopted the realtime worker of %s (pid %d)", key, pid)


def _launched(launch: str) -> int:
    """The pid of the worker started with the launch id ``launch``; LookupError if none runs."""
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if launch.encode() in path.read_bytes().split(b"\0"):
                return int(path.parent.name)
    raise LookupError(launch)


def _digest(info: RealtimeInfo) -> str:
    return hashlib.sha256(info.spec.model_dump_json().encode()).hexdigest()[:16]


def _file(key: str) -> str:
    return key.replace("/", "--")
