"""Backpressure as pure logic, and 429 with Retry-After from a real gateway beyond the lag."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from modelyard.realtime.lag import Backpressure, Lag
from modelyard.testing import Platform, wait_for
from tests.conftest import Serving


def test_backpressure_decisions() -> None:
    limits = Backpressure(limit_events=100, limit_seconds=5.0)
    assert limits.check(Lag(100, 5.0)) is None
    refused = limits.check(Lag(101, 0.0))
    assert refused is not None and refused.retry_after_s == 1 and "101 events" in refused.message
    late = limits.check(Lag(3, 12.5))
    assert late is not None and late.retry_after_s == 8
    assert Backpressure(limit_events=10).check(Lag(5, 3600)) is None  # no age limit by default
    assert limits.check(Lag(10**9, 10**6)).retry_after_s == 30  # type: ignore[union-attr]


@pytest.mark.slow
def test_ingest_answers_429_beyond_the_lag_and_recovers(
    platforms: list[Platform], tmp_path: Path, realtime_env: dict[str, str]
) -> None:
    platform = Platform(tmp_path / "home", f"sqlite:///{tmp_path / 'db.sqlite'}")
    platform.env.update(realtime_env)
    platform.env["MODELYARD_REALTIME_MAX_LAG"] = "20"
    platforms.append(platform)
    client = platform.start()
    client.create_namespace("team")
    serving = Serving(platform, client)
    client.gateway_url = serving.gateway
    client.realtime.create_stream("team", "clicks")
    # a function that cannot load: its worker never gets to the events
    client.realtime.create(
        "team", "scorer", stream="clicks", function="tests.realtime.nowhere:score"
    )
    path = "/team/streams/clicks/events"
    batch = [{"event_id": f"e{i}", "user_id": "u", "type": "cart"} for i in range(30)]
    wait_for(lambda: serving.http.post(path, json=batch).status_code == 200, 30, "the stream")

    def refused() -> httpx.Response | None:
        answer = serving.http.post(path, json={"event_id": "late", "user_id": "u"})
        return answer if answer.status_code == 429 else None

    wait_for(lambda: refused() is not None, 10, "a 429")
    answer = refused()
    assert answer is not None and int(answer.headers["retry-after"]) >= 1
    assert answer.json()["error"]["code"] == "overloaded"
    client.realtime.update("team", "scorer", function="tests.realtime.functions:flaky")
    wait_for(lambda: client.realtime.lag("team", "scorer")["events"] == 0, 60, "the lag to go")
    wait_for(lambda: refused() is None, 10, "ingest to accept again")
    serving.http.close()
    client.close()
