"""The realtime backends, both sets: embedded (SQLite files) and at scale (PostgreSQL for the
raw log, Redis for predictions; a NATS JetStream queue is not written yet). Tests take the
fixtures and run on every backend of their family."""

from __future__ import annotations

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


@pytest.fixture(params=["sqlite"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'realtime' / 'queue.db'}"


@pytest.fixture
def queue(queue_url: str) -> Iterator[TriggerQueue]:
    opened = open_trigger_queue(queue_url)
    yield opened
    opened.close()


@pytest.fixture(params=["sqlite", "redis"])
def predictions_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return f"redis://127.0.0.1:6379/0?prefix=test-{uuid.uuid4().hex[:12]}"
    return f"sqlite:///{tmp_path / 'realtime' / 'predictions.db'}"


@pytest.fixture
def prediction_store(predictions_url: str) -> Iterator[PredictionStore]:
    opened = open_prediction_store(predictions_url)
    yield opened
    opened.drop("team/scorer")
    opened.close()
