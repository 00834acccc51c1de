"""Shadow revisions of a realtime deployment: under the ``shadow`` strategy a new revision's
worker consumes the same stream with its own cursor and writes its predictions aside (read with
``?revision=shadow``, compared with the primary's, never served) until it is promoted (it
becomes the primary) or rolled back (what it wrote aside is dropped). Canary weights stay 422."""

from __future__ import annotations

import time
from typing import Any

import pytest

from modelyard.errors import InvalidInput
from modelyard.realtime.backends import open_prediction_store
from modelyard.realtime.eventstore import EventStore
from modelyard.realtime.predictions import Prediction, PredictionStore
from modelyard.realtime.queue import TriggerQueue
from modelyard.realtime.shadow import Comparison, same
from modelyard.realtime.worker import Worker
from modelyard.testing import wait_for
from tests.conftest import Serving
from tests.realtime.test_end_to_end import _event, setup
from tests.realtime.test_worker import D, S, drain, events, spec


def test_a_shadow_worker_writes_aside_from_the_primarys_cursor(
    event_store: EventStore, queue: TriggerQueue, prediction_store: PredictionStore
) -> None:
    primary = Worker(D, spec(), event_store, queue, prediction_store, None)
    event_store.append(S, events(6), 1.0)
    drain(primary)
    shadow = Worker(D, spec(), event_store, queue, prediction_store, None)
    shadow.shadow(2)
    assert queue.cursor(shadow.deployment) == queue.cursor(D)  # nothing before it runs again
    event_store.append(S, events(12)[6:], 2.0)
    drain(primary)
    drain(shadow)
    made = [
        p.event_id
        for entity in ("u1", "u2")
        for p in prediction_store.history(shadow.deployment, entity, 100, 0.0)
    ]
    assert sorted(made) == ["e6", "e9"]  # the triggers after the primary's cursor
    assert prediction_store.count(D) == 4  # e0, e3, e6, e9: the primary's own
    comparison = shadow.comparison
    assert comparison is not None
    assert comparison.check() == 2 and comparison.take() == {
        "match": 2,
        "mismatch": 0,
        "missing": 0,
    }
    shadow.drop(shadow.deployment)
    assert prediction_store.count(shadow.deployment) == 0 and queue.cursor(shadow.deployment) == 0
    prediction_store.drop(shadow.deployment)


def test_a_comparison_waits_for_the_primary_then_counts_it_missing(
    prediction_store: PredictionStore,
) -> None:
    now = [time.time()]  # Redis expires predictions by the real clock
    comparison = Comparison(D, prediction_store, lambda: now[0], wait_s=5)

    def prediction(deployment: str, event_id: str, value: Any) -> Prediction:
        return Prediction(
            deployment=deployment,
            entity="u1",
            value=value,
            model=None,
            event_id=event_id,
            seq=int(event_id[1:]),
            event_time=1.0,
            written_at=now[0],
            expires_at=now[0] + 3600,
        )

    comparison.add(prediction(f"{D}~2", "e1", {"p": 0.5}))
    comparison.add(prediction(f"{D}~2", "e2", {"p": 0.5}))
    comparison.add(prediction(f"{D}~2", "e3", [1, 2]))
    prediction_store.put(prediction(D, "e1", {"p": 0.5 + 1e-9}))
    prediction_store.put(prediction(D, "e2", {"p": 0.7}))
    assert comparison.check() == 2  # e3 waits for the primary
    now[0] += 5
    assert comparison.check() == 1
    assert comparison.take() == {"match": 1, "mismatch": 1, "missing": 1}
    assert not same(True, 1) and same([1.0, {"a": "x"}], (1, {"a": "x"}))


def _read(serving: Serving, entity: str, revision: str | None = None) -> dict[str, Any] | None:
    params = {"revision": revision} if revision else {}
    answer = serving.http.get(f"/team/predictions/scorer/{entity}", params=params)
    return answer.json() if answer.status_code == 200 else None


def _has(serving: Serving, entity: str, event_id: str, revision: str | None = None) -> bool:
    found = _read(serving, entity, revision)
    return found is not None and found["event_id"] == event_id


def _rollout_running(serving: Serving, revision: int) -> bool:
    found = serving.client.rollouts("team", "scorer")
    return bool(found) and found[0].canary == revision and found[0].state == "running"


@pytest.mark.slow
def test_shadow_promote_and_rollback(serving: Serving) -> None:
    setup(serving)
    client, rt = serving.client, serving.client.realtime
    stream = client.stream("team", "clicks")
    with pytest.raises(InvalidInput, match="no canary"):
        client.set_strategy("team", "scorer", strategy="canary")
    client.set_strategy("team", "scorer", strategy="shadow")
    assert _read(serving, "u1", "shadow") is None  # no shadow yet: 404
    no_shadow = serving.http.get("/team/predictions/scorer/u1", params={"revision": "shadow"})
    assert no_shadow.status_code == 404 and "no shadow revision" in no_shadow.text
    assert serving.http.get("/team/predictions/scorer/u1?revision=7").status_code == 422
    stream.send(_event(1, "u1"))
    wait_for(lambda: _has(serving, "u1", "e1"), 60, "revision 1's prediction")

    rt.update("team", "scorer", function="tests.realtime.functions:score_v2")
    wait_for(lambda: _rollout_running(serving, 2), 60, "revision 2 as the shadow")
    stream.send_many([_event(i, "u1") for i in (2, 3, 4)])
    wait_for(lambda: _has(serving, "u1", "e4", "shadow"), 60, "the shadow's prediction of e4")
    wait_for(lambda: _has(serving, "u1", "e4"), 60, "the primary's prediction of e4")
    shadowed = _read(serving, "u1", "shadow")
    served = _read(serving, "u1")
    assert shadowed is not None and served is not None
    assert shadowed["value"]["v"] == 2 and "v" not in served["value"]  # never served
    history = rt.prediction_history("team", "scorer", "u1", shadow=True)
    assert [p.event_id for p in history] == ["e4", "e3", "e2"]  # from the primary's cursor on
    assert rt.prediction("team", "scorer", "u1", shadow=True).value["v"] == 2

    def compared() -> dict[str, int]:
        return client.rollouts("team", "scorer")[0].shadow or {}

    wait_for(lambda: compared().get("mismatch", 0) >= 3, 30, "the comparison of e2..e4")
    assert compared().get("match", 0) == 0
    assert client.rollout_action("team", "scorer", "promote").state == "promoted"
    sent = iter(range(100, 10_000))

    def promoted() -> bool:
        # the old worker stops and the shadow takes over within about a second
        found = _read(serving, "u1")
        if found is not None and found["value"].get("v") == 2:
            return True
        stream.send(_event(next(sent), "u1"))
        return False

    wait_for(promoted, 60, "a prediction of the promoted revision", 0.2)
    wait_for(lambda: _read(serving, "u1", "shadow") is None, 30, "no shadow any more")

    # a rolled back shadow: its predictions aside are dropped, the primary goes on
    rt.update("team", "scorer", function="tests.realtime.functions:score")
    wait_for(lambda: _rollout_running(serving, 3), 60, "revision 3 as the shadow")
    stream.send(_event(6, "u1"))
    wait_for(lambda: _has(serving, "u1", "e6", "shadow"), 60, "the shadow's prediction of e6")
    assert client.rollout_action("team", "scorer", "rollback").state == "rolled_back"
    default = f"sqlite:///{serving.platform.home / 'realtime' / 'predictions.db'}"
    url = serving.platform.env.get("MODELYARD_REALTIME_PREDICTIONS_URL", default)
    store = open_prediction_store(url)
    try:
        wait_for(lambda: store.count("team/scorer~3") == 0, 30, "the shadow's predictions gone")
    finally:
        store.close()
    stream.send(_event(10_007, "u1"))
    wait_for(lambda: _has(serving, "u1", "e10007"), 60, "revision 2's prediction of it")
    found = _read(serving, "u1")
    assert found is not None and found["value"]["v"] == 2
