"""Where pipeline steps run: the interface the executor drives, whatever runs the steps.

The executor decides which attempt of which node starts and when it has run too long; a step
backend only starts attempts (``launch``), says whether one ended and how (``check``), stops one
(``terminate``) and shows what it printed (``logs``). What a step does is in its portable task
spec (:class:`modelyard.pipelines.task.StepTask`), which the runner reads wherever the step runs,
so a backend moves no artifact: inputs and outputs go through the blob store.
``LocalStepBackend`` (``local``) forks each attempt on this machine; ``KubeStepBackend``
(``kubernetes``, :mod:`modelyard.kube.jobs`) runs each as a Job. ``load_step_backend`` picks
one by the ``step_backend`` setting: a built-in name, an entry point of the
``modelyard.step_backends`` group, or ``package.module:ClassName``; the class is built with
``from_settings(settings)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from modelyard.errors import ConfigError
from modelyard.pipelines.task import StepTask
from modelyard.plugins import Family

if TYPE_CHECKING:
    from pathlib import Path

    from modelyard.settings import Settings

ENTRY_POINT_GROUP = "modelyard.step_backends"
_BUILTINS = {
    "kubernetes": "modelyard.kube.jobs:KubeStepBackend",
    "local": "modelyard.pipelines.backends.local:LocalStepBackend",
}


@dataclass(frozen=True)
class StepLaunch:
    """One attempt of one node to start."""

    run_id: str
    node: str
    attempt: int
    task: StepTask
    env: dict[str, str]
    """The step's environment on top of the backend's own; may hold the control plane's key for
    a step of modelyard's own, so it must not reach a command line or a manifest."""
    memory_mb: int | None = None
    cpu: float | None = None
    namespace: str = ""
    """The run's modelyard namespace (a backend may run the step in a place of its own)."""
    image: str | None = None
    """The container image the step names (``@step(image=...)``), for a backend that runs
    containers; the local backend runs every step with this machine's Python."""


@dataclass(frozen=True)
class StepExit:
    """How an attempt ended."""

    code: int
    """The exit code; negative: killed by that signal."""
    result: dict[str, Any]
    """What the runner wrote (:class:`modelyard.pipelines.task.StepResult`); {} when nothing."""


class StepBackend(Protocol):
    on_exit: Callable[[], None]
    """Called (from any thread) whenever an attempt ended: the executor then calls ``check``.
    Set before the first ``launch``."""

    def launch(self, launch: StepLaunch) -> None:
        """Start the attempt and return once it is started (not finished). Raise OSError or a
        ModelyardError when it cannot start; nothing of it then remains. The attempt's log gets a
        first line ``--- attempt N of NODE``. The node's previous attempt has ended: launching a
        node that still runs is a bug of the caller."""

    def check(self, run_id: str, node: str) -> StepExit | None:
        """None while the node's latest attempt runs; once it ended, how, exactly once: the
        backend then forgets the attempt (and answers None, as for a node it never launched).
        Never blocks."""

    def terminate(self, run_id: str, node: str, *, force: bool = False) -> None:
        """Ask the attempt to stop (SIGTERM to the step and whatever it started; ``force``:
        SIGKILL). Returns at once: the end is seen by ``check``. Nothing if it ended."""

    def logs(self, run_id: str, node: str) -> str:
        """Everything the node's attempts printed so far, stdout and stderr interleaved, each
        attempt headed by its ``--- attempt`` line; "" when none started."""

    def close(self) -> None:
        """Kill every attempt still running, wait briefly for them and release what the backend
        holds. The executor calls it when it stops: those attempts run again at its next start."""


STEP_BACKENDS: Family[object] = Family(
    "step backend", ENTRY_POINT_GROUP, object, _BUILTINS, error=ConfigError
)


def node_log(runs: Path, run_id: str, node: str) -> Path:
    """A node's log file under ``runs`` (``HOME/runs``), where every backend writes its
    attempts' logs and ``runs logs`` reads them."""
    return runs / run_id / f"{node}.log"


def load_step_backend(name: str, settings: Settings) -> StepBackend:
    """The step backend ``name`` names, built from ``settings`` (nothing starts yet)."""
    backend: StepBackend = STEP_BACKENDS.from_settings(
        name, settings, "modelyard.pipelines.backends.StepBackend"
    )
    return backend


def step_backend_names() -> list[str]:
    """Built-in step backend names, then those that installed packages add, sorted."""
    return STEP_BACKENDS.names()
