"""What the tests and the benchmarks share: a free port, a wait on a condition with a deadline
(never a bare sleep), a real platform (``modelyard up`` in a folder, on free ports, stopped with
its data plane) or a control plane in this process, and closed-loop load.

It ships in the package so that ``tests/`` and ``bench/`` hold no copy of it; it imports nothing
heavy until a helper that needs a server is called.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelyard.client import Client
    from modelyard.controlplane import ControlPlane

__all__ = [
    "ClosedLoop",
    "LoadResult",
    "Platform",
    "ServedPlane",
    "WaitTimeout",
    "closed_loop",
    "free_port",
    "running_platform",
    "served_plane",
    "wait_for",
]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it; another process may take it later)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class WaitTimeout(AssertionError, TimeoutError):
    """A condition still false at its deadline: an assertion to pytest, a timeout to a script."""


def wait_for(
    condition: Callable[[], object],
    timeout: float = 10.0,
    what: str = "the condition",
    interval: float = 0.005,
) -> None:
    """Check ``condition`` every ``interval`` seconds until it is true; past ``timeout`` seconds,
    raise :class:`WaitTimeout` naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# the platform as a real process --------------------------------------------------------------
class Platform:
    """``modelyard up`` as a real process in ``home``: control plane, gateway and replicas, the
    API and the gateway on free ports. :meth:`stop` kills it and its data plane, whatever state
    it is in."""

    def __init__(self, home: Path, database_url: str | None = None) -> None:
        self.home, self.port, self.gateway_port = home, free_port(), free_port()
        self.env = {
            **os.environ,
            "MODELYARD_HOME": str(home),
            "MODELYARD_API_PORT": str(self.port),
            "MODELYARD_GATEWAY_PORT": str(self.gateway_port),
        }
        if database_url is not None:
            self.env["MODELYARD_DATABASE_URL"] = database_url
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def start(self, timeout: float = 30.0) -> Client:
        """Start it, wait until the API answers, and return an admin client (the caller closes)."""
        import httpx

        from modelyard.client import Client

        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelyard", "up"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"modelyard up exited ({self.process.returncode}) on start")
            try:
                return httpx.get(f"{self.url}/api/v1/health").is_success
            except httpx.TransportError:
                return False

        wait_for(healthy, timeout, "the control plane to start")
        token = (self.home / "admin.key").read_text().strip()
        return Client(self.url, token, cache_dir=self.home / "pulled")

    def kill(self) -> None:
        """kill -9 of the control plane: the gateway and the replicas go on by design."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def interrupt(self) -> None:
        """Ctrl-C: the control plane stops its gateway and its replicas, then exits."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        self.process.wait(60)

    def gateway_pid(self) -> int:
        return int((self.home / "gateway.pid").read_text().split()[0])

    def data_plane_pids(self) -> list[int]:
        """The replicas (model servers and realtime workers) of the state files, and every process
        whose command line or environment names this home (the gateway; a replica whose state
        has no pid yet)."""
        pids: list[int] = []
        for state in self.home.glob("replicas/*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                pids.append(int(json.loads(state.read_text())["pid"]))
        home = str(self.home).encode()
        marker = b"MODELYARD_HOME=" + home + b"\0"
        for proc in Path("/proc").glob("[0-9]*"):
            if int(proc.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if home in (proc / "cmdline").read_bytes() or marker in (
                    (proc / "environ").read_bytes() + b"\0"
                ):
                    pids.append(int(proc.name))
        return pids

    def stop(self) -> None:
        """Teardown: kill the platform and its data plane, whatever it got to."""
        if self.process is not None and self.process.poll() is None:
            self.kill()
        for pid in self.data_plane_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_platform(
    home: Path | None = None, database_url: str | None = None
) -> Iterator[tuple[Platform, Client]]:
    """A started :class:`Platform` (in a temporary folder unless ``home`` is given) and its admin
    client; stopped, with its data plane, when the block ends."""
    with contextlib.ExitStack() as stack:
        if home is None:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modelyard-")))
        platform = Platform(home, database_url)
        stack.callback(platform.stop)
        client = platform.start()
        stack.callback(client.close)
        yield platform, client


# the control plane in this process ------------------------------------------------------------
@dataclass(frozen=True)
class ServedPlane:
    """A control plane in this process, its API on a loopback port, and the admin key."""

    plane: ControlPlane
    url: str
    token: str

    def client(self, cache_dir: Path) -> Client:
        from modelyard.client import Client

        return Client(self.url, self.token, cache_dir=cache_dir)


@contextlib.contextmanager
def served_plane(home: Path) -> Iterator[ServedPlane]:
    """A control plane with SQLite and a local blob folder under ``home``, its API served from a
    thread on a free port (no gateway: :func:`running_platform` is the whole platform)."""
    from modelyard.api.server import BackgroundServer
    from modelyard.controlplane import ControlPlane
    from modelyard.settings import Settings

    plane = ControlPlane.build(Settings(home=home, api_port=0))
    try:
        plane.ensure_admin_key()
        token = plane.settings.admin_key_path.read_text().strip()
        with BackgroundServer(plane) as server:
            yield ServedPlane(plane, server.url, token)
    finally:
        plane.close()


# closed-loop load ------------------------------------------------------------------------------
Call = Callable[[], str | None]
"""One request: None when it succeeded, else what went wrong (an exception counts too)."""
Connect = Callable[[], AbstractContextManager[Call]]
"""One client: entered in its thread, it gives the client's call and closes what it opened."""


@dataclass
class LoadResult:
    """What the clients saw: the seconds the load ran, the latency of each successful call, and
    what went wrong with the others."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return len(self.latencies) + len(self.errors)

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0


class ClosedLoop:
    """``clients`` threads, each sending its next call as soon as the last one answered, while the
    ``with`` block runs. ``connect`` is entered once in each thread and gives that client's call
    (``lambda: contextlib.nullcontext(call)`` for a call that holds nothing open)."""

    def __init__(self, connect: Connect, clients: int) -> None:
        self.connect = connect
        self.answered = 0
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        self._started = 0.0
        self._seconds = 0.0

    def _run(self) -> None:
        with self.connect() as call:
            self._loop(call)

    def _loop(self, call: Call) -> None:
        while not self._done.is_set():
            began = time.perf_counter()
            try:
                error = call()
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            took = time.perf_counter() - began
            with self._lock:
                self.answered += 1
                if error is None:
                    self.latencies.append(took)
                else:
                    self.failures.append(error)

    def snapshot(self) -> tuple[int, int]:
        """(answered, failed) so far."""
        with self._lock:
            return self.answered, len(self.failures)

    def result(self) -> LoadResult:
        with self._lock:
            seconds = self._seconds or time.monotonic() - self._started
            return LoadResult(seconds, list(self.latencies), list(self.failures))

    def __enter__(self) -> ClosedLoop:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(30)
        self._seconds = time.monotonic() - self._started


def closed_loop(connect: Connect, clients: int, seconds: float) -> LoadResult:
    """:class:`ClosedLoop` for ``seconds``: ``clients`` concurrent clients, latencies and errors."""
    with ClosedLoop(connect, clients) as load:
        threading.Event().wait(seconds)
    return load.result()
