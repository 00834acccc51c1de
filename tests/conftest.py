"""Real small collaborators for every test: a SQLite file or a fresh PostgreSQL database, a blob
folder or a real S3-compatible server, and the API on a free port in a thread."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.controlplane import ControlPlane
from modelyard.settings import Settings
from modelyard.testing import ClosedLoop, Platform

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


class Clock:
    """A settable clock for the services that take one (schedules, GC)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


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

    def restart(self) -> Client:
        """Start the platform again: its new admin client replaces the old one, closed."""
        self.client.close()
        self.client = self.platform.start()
        return self.client

    def load(
        self,
        deployment: str,
        rows: list[list[float]],
        workers: int,
        body: dict[str, object] | None = None,
    ) -> Load:
        return Load(self, deployment, body or infer_body(rows), workers)

    def infer(self, deployment: str, rows: list[list[float]], **kwargs: Any) -> httpx.Response:
        return self.http.post(
            f"/team/{deployment}/v2/models/{deployment}/infer", json=infer_body(rows), **kwargs
        )


class Load(ClosedLoop):
    """Closed-loop inference from ``workers`` clients while the block runs; every answer that is
    not 200 is kept in ``failures``."""

    def __init__(self, serving: Serving, deployment: str, body: dict[str, object], workers: int):
        path = f"/team/{deployment}/v2/models/{deployment}/infer"
        auth = {"Authorization": f"Bearer {serving.token}"}

        @contextlib.contextmanager
        def connect() -> Iterator[Callable[[], str | None]]:
            with httpx.Client(base_url=serving.gateway, headers=auth, timeout=30) as http:

                def call() -> str | None:
                    answer = http.post(path, json=body)
                    return (
                        None if answer.status_code == 200 else f"{answer.status_code} {answer.text}"
                    )

                yield call

        super().__init__(connect, workers)

    def __enter__(self) -> Load:
        super().__enter__()
        return self


@pytest.fixture
def serving(platforms: list[Platform], tmp_path: Path) -> Iterator[Serving]:
    platform = Platform(tmp_path / "home", f"sqlite:///{tmp_path / 'serving.db'}")
    platforms.append(platform)
    client = platform.start()
    client.create_namespace("team")
    env = Serving(platform, client)
    yield env
    env.http.close()
    env.client.close()
