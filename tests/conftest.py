"""Real small collaborators for every test: a SQLite file or a fresh PostgreSQL database, a blob
folder or a real S3-compatible server, and the API on a free port in a thread."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
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
    condition: Callable[[], bool],
    timeout: float = 10.0,
    what: str = "the condition",
    interval: float = 0.005,
) -> None:
    """Wait on a condition with a deadline (never a bare sleep); ``interval`` between checks."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class Platform:
    """``modelyard up`` as a real process: control plane, gateway and replicas."""

    def __init__(self, home: Path, database_url: str) -> None:
        self.home, self.port, self.gateway_port = home, free_port(), free_port()
        self.env = {
            **os.environ,
            "MODELYARD_HOME": str(home),
            "MODELYARD_API_PORT": str(self.port),
            "MODELYARD_GATEWAY_PORT": str(self.gateway_port),
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

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

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
        """The gateway (found by its command line, which names this home) and the replicas."""
        states = [*self.home.glob("replicas/*.json"), *self.home.glob("realtime/workers/*.json")]
        pids = [int(json.loads(s.read_text())["pid"]) for s in states]
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                if str(self.home).encode() in cmdline.read_bytes():
                    pids.append(int(cmdline.parent.name))
        return pids

    def stop(self) -> None:
        """Teardown: kill the platform and its data plane, whatever the test got to."""
        if self.process is not None and self.process.poll() is None:
            self.kill()
        for pid in self.data_plane_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def platforms() -> Iterator[list[Platform]]:
    started: list[Platform] = []
    yield started
    for platform in started:
        platform.stop()


def iris_model(folder: Path, *, max_iter: int = 500) -> Path:
    """A real scikit-learn model (iris ships with scikit-learn) as ``folder/model.joblib``;
    a different ``max_iter`` gives a model with different predictions."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # a few iterations on purpose: a different model
        warnings.simplefilter("ignore")
        model = LogisticRegression(max_iter=max_iter).fit(features, labels)
    joblib.dump(model, folder / "model.joblib")
    return folder


def infer_body(rows: list[list[float]]) -> dict[str, object]:
    """An OIP v2 request for the iris model."""
    return {
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(rows), 4],
                "datatype": "FP64",
                "data": [x for row in rows for x in row],
            }
        ]
    }


class Serving:
    """A started platform with a namespace ``team``: the SDK, the gateway and the admin key."""

    def __init__(self, platform: Platform, client: Client) -> None:
        self.platform = platform
        self.client = client
        self.gateway = platform.gateway
        self.token = client.api_key or ""
        self.http = httpx.Client(
            base_url=self.gateway, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def load(
        self,
        deployment: str,
        rows: list[list[float]],
        workers: int,
        body: dict[str, object] | None = None,
    ) -> Load:
        return Load(self, deployment, body or infer_body(rows), workers)

    def infer(self, deployment: str, rows: list[list[float]], **kwargs: object) -> httpx.Response:
        return self.http.post(
            f"/team/{deployment}/v2/models/{deployment}/infer", json=infer_body(rows), **kwargs
        )


class Load:
    """Closed-loop inference from ``workers`` threads while the block runs; every answer that is
    not 200 is kept in ``failures``."""

    def __init__(self, serving: Serving, deployment: str, body: dict[str, object], workers: int):
        self.serving, self.deployment, self.body = serving, deployment, body
        self.answered = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(workers)]

    def _run(self) -> None:
        path = f"/team/{self.deployment}/v2/models/{self.deployment}/infer"
        auth = {"Authorization": f"Bearer {self.serving.token}"}
        with httpx.Client(base_url=self.serving.gateway, headers=auth, timeout=30) as http:
            while not self._done.is_set():
                answer = http.post(path, json=self.body)
                with self._lock:
                    self.answered += 1
                    if answer.status_code != 200:
                        self.failures.append(f"{answer.status_code} {answer.text}")

    def snapshot(self) -> tuple[int, int]:
        """(answered, failed) so far."""
        with self._lock:
            return self.answered, len(self.failures)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(30)


@pytest.fixture
def serving(platforms: list[Platform], tmp_path: Path) -> Iterator[Serving]:
    platform = Platform(tmp_path / "home", f"sqlite:///{tmp_path / 'serving.db'}")
    platforms.append(platform)
    client = platform.start()
    client.create_namespace("team")
    env = Serving(platform, client)
    yield env
    env.http.close()
    client.close()
