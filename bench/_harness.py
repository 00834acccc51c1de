"""What every benchmark here shares: the machine it ran on and how busy it was, figures (nearest-
rank percentiles, milliseconds), goal lines that say PASS or MISS, the peers' own virtual
environments under ``bench/.venvs``, and the processes a benchmark started, read from /proc.

The scripts run as ``python bench/NAME.py``, which puts this folder on ``sys.path``: they import
it as ``_harness``. Free ports and waits with a deadline come from ``modelyard.testing``, which
the tests share.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from modelyard.testing import free_port, wait_for

__all__ = [
    "CLOCK_TICKS",
    "REQUEST_FAILURES",
    "UP",
    "VENVS",
    "Ident",
    "PlatformEnv",
    "Watched",
    "alive",
    "argument_parser",
    "children_map",
    "cpu_model",
    "ensure_venv",
    "free_port",
    "goal",
    "ident",
    "launch",
    "load_average",
    "machine_busy",
    "machine_line",
    "ms",
    "percentile",
    "pip_install",
    "platform_env",
    "proc_stat",
    "process_label",
    "process_tree",
    "replica_token",
    "signal_each",
    "stop_on_sigterm",
    "stop_tree",
    "tree_cpu",
    "tree_idents",
    "venv_version",
    "verdict",
    "wait_for",
    "wait_until",
]

VENVS = Path(__file__).resolve().parent / ".venvs"
# What a raw-socket load generator counts as a failed request rather than a crash of its own: the
# connection refused or reset, an answer cut short or malformed, a request past its deadline.
REQUEST_FAILURES = (
    OSError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    ValueError,
    TimeoutError,
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Watched(Protocol):
    """A process a benchmark started and waits on: its name, and the end of its log."""

    @property
    def name(self) -> str: ...

    @property
    def process(self) -> subprocess.Popen[bytes]: ...

    def log_tail(self) -> str: ...


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    watched: Watched | None = None,
    interval: float = 0.05,
) -> float:
    """Poll ``check`` until it is true (a server that does not answer yet counts as false); the
    seconds waited. Fails at once if ``watched`` exits first, with the end of its log."""
    began = time.monotonic()
    deadline = began + timeout
    while True:
        if watched is not None and watched.process.poll() is not None:
            raise RuntimeError(
                f"{watched.name} exited ({watched.process.returncode}) before {what}:\n"
                + watched.log_tail()
            )
        with contextlib.suppress(OSError, http.client.HTTPException):
            if check():
                return time.monotonic() - began
        if time.monotonic() > deadline:
            tail = f":\n{watched.log_tail()}" if watched else ""
            raise TimeoutError(f"no {what} after {timeout:.0f} s{tail}")
        time.sleep(interval)


@dataclass(frozen=True)
class PlatformEnv:
    """How a benchmark's ``modelyard up`` runs: its home, its two free ports, its environment."""

    home: Path
    api_port: int
    gateway_port: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


def platform_env(home: Path, **settings: str) -> PlatformEnv:
    """A throw-away platform's environment: ``home``, the API and the gateway on free ports, and
    ``settings`` (``MODELYARD_*`` names); no setting of the caller's (config file, key, URL)."""
    api_port, gateway_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(
        MODELYARD_HOME=str(home),
        MODELYARD_API_PORT=str(api_port),
        MODELYARD_GATEWAY_PORT=str(gateway_port),
        **settings,
    )
    return PlatformEnv(home, api_port, gateway_port, env)


def launch(
    command: Sequence[str], env: dict[str, str], log: IO[bytes], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in a session of its own (so its whole group can be signalled), its output
    into ``log``, nothing on its stdin."""
    return subprocess.Popen(
        list(command),
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


UP = (sys.executable, "-m", "modelyard", "up")
"""The platform, as a benchmark starts it."""


def stop_on_sigterm(signum: int, frame: object) -> None:
    """A SIGTERM handler that unwinds through the ``finally`` blocks that stop what a benchmark
    started (its servers, its platform): ``signal.signal(signal.SIGTERM, stop_on_sigterm)``."""
    raise SystemExit(128 + signum)


def replica_token(api_port: int, auth: dict[str, str], deployment: str) -> str:
    """The token a replica of ``deployment`` (``namespace/name``) requires of its callers
    (``x-modelyard-replica-token``), from the routing table the control plane hands its gateway
    (an admin key may read it): runs straight to a replica call it as the gateway does."""
    conn = http.client.HTTPConnection("127.0.0.1", api_port, timeout=10.0)
    try:
        body = json.dumps({"since": 0, "wait": 0})
        conn.request(
            "POST", "/api/v1/gateway/sync", body, {**auth, "Content-Type": "application/json"}
        )
        response = conn.getresponse()
        answer = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"gateway sync answered {response.status}: {answer[:200]!r}")
    table = json.loads(answer)["table"]
    token: str = table["deployments"][deployment]["revisions"][0]["token"]
    return token


def argument_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose description is the first paragraph of the script's docstring."""
    return argparse.ArgumentParser(description=doc.split("\n\n", 1)[0] if doc else "")


# the machine -----------------------------------------------------------------------------------
def load_average() -> str:
    """Other processes on the machine skew every figure; the output says how busy it was."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg()) + " (1, 5, 15 min)"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    """CPUs, memory, kernel and Python, for the head of a report."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} CPUs ({cpu_model()}), {memory:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])
    return total - values[3] - values[4], total


# figures and verdicts --------------------------------------------------------------------------
def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def goal(text: str, passed: bool) -> str:
    """The tail of a goal line: ``goal >= 0.8x  PASS``."""
    return f"goal {text}  {verdict(passed)}"


# the peers' virtual environments ----------------------------------------------------------------
def pip_install(python: Path, *args: str, check: bool = True) -> bool:
    """``pip install`` into the environment of ``python``; a failure raises (or, unless
    ``check``, prints pip's last line and returns False)."""
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if done.returncode == 0:
        return True
    tail = done.stderr.decode(errors="replace").strip().splitlines()
    if check:
        raise RuntimeError("pip install failed: " + " | ".join(tail[-3:]))
    print(tail[-1] if tail else "pip install failed", flush=True)
    return False


def _install_loosened(python: Path, requirement: str) -> list[str]:
    """Install ``requirement`` without the dependency pins the package index cannot meet.

    The package index this machine reaches can lag behind a release's pins (kfp 2.17.3 asks for
    a certifi newer than it holds): install the package alone, then each dependency, and where a
    pin cannot be met, the newest release of that dependency. Returns the pins loosened.
    """
    if not pip_install(python, "--no-deps", requirement, check=False):
        raise RuntimeError(f"pip could not install {requirement}")
    name = requirement.split("=")[0].split(">")[0].split("<")[0].strip()
    listed = subprocess.run(
        [
            str(python),
            "-c",
            f"import importlib.metadata as m; print(*m.requires({name!r}), sep=chr(10))",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    dependencies = [line for line in listed.stdout.splitlines() if line and "extra ==" not in line]
    if pip_install(python, *dependencies, check=False):
        return []
    loosened: list[str] = []
    for dependency in dependencies:
        if not pip_install(python, dependency, check=False):
            bare = dependency.split(";")[0]
            for mark in "=<>!~":
                bare = bare.split(mark)[0]
            if not pip_install(python, bare.strip(), check=False):
                raise RuntimeError(f"pip could not install {bare.strip()} for {requirement}")
            loosened.append(dependency)
    return loosened


def ensure_venv(
    name: str, requirements: Sequence[str], *, loosen: bool = False
) -> tuple[Path, list[str]]:
    """``bench/.venvs/NAME`` with ``requirements`` installed (created once, not timed): its
    Python, and notes for the report. With ``loosen``, a first requirement whose dependency pins
    the package index cannot meet is installed with the newest releases instead, and noted."""
    folder = VENVS / name
    python = folder / "bin" / "python"
    stamp = folder / ".bench-requirement"
    requirement = " ".join(requirements)
    if python.exists() and stamp.exists():
        lines = stamp.read_text().splitlines()
        if lines[:1] == [requirement]:
            return python, lines[1:]
    print(f"creating {folder} with {requirement} (once; not timed) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    notes: list[str] = []
    if not pip_install(python, *requirements, check=not loosen):
        loosened = _install_loosened(python, requirements[0])
        if requirements[1:]:
            pip_install(python, *requirements[1:])
        notes = [
            f"pin not available here, newest release installed instead: {pin}" for pin in loosened
        ]
    stamp.write_text("\n".join([requirement, *notes]) + "\n")
    return python, notes


def venv_version(name: str, distribution: str) -> str:
    """The installed version of ``distribution`` in ``bench/.venvs/NAME``."""
    python = VENVS / name / "bin" / "python"
    code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
    return subprocess.run(
        [str(python), "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()


# processes, from /proc ---------------------------------------------------------------------------
Ident = tuple[int, int]  # a process: its pid and its start time, so a reused pid never matches


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first); None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def children_map() -> dict[int, list[int]]:
    """Each process's children, as /proc shows them now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := proc_stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def process_tree(root: int) -> list[int]:
    """``root`` and every process descending from it, as /proc shows them now."""
    children = children_map()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def process_label(pid: int) -> str:
    """A short name for a process: the module or script a Python runs, else its command."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    argv = [arg for arg in argv if arg]
    if not argv:
        return "?"
    if len(argv) == 1 and not argv[0].startswith("ray::"):
        argv = argv[0].split()  # a process that rewrote its title into one string
    if "python" in Path(argv[0]).name:
        args = iter(argv[1:])
        for arg in args:
            if arg == "-m":
                return next(args, "python -m")
            if arg == "-c":
                code = next(args, "")
                return "multiprocessing child" if "multiprocessing" in code else "python -c"
            if not arg.startswith("-"):
                return Path(arg).name
        return "python"
    if argv[0].startswith("ray::"):  # an actor's title, with the method it runs now
        return argv[0].split(".", 1)[0][:40]
    return Path(argv[0]).name[:40]


def tree_cpu(root: int) -> dict[int, tuple[str, float]]:
    """CPU seconds of each process of a tree (its own, and the children it has reaped)."""
    found: dict[int, tuple[str, float]] = {}
    for pid in process_tree(root):
        fields = proc_stat(pid)
        if fields is not None:
            ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
            found[pid] = (process_label(pid), ticks / CLOCK_TICKS)
    return found


def ident(pid: int) -> Ident | None:
    fields = proc_stat(pid)
    return None if fields is None or fields[0] == "Z" else (pid, int(fields[19]))


def alive(process: Ident) -> bool:
    return ident(process[0]) == process


def signal_each(processes: Iterable[Ident], signum: int) -> None:
    """``signum`` to each process still alive (a reused pid is never signalled)."""
    for process in processes:
        if alive(process):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(process[0], signum)


def tree_idents(root: int) -> set[Ident]:
    return {found for pid in process_tree(root) if (found := ident(pid)) is not None}


def stop_tree(
    process: subprocess.Popen[bytes], name: str, grace: float, seen: Iterable[Ident] = ()
) -> None:
    """SIGTERM to ``process``, which stops its own children; whatever of its tree (seen before,
    ``seen``, or while it stops) is still there once it exited, or after ``grace`` seconds, gets
    SIGTERM, then SIGKILL: a replica outlives its parent if that dies first."""
    root = process.pid
    tree = set(seen) | tree_idents(root)
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while process.poll() is None and time.monotonic() < deadline:
        tree |= tree_idents(root)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.1)
    left = {found for found in tree if found[0] != root and alive(found)}
    if left:
        names = Counter(process_label(pid) for pid, _ in left)
        how = "exited" if process.poll() is not None else "ignored SIGTERM"
        print(
            f"  note: {name}: {len(left)} process(es) still running after its main "
            f"process {how} ({', '.join(f'{n} x{c}' for n, c in names.items())}): stopped",
            flush=True,
        )
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(root, signum)  # the group is surely still this process's
        signal_each(left, signum)
        with contextlib.suppress(TimeoutError):  # SIGKILL next; the last wait() is unbounded
            wait_for(
                lambda: process.poll() is not None and not any(map(alive, left)),
                5.0,
                f"{name} to stop",
                0.05,
            )
    process.wait()
