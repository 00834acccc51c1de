"""The realtime backends, both sets: embedded (SQLite files) and at scale (PostgreSQL for the
raw log, NATS JetStream for the queue, Redis for predictions). Tests take the fixtures and run on
every backend of their family; ``serving`` starts a platform on each backend set."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.realtime.backends import (
    open_event_store,
    open_prediction_store,
    open_trigger_queue,
)
from modelyard.realtime.eventstore import EventStore
from modelyard.realtime.predictions import PredictionStore
from modelyard.realtime.queue import TriggerQueue
from modelyard.testing import Platform
from tests.conftest import Serving

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["sqlite", "postgresql"])
def events_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'realtime' / 'events.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def event_store(events_url: str) -> Iterator[EventStore]:
    store = open_event_store(events_url)
    yield store
    store.close()


NATS_URL = "nats://127.0.0.1:4222"


@pytest.fixture
def nats_url() -> Iterator[str]:
    """A queue URL with a prefix of its own on the development NATS server; its streams and
    cursors are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield f"{NATS_URL}?prefix={prefix}"
    asyncio.run(_delete_nats(prefix))


async def _delete_nats(prefix: str) -> None:
    import nats
    from nats.js.errors import NotFoundError

    try:
        nc = await nats.connect(NATS_URL, connect_timeout=3)
    except Exception:
        return
    js = nc.jetstream()
    for name in (f"{prefix}_triggers", f"{prefix}_dead", f"KV_{prefix}_cursors"):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)
    await nc.close()


@pytest.fixture(params=["sqlite", "nats"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "nats":
        return str(request.getfixturevalue("nats_url"))
    return f"sqlite:///{tmp_path / 'realtime' / 'queue.db'}"


@pytest.fixture
def queue(queue_url: str) -> Iterator[TriggerQueue]:
    opened = open_trigger_queue(queue_url)
    yield opened
    opened.close()


@pytest.fixture(params=["sqlite", "redis"])
def predictions_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return f"{REDIS_URL}?prefix=test-{uuid.uuid4().hex[:12]}"
    return f"sqlite:///{tmp_path / 'realtime' / 'predictions.db'}"


@pytest.fixture
def prediction_store(predictions_url: str) -> Iterator[PredictionStore]:
    opened = open_prediction_store(predictions_url)
    yield opened
    opened.drop("team/scorer")
    opened.close()


@pytest.fixture(params=["embedded", "scale"])
def realtime_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The environment of a platform on each backend set: embedded (nothing: SQLite files under
    the home) and at scale (PostgreSQL raw log, NATS JetStream queue, Redis predictions)."""
    if request.param == "embedded":
        yield {}
        return
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield {
        "MODELYARD_REALTIME_EVENTS_URL": str(request.getfixturevalue("pg_url")),
        "MODELYARD_REALTIME_QUEUE_URL": str(request.getfixturevalue("nats_url")),
        "MODELYARD_REALTIME_PREDICTIONS_URL": f"{REDIS_URL}?prefix={prefix}",
    }
    import redis

    with redis.Redis.from_url(REDIS_URL) as connection:
        for key in connection.scan_iter(match=f"{prefix}*", count=1000):
            connection.delete(key)


@pytest.fixture
def serving(
    realtime_env: dict[str, str], platforms: list[Platform], tmp_path: Path
) -> Iterator[Serving]:
    """A started platform with a namespace ``team``, on each backend set."""
    platform = Platform(tmp_path / "home", f"sqlite:///{tmp_path / 'serving.db'}")
    platform.env.update(realtime_env)
    platforms.append(platform)
    client = platform.start()
    client.create_namespace("team")
    env = Serving(platform, client)
    yield env
    env.http.close()
    client.close()


def events_url_of(serving: Serving) -> str:
    """The raw log's URL of a platform the ``serving`` fixture started."""
    default = f"sqlite:///{serving.platform.home / 'realtime' / 'events.db'}"
    return serving.platform.env.get("MODELYARD_REALTIME_EVENTS_URL", default)
