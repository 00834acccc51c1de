"""Real small collaborators for every test: a SQLite file or a fresh PostgreSQL database, a blob
folder or a real S3-compatible server, and the API on a free port in a thread."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.controlplane import ControlPlane
from modelyard.settings import Settings

PG_ADMIN_URL = os.environ.get("MODELYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def unavailable(reason: str) -> None:
    """Fail on CI, where every service must be there; skip elsewhere, saying why."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the service must be available)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> str:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            pass
    except Exception as exc:
        unavailable(f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {exc}")
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"modelyard_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = pg_server.rsplit("/", 1)[0]
    yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'home' / 'modelyard.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", api_port=0)


@pytest.fixture
def plane(settings: Settings) -> Iterator[ControlPlane]:
    cp = ControlPlane.build(settings)
    yield cp
    cp.close()


@pytest.fixture
def server(plane: ControlPlane) -> Iterator[BackgroundServer]:
    plane.ensure_admin_key()
    with BackgroundServer(plane) as running:
        yield running


@pytest.fixture
def admin(server: BackgroundServer, tmp_path: Path) -> Iterator[Client]:
    token = server.plane.settings.admin_key_path.read_text().strip()
    with Client(server.url, token, cache_dir=tmp_path / "client-cache") as client:
        yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Clock:
    """A settable clock for the services that take one (schedules, GC)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def wait_for(
    condition: Callable[[], bool], timeout: float = 10.0, what: str = "the condition"
) -> None:
    """Wait on a condition with a deadline (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Platform:
    def __init__(self, home: Path, database_url: str) -> None:
        self.home, self.port = home, free_port()
        self.env = {
            **os.environ,
            "MODELYARD_HOME": str(home),
            "MODELYARD_API_PORT": str(self.port),
            "MODELYARD_DATABASE_URL": database_url,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Client:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelyard", "up"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{self.port}/api/v1/health").is_success
            except httpx.TransportError:
                return False

        wait_for(healthy, 30, "the control plane to start")
        token = (self.home / "admin.key").read_text().strip()
        return Client(f"http://127.0.0.1:{self.port}", token, cache_dir=self.home / "pulled")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """Teardown: kill the platform if it still runs, whatever the test got to."""
        if self.process is not None and self.process.poll() is None:
            self.kill()


@pytest.fixture
def platforms() -> Iterator[list[Platform]]:
    started: list[Platform] = []
    yield started
    for platform in started:
        platform.stop()
