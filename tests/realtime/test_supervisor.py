"""Adoption of the workers an earlier control plane left running, by their state files: a worker
whose launch was cut short (the control plane killed before it wrote the pid) is found by its
launch id, and an adopted worker that died is known to be gone even as a zombie."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.controlplane import ControlPlane
from modelyard.realtime.supervisor import WorkerSupervisor
from modelyard.testing import wait_for

KEY = "team/scorer"


@pytest.fixture
def supervisor(plane: ControlPlane, tmp_path: Path) -> WorkerSupervisor:
    supervisor = WorkerSupervisor(plane.catalog, tmp_path)
    supervisor.folder.mkdir(parents=True)
    return supervisor


@pytest.fixture
def stand_in() -> Iterator[subprocess.Popen[bytes]]:
    """A process with a worker's command line (launch id ``L1``) that only waits."""
    command = [sys.executable, "-c", "import signal; signal.pause()"]
    process = subprocess.Popen(
        [*command, "modelyard.realtime.worker", "--deployment", KEY, "--launch", "L1"]
    )
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    wait_for(lambda: b"L1" in cmdline.read_bytes(), 10, "the stand-in's command line")
    yield process
    process.kill()
    process.wait(10)


def _state(supervisor: WorkerSupervisor, **state: object) -> Path:
    path = supervisor.folder / "team--scorer.json"
    path.write_text(json.dumps({"key": KEY, "digest": "d", **state}))
    return path


def test_a_launch_cut_short_is_adopted_by_its_launch_id(
    supervisor: WorkerSupervisor, stand_in: subprocess.Popen[bytes]
) -> None:
    _state(supervisor, launch="L1")
    supervisor._adopt()
    assert supervisor.pid(KEY) == stand_in.pid


def test_a_launch_that_never_started_is_forgotten(supervisor: WorkerSupervisor) -> None:
    path = _state(supervisor, launch="never-started")
    supervisor._adopt()
    assert supervisor.pid(KEY) is None and not path.exists()


def test_an_adopted_worker_that_died_is_gone_even_unreaped(
    supervisor: WorkerSupervisor, stand_in: subprocess.Popen[bytes]
) -> None:
    _state(supervisor, launch="L1", pid=stand_in.pid)
    supervisor._adopt()
    worker = supervisor._workers[KEY]
    assert worker.exit_code() is None
    stand_in.kill()
    # a zombie until this process reaps it: os.kill(pid, 0) would still find it
    wait_for(lambda: worker.exit_code() is not None, 10, "the worker seen gone")
    # nobody reaped it meanwhile: its exit is still this process's to collect
    assert stand_in.wait(10) == -signal.SIGKILL


def test_a_pid_taken_by_another_deployment_is_not_adopted(
    supervisor: WorkerSupervisor, stand_in: subprocess.Popen[bytes]
) -> None:
    path = supervisor.folder / "team--other.json"
    path.write_text(json.dumps({"key": "team/other", "digest": "d", "pid": stand_in.pid}))
    supervisor._adopt()
    assert supervisor.pid("team/other") is None and not path.exists()
