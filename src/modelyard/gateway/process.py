"""Running the gateway as its own process beside a local control plane (``modelyard up``).

The gateway outlives a control plane that crashes (own session, pid file): the next ``up`` adopts
it instead of starting a second one on the same port. While ``up`` runs it restarts a gateway
that exits (crashed, killed or stopped by hand) on the same port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from modelyard.errors import ServerUnreachable

log = logging.getLogger(__name__)
WATCH_SECONDS = 0.2


class GatewayProcess:
    def __init__(self, home: Path, host: str, port: int, *, access_log: bool = False) -> None:
        self.home = home
        self.host = host
        self.port = port
        self.access_log = access_log
        self.pid: int | None = None
        self.popen: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.home / "gateway.pid"

    def start(self, env: dict[str, str]) -> str:
        """Start (or adopt) the gateway; returns its URL once it answers."""
        if self._adopt():
            return self.url
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(1024)
        self.port = sock.getsockname()[1]
        command = [
            sys.executable,
            "-m",
            "modelyard.gateway",
            "--control-plane",
            env["MODELYARD_URL"],
            "--fd",
            str(sock.fileno()),
            "--state-dir",
            str(self.home / "gateway"),
        ]
        if self.access_log:
            command.append("--access-log")
        with open(self.home / "gateway.log", "ab") as log:
            self.popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=[sock.fileno()],
                start_new_session=True,
                env={**os.environ, **env},
            )
        sock.close()
        self.pid = self.popen.pid
        self.pidfile.write_text(f"{self.pid} {self.port}\n")
        deadline = time.monotonic() + 30
        while not self._answers():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise ServerUnreachable(
                    f"the gateway did not start on {self.url}: see {self.home / 'gateway.log'}"
                )
            time.sleep(0.05)
        return self.url

    def watch(self, env: dict[str, str]) -> None:
        """Restart the gateway whenever it exits, until `stop`."""

        def loop() -> None:
            while not self._stopping.wait(WATCH_SECONDS):
                if self._alive():
                    continue
                log.warning("the gateway (pid %s) exited: starting it again", self.pid)
                try:
                    self.start(env)
                except (OSError, ServerUnreachable) as exc:
                    log.error("could not restart the gateway: %s", exc)

        self._watcher = threading.Thread(target=loop, name="gateway.watch", daemon=True)
        self._watcher.start()

    def _alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _adopt(self) -> bool:
        try:
            pid, port = (int(v) for v in self.pidfile.read_text().split())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        self.port = port
        if not self._answers():
            return False
        self.pid = pid
        return True

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout)
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen is not None:
                if self.popen.poll() is not None:
                    break
            else:
                try:
                    os.kill(self.pid, 0)
                except ProcessLookupError:
                    break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)
        self.pid = None
