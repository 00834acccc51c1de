"""Running the API: in the foreground (``modelyard up``) or on a background thread (embedding,
notebooks, tests)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

import uvicorn

from modelyard.api.app import create_app
from modelyard.controlplane import ControlPlane
from modelyard.errors import ServerUnreachable


def _server(
    plane: ControlPlane,
    host: str,
    port: int,
    sock: socket.socket | None = None,
    log_level: str = "warning",
) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(plane),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


def serve(
    plane: ControlPlane,
    host: str,
    port: int,
    log_level: str = "info",
    *,
    listening: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn installs the handlers). ``listening`` is called with
    the API's URL once the port accepts connections (they wait in its backlog until served)."""
    loopback = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    plane.api_url = f"http://{loopback}:{port}"
    server = _server(plane, host, port, log_level=log_level)
    if listening is None:
        server.run()
        return
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(server.config.backlog)
    listening(plane.api_url)
    server.run(sockets=[sock])


class BackgroundServer:
    """The API on a free port of 127.0.0.1, in a thread; ``url`` is set once it accepts."""

    def __init__(self, plane: ControlPlane, host: str = "127.0.0.1", port: int = 0) -> None:
        self.plane = plane
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        plane.api_url = self.url
        self.server = _server(plane, host, self.sock.getsockname()[1])
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="api", daemon=True
        )

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ServerUnreachable(f"the API did not start on {self.url}")
            time.sleep(0.01)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
