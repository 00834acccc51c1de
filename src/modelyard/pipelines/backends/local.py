"""Steps as local processes, forked from a warm launcher (:mod:`modelyard.launcher`).

Each attempt gets a fresh working folder ``HOME/RUN/NODE/attempt-N`` with its task spec in
``task.json``; it runs in its own process group (so a stop reaches whatever the step started),
dies with the control plane, and appends its output to ``HOME/RUN/NODE.log``. The result is
``result.json`` in the working folder. ``memory_mb`` becomes the attempt's address-space limit;
``cpu`` is not enforced on this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from modelyard.launcher import Handle, Launcher
from modelyard.pipelines.backends import StepExit, StepLaunch, node_log

if TYPE_CHECKING:
    from modelyard.settings import Settings

PRELOAD = ["modelyard.pipelines.dsl", "modelyard.pipelines.runner"]
"""What the launcher imports once, so that an attempt costs a fork."""


class LocalStepBackend:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.on_exit: Callable[[], None] = lambda: None
        self._launcher = Launcher(PRELOAD)
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], tuple[Handle, Path]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalStepBackend:
        return cls(settings.home / "runs")

    def log_path(self, run_id: str, node: str) -> Path:
        return node_log(self.home, run_id, node)

    def launch(self, launch: StepLaunch) -> None:
        workdir = self.home / launch.run_id / launch.node / f"attempt-{launch.attempt}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        task_file = workdir / "task.json"
        task_file.write_text(json.dumps(launch.task))
        log_file = self.log_path(launch.run_id, launch.node)
        with open(log_file, "ab") as out:
            out.write(f"--- attempt {launch.attempt} of {launch.node}\n".encode())
        handle = self._launcher.start(
            "modelyard.pipelines.runner:run_forked",
            str(task_file),
            str(log_file),
            str(workdir),
            launch.env,
            launch.memory_mb * 1024 * 1024 if launch.memory_mb else None,
            os.getpid(),
        )
        with self._lock:
            self._running[(launch.run_id, launch.node)] = (handle, workdir)
        handle.when_done(lambda _code: self.on_exit())

    def check(self, run_id: str, node: str) -> StepExit | None:
        with self._lock:
            found = self._running.get((run_id, node))
            if found is None or found[0].exitcode is None:
                return None
            del self._running[(run_id, node)]
        handle, workdir = found
        assert handle.exitcode is not None
        result_file = workdir / "result.json"
        result = json.loads(result_file.read_text()) if result_file.is_file() else {}
        return StepExit(handle.exitcode, result)

    def terminate(self, run_id: str, node: str, *, force: bool = False) -> None:
        with self._lock:
            found = self._running.get((run_id, node))
        if found is not None and found[0].exitcode is None:
            _signal(found[0], signal.SIGKILL if force else signal.SIGTERM)

    def logs(self, run_id: str, node: str) -> str:
        path = self.log_path(run_id, node)
        return path.read_text(errors="replace") if path.is_file() else ""

    def close(self) -> None:
        with self._lock:
            handles = [handle for handle, _ in self._running.values()]
            self._running.clear()
        for handle in handles:
            if handle.exitcode is None:
                _signal(handle, signal.SIGKILL)
        for handle in handles:
            handle.join(5)
        self._launcher.close()


def _signal(handle: Handle, sig: signal.Signals) -> None:
    pid = handle.pid
    if pid is None:
        return
    try:
        os.killpg(pid, sig)  # the step and whatever it started
    except ProcessLookupError:  # not yet its own group leader, or gone
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
