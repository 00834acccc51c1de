"""Progressive delivery with real replicas behind the real gateway: judged canaries that are
promoted or rolled back by themselves, sticky A/B, and shadow traffic."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.registry.records import VersionSpec
from modelyard.testing import wait_for
from tests.conftest import Serving

pytestmark = pytest.mark.slow
PYTHON = VersionSpec(runtime="python")
ERROR_RATE = 0.05
# The canary's weight in the first step; each step needs MIN_REQUESTS on both sides to judge.
FIRST_STEP = 20
MIN_REQUESTS = 50


def model(folder: Path, *, delay: float = 0.004, fail_every: int = 0, offset: float = 0.0) -> Path:
    """A python model that sleeps ``delay`` per call and fails every ``fail_every``-th call of a
    replica (exactly 1/fail_every of its requests, no sampling noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(
        textwrap.dedent(
            f"""
            import itertools
            import time

            calls = itertools.count(1)


            def predict(inputs):
                time.sleep({delay})
                if {fail_every} and next(calls) % {fail_every} == 0:
                    raise RuntimeError("this version fails one call in {fail_every}")
                return {{"total": inputs["x"].sum(axis=1) + {offset}}}
            """
        )
    )
    return folder


def body(value: float = 1.0) -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [value, 2.0]}]}


def deploy_stable(serving: Serving, tmp_path: Path) -> None:
    serving.client.push("team/api", model(tmp_path / "v1"), PYTHON)
    serving.client.create_deployment(
        "team", "api", "api@latest", autoscaling={"min_replicas": 1, "max_replicas": 1}
    )
    serving.client.set_strategy(
        "team",
        "api",
        strategy="canary",
        steps=[FIRST_STEP, 50, 100],
        min_step_seconds=1,
        max_step_seconds=120,
        analysis={"min_requests": MIN_REQUESTS},
    )
    serving.client.wait_deployment("team", "api", timeout=60)


def serves(serving: Serving, number: int) -> bool:
    revisions = serving.client.get_deployment("team", "api").revisions
    return any(r.number == number and r.percent == 100 for r in revisions)


def rollout_state(serving: Serving) -> str | None:
    found = serving.client.rollouts("team", "api")
    return found[0].state if found else None


def test_a_good_version_is_promoted(serving: Serving, tmp_path: Path) -> None:
    deploy_stable(serving, tmp_path)
    with serving.load("api", [], workers=4, body=body()) as traffic:
        serving.client.push("team/api", model(tmp_path / "v2", offset=0.0), PYTHON)
        wait_for(lambda: rollout_state(serving) == "promoted", 120, "the promotion", 0.2)
    assert traffic.failures == []
    rollout = serving.client.rollouts("team", "api")[0]
    assert (rollout.stable, rollout.canary) == (1, 2)
    assert [a["result"] for a in rollout.analyses] == ["pass", "pass"]
    assert [a["percent"] for a in rollout.analyses] == [FIRST_STEP, 50]
    info = serving.client.get_deployment("team", "api")
    assert {r.number: r.percent for r in info.revisions} == {1: 0, 2: 100}
    history = [e.type for e in serving.client.deployment_history("team", "api")]
    assert history.index("rollout.started") < history.index("rollout.promoted")


@pytest.mark.parametrize(
    ("bad", "verdict"),
    [
        ({"fail_every": round(1 / ERROR_RATE)}, "error rate"),
        ({"delay": 0.012}, "latency"),  # 3x the stable version's 4 ms
    ],
    ids=["5-percent-errors", "3x-slower"],
)
def test_a_bad_version_is_rolled_back(
    serving: Serving, tmp_path: Path, bad: dict[str, Any], verdict: str
) -> None:
    deploy_stable(serving, tmp_path)
    # Eight clients: the one stable replica, with 90% of the traffic, queues requests and is
    # slower end to end than the canary; the judge compares the replicas' service times.
    with serving.load("api", [], workers=8, body=body()) as traffic:
        serving.client.push("team/api", model(tmp_path / "v2", **bad), PYTHON)
        wait_for(lambda: rollout_state(serving) is not None, 60, "the rollout to start", 0.05)
        started = traffic.snapshot()
        wait_for(lambda: rollout_state(serving) == "rolled_back", 120, "the rollback", 0.05)
        ended = traffic.snapshot()
    rollout = serving.client.rollouts("team", "api")[0]
    assert rollout.reason is not None and verdict in rollout.reason, rollout.reason
    assert rollout.analyses[-1]["result"] == "fail"
    assert rollout.step == 0, "caught at the first step"
    if "delay" in bad:
        assert rollout.analyses[-1]["evidence"]["latency"]["measure"] == "service"
    info = serving.client.get_deployment("team", "api")
    assert [(r.number, r.state, r.percent) for r in info.revisions] == [
        (1, "ready", 100),
        (2, "rejected", 0),
    ]
    events = serving.client.deployment_history("team", "api")
    rolled_back = next(e for e in events if e.type == "rollout.rolled_back")
    assert rolled_back.data["analysis"]["evidence"]["canary"]["requests"] >= MIN_REQUESTS
    # The blast radius: while the canary ran, clients saw at most its weight times its error
    # rate (only errors count, latency regressions fail nothing), to within one request: the
    # replica fails every n-th call counted from its first, which the window's start cuts
    # anywhere (4 of 395 failed once: 80 canary calls, a ceiling of 3.95).
    answered, failed = ended[0] - started[0], ended[1] - started[1]
    ceiling = FIRST_STEP / 100 * (ERROR_RATE if "fail_every" in bad else 0.0)
    print(f"{failed} of {answered} requests failed during the rollout (ceiling {ceiling:.2%})")
    allowed = ceiling * answered + (1 if ceiling else 0)
    assert failed <= allowed, traffic.failures[:5]
    # Afterwards every request goes to the stable version again.
    for _ in range(20):
        answer = serving.http.post("/team/api/v2/models/api/infer", json=body())
        assert answer.status_code == 200
        assert answer.headers["x-modelyard-revision"] == "api-00001"


def test_ab_assignment_is_sticky_per_user_with_metrics_per_variant(
    serving: Serving, tmp_path: Path
) -> None:
    serving.client.push("team/api", model(tmp_path / "v1"), PYTHON)
    serving.client.create_deployment("team", "api", "api@latest")
    serving.client.wait_deployment("team", "api", timeout=60)
    serving.client.push("team/api", model(tmp_path / "v2", offset=10), PYTHON)
    wait_for(lambda: serves(serving, 2), 60, "revision 2 to serve", 0.1)
    serving.client.set_traffic(
        "team",
        "api",
        [{"revision": 1, "percent": 50, "tag": "a"}, {"revision": 2, "percent": 50, "tag": "b"}],
        sticky_header="X-User",
    )
    wait_for(lambda: _both_answer(serving), 10, "the gateway to learn the split", 0.05)
    seen: dict[str, set[str]] = {}
    for user in range(24):
        for _ in range(5):
            answer = serving.http.post(
                "/team/api/v2/models/api/infer", json=body(), headers={"X-User": f"user-{user}"}
            )
            assert answer.status_code == 200
            seen.setdefault(f"user-{user}", set()).add(answer.headers["x-modelyard-revision"])
    assert all(len(revisions) == 1 for revisions in seen.values()), seen
    per_variant = {r: sum(v == {r} for v in seen.values()) for r in ("api-00001", "api-00002")}
    assert min(per_variant.values()) > 0, per_variant
    metrics = httpx.get(f"{serving.gateway}/metrics").text
    for revision, users in per_variant.items():
        line = (
            f'modelyard_requests_total{{namespace="team",deployment="api",'
            f'revision="{revision}",code="200"}}'
        )
        counted = next(int(x.split()[-1]) for x in metrics.splitlines() if x.startswith(line))
        assert counted >= users * 5


def _both_answer(serving: Serving) -> bool:
    answers = {
        serving.http.post(
            "/team/api/v2/models/api/infer", json=body(), headers={"X-User": f"probe-{i}"}
        ).headers.get("x-modelyard-revision")
        for i in range(16)
    }
    return len(answers) == 2


def test_shadow_traffic_is_compared_and_never_answers(serving: Serving, tmp_path: Path) -> None:
    serving.client.push("team/api", model(tmp_path / "v1"), PYTHON)
    serving.client.create_deployment(
        "team", "api", "api@1", autoscaling={"min_replicas": 1, "max_replicas": 1}
    )
    serving.client.wait_deployment("team", "api", timeout=60)
    serving.client.push("team/api", model(tmp_path / "v2", offset=0.5), PYTHON)
    serving.client.update_deployment("team", "api", model="api@2")
    wait_for(lambda: serves(serving, 2), 60, "revision 2 to serve", 0.1)
    # Revision 1 answers; revision 2 gets a copy of every request, and answers 0.5 more.
    serving.client.set_traffic(
        "team", "api", [{"revision": 1, "percent": 100}], shadow={"revision": 2, "percent": 100}
    )

    def shadow_count(result: str) -> int:
        line = (
            f'modelyard_shadow_requests_total{{namespace="team",deployment="api",'
            f'revision="api-00002",result="{result}"}}'
        )
        text = httpx.get(f"{serving.gateway}/metrics").text
        return next((int(x.split()[-1]) for x in text.splitlines() if x.startswith(line)), 0)

    def served_by_one() -> bool:
        answer = serving.http.post("/team/api/v2/models/api/infer", json=body())
        revision: str | None = answer.headers.get("x-modelyard-revision")
        return revision == "api-00001"

    wait_for(served_by_one, 10, "revision 1 to take the traffic", 0.05)
    before = shadow_count("mismatch")
    for _ in range(30):
        answer = serving.http.post("/team/api/v2/models/api/infer", json=body())
        assert answer.status_code == 200
        assert answer.headers["x-modelyard-revision"] == "api-00001"
        assert answer.json()["outputs"][0]["data"] == [3.0]
    wait_for(lambda: shadow_count("mismatch") >= before + 30, 10, "30 compared copies", 0.05)
    assert shadow_count("match") == 0
    info = serving.client.get_deployment("team", "api")
    assert info.shadow is not None and info.shadow.revision == 2


def test_gateway_traffic_feeds_the_slos(serving: Serving, tmp_path: Path) -> None:
    serving.client.push("team/api", model(tmp_path / "v1", fail_every=5), PYTHON)
    serving.client.create_deployment("team", "api", "api@latest")
    serving.client.wait_deployment("team", "api", timeout=60)
    serving.client.set_slos(
        "team",
        "api",
        [
            {"name": "available", "kind": "availability", "target": 0.99},
            {"name": "fast", "kind": "latency", "target": 0.9, "threshold_ms": 1},
        ],
    )
    answers = [
        serving.http.post("/team/api/v2/models/api/infer", json=body()).status_code
        for _ in range(50)
    ]
    assert answers.count(500) == 10

    def status() -> dict[str, tuple[int, int]]:
        found = serving.client.slo_status("team", "api").objectives
        return {o.objective.name: (o.requests, o.bad) for o in found}

    wait_for(lambda: status()["available"][0] >= 50, 15, "the minutes to be recorded", 0.1)
    assert status()["available"] == (50, 10)
    # Every answer takes over a millisecond (the model sleeps 4 ms): all are slow for "fast".
    assert status()["fast"] == (50, 50)
    objectives = serving.client.slo_status("team", "api").objectives
    assert objectives[0].budget_remaining < 0, "20% errors overspend a 1% budget"
