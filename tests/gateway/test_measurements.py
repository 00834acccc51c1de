"""What the gateway measures for rollouts and SLOs, how it splits traffic, and how it compares
a shadow's answers: the pure parts, on known inputs."""

from __future__ import annotations

import json
from collections import Counter

from modelyard.gateway.app import same_answer
from modelyard.gateway.metrics import BUCKETS, SAMPLES_PER_REPORT, Window
from modelyard.gateway.routes import DeploymentRoute, RevisionRoute
from modelyard.gateway.upstream import Response


def route(*percents: int) -> DeploymentRoute:
    revisions = [
        RevisionRoute(id=f"r{i}", name=f"api-{i:05d}", percent=p, tags=[], endpoints=[])
        for i, p in enumerate(percents, 1)
    ]
    return DeploymentRoute("team", "api", "serving", 60.0, 1 << 20, revisions, id="d" * 32)


def test_the_split_gives_each_revision_exactly_its_weight_in_every_hundred() -> None:
    split = route(90, 10)
    for _ in range(5):
        picked = Counter(split.pick(None).name for _ in range(100))
        assert picked == {"api-00001": 90, "api-00002": 10}


def test_sticky_keys_keep_their_revision_and_spread_by_weight() -> None:
    split = route(50, 50)
    first = {f"user-{i}": split.pick(None, f"user-{i}".encode()) for i in range(2000)}
    assert all(split.pick(None, k.encode()) is r for k, r in first.items())
    share = sum(r.name == "api-00001" for r in first.values() if r) / len(first)
    assert 0.45 < share < 0.55
    # When the canary grows, the users that move only move towards it.
    grown = route(20, 80)
    moved = [k for k, r in first.items() if r and grown.pick(None, k.encode()).name != r.name]
    assert moved and all(first[k].name == "api-00001" for k in moved)


def test_a_tag_pins_a_revision_whatever_the_weights() -> None:
    split = route(100, 0)
    split.revisions[1].tags = ["canary"]
    assert split.pick("canary").name == "api-00002"
    assert split.pick("ghost") is None


def test_the_window_counts_errors_buckets_and_samples_successful_latencies() -> None:
    window = Window()
    for i in range(SAMPLES_PER_REPORT * 3):
        failed = i % 10 == 0  # failures answer fast: they stay out of the latency sample
        window.observe("dep", "rev", 500 if failed else 200, 0.0002 if failed else 0.004)
    window.observe("dep", None, 503, 100.0)  # no revision: counts for the deployment only
    report = window.report()
    served = report["revisions"]["rev"]
    assert (served["requests"], served["errors"]) == (SAMPLES_PER_REPORT * 3, 300)
    assert len(served["latencies_ms"]) == SAMPLES_PER_REPORT
    assert set(served["latencies_ms"]) == {4.0}
    counts = report["deployments"]["dep"]
    assert (counts["requests"], counts["errors"]) == (SAMPLES_PER_REPORT * 3 + 1, 301)
    assert len(counts["buckets"]) == len(BUCKETS) + 1
    assert counts["buckets"][BUCKETS.index(0.005)] == SAMPLES_PER_REPORT * 3 - 300
    assert counts["buckets"][0] == 300
    assert counts["buckets"][-1] == 1  # above the last bound
    assert window.report() == {"revisions": {}, "deployments": {}}, "a report starts afresh"


def answer(status: int, document: object) -> Response:
    return Response(status, [(b"content-type", b"application/json")], json.dumps(document).encode())


def test_shadow_answers_compare_outputs_not_model_versions() -> None:
    def oip(version: str, data: list[float]) -> dict[str, object]:
        return {
            "model_name": "api",
            "model_version": version,
            "outputs": [{"name": "y", "shape": [len(data)], "datatype": "FP64", "data": data}],
        }

    assert same_answer(answer(200, oip("1", [0.5, 1.0])), answer(200, oip("2", [0.5, 1.0])))
    assert same_answer(answer(200, oip("1", [0.5])), answer(200, oip("2", [0.5 + 1e-9])))
    assert not same_answer(answer(200, oip("1", [0.5])), answer(200, oip("2", [0.6])))
    assert not same_answer(answer(200, oip("1", [0.5])), answer(500, oip("2", [0.5])))
    assert same_answer(
        answer(200, {"predictions": [1, 2]}), answer(200, {"predictions": [1, 2], "x": 1})
    )
    assert not same_answer(Response(200, [], b"a"), Response(200, [], b"b"))
