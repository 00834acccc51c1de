"""Lag as an SLO, end to end: a realtime deployment whose worker is slow lags, the gateway's lag
samples reach the control plane's telemetry, the lag objective burns and pages; once the worker
caught up the page resolves. The burn-rate arithmetic on a simulated clock:
tests/delivery/test_slo_lag.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from modelyard.delivery.burnrate import Objective
from modelyard.delivery.slo import Slos
from modelyard.events.log import EventLog
from modelyard.realtime.history import History
from modelyard.serving.deployments import Deployments
from modelyard.store.db import Database
from modelyard.telemetry.query import Telemetry
from modelyard.testing import Platform, wait_for
from tests.conftest import Serving

SECONDS_PER_TRIGGER = 0.4
# 90 % of the time the oldest pending event waits at most 1 s: the 6-hour page holds while more
# than 60 % of the samples (6 x the 10 % budget) are over, in the half hour and the 6 hours.
LAG = Objective(name="lag-1s", kind="lag", target=0.9, threshold_s=1)


def slow(history: History, model: object) -> int:
    """A worker that needs longer per trigger than the triggers take to come."""
    time.sleep(SECONDS_PER_TRIGGER)
    return len(history)


@pytest.mark.slow
def test_a_slow_worker_pages_on_its_lag_objective_and_the_page_resolves(
    platforms: list[Platform], tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    platform = Platform(tmp_path / "home", database_url)
    platforms.append(platform)
    client = platform.start()
    client.create_namespace("team")
    serving = Serving(platform, client)
    client.realtime.create_stream("team", "clicks")
    client.realtime.create("team", "scorer", stream="clicks", function=f"{__name__}:slow")
    assert client.set_slos("team", "scorer", [LAG]) == [LAG]
    # The control plane evaluates every 30 s; this one judges the same stored minutes at the
    # test's pace (concurrent evaluations fire once).
    db = Database(database_url)
    events = EventLog(db)
    slos = Slos(events, Deployments(events), Telemetry(db, events.clock))

    def alerts(state: str) -> set[str]:
        slos.evaluate()
        return {a.rule for a in client.slo_alerts("team", "scorer") if a.state == state}

    path = "/team/streams/clicks/events"
    batch = [{"event_id": f"e{i}", "user_id": "u", "type": "cart"} for i in range(30)]
    # sent again until the gateway knows the stream: one event id is one event
    wait_for(lambda: serving.http.post(path, json=batch).status_code == 200, 30, "the stream")

    wait_for(lambda: "page-6h" in alerts("firing"), 120, "the lag objective to page", 0.5)
    status = client.slo_status("team", "scorer").objectives[0]
    assert status.requests > 0 and status.bad > 0.6 * status.requests  # samples, over 1 s

    wait_for(lambda: client.realtime.lag("team", "scorer")["events"] == 0, 120, "the worker")
    wait_for(lambda: "page-6h" in alerts("resolved"), 120, "the page to resolve", 0.5)
    slo_events = [
        (e.type, e.data["rule"], e.data["objective"])
        for e in client.events(after=0, types=["slo.alert.*"], follow=False)
        if e.data["rule"] == "page-6h"
    ]
    assert slo_events == [
        ("slo.alert.firing", "page-6h", "lag-1s"),
        ("slo.alert.resolved", "page-6h", "lag-1s"),
    ]
    db.dispose()
    serving.http.close()
    client.close()
