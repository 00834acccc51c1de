"""What the gateway measures for rollouts and SLOs, how it splits traffic, and how it compares
a shadow's answers: the pure parts, on known inputs."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from collections import Counter

import pytest

from modelyard.delivery.analysis import FAIL, PASS, Verdict, judge
from modelyard.gateway.app import same_answer
from modelyard.gateway.routes import DeploymentRoute, RevisionRoute, Table
from modelyard.gateway.upstream import Endpoint, Response
from modelyard.serving.records import Analysis
from modelyard.serving.replica_headers import parse_service_ms, token_line
from modelyard.telemetry.measurements import Measurements
from modelyard.telemetry.records import BUCKETS
from modelyard.telemetry.window import SAMPLES_PER_REPORT, Window

START = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def route(*percents: int) -> DeploymentRoute:
    revisions = [
        RevisionRoute(id=f"r{i}", name=f"api-{i:05d}", percent=p, tags=[], endpoints=[])
        for i, p in enumerate(percents, 1)
    ]
    return DeploymentRoute("team", "api", "serving", 60.0, 1 << 20, revisions, id="d" * 32)


def chosen(split: DeploymentRoute, tag: str | None, key: bytes | None = None) -> RevisionRoute:
    """The revision ``split`` picks; these splits always have one for the tag."""
    revision = split.pick(tag, key)
    assert revision is not None
    return revision


def test_the_split_gives_each_revision_exactly_its_weight_in_every_hundred() -> None:
    split = route(90, 10)
    for _ in range(5):
        picked = Counter(chosen(split, None).name for _ in range(100))
        assert picked == {"api-00001": 90, "api-00002": 10}


def test_sticky_keys_keep_their_revision_and_spread_by_weight() -> None:
    split = route(50, 50)
    first = {f"user-{i}": chosen(split, None, f"user-{i}".encode()) for i in range(2000)}
    assert all(split.pick(None, k.encode()) is r for k, r in first.items())
    share = sum(r.name == "api-00001" for r in first.values() if r) / len(first)
    assert 0.45 < share < 0.55
    # When the canary grows, the users that move only move towards it.
    grown = route(20, 80)
    moved = [k for k, r in first.items() if r and chosen(grown, None, k.encode()).name != r.name]
    assert moved and all(first[k].name == "api-00001" for k in moved)


def test_a_tag_pins_a_revision_whatever_the_weights() -> None:
    split = route(100, 0)
    split.revisions[1].tags = ["canary"]
    assert chosen(split, "canary").name == "api-00002"
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


def test_shadow_answers_with_binary_outputs_compare_their_bytes() -> None:
    def oip(version: str, data: bytes) -> Response:
        document = json.dumps(
            {
                "model_name": "api",
                "model_version": version,
                "outputs": [
                    {
                        "name": "y",
                        "shape": [1],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": 4},
                    }
                ],
            }
        ).encode()
        headers = [(b"content-type", b"application/octet-stream")]
        headers.append((b"inference-header-content-length", str(len(document)).encode()))
        return Response(200, headers, document + data)

    assert same_answer(oip("1", b"\x00\x00\x80\x3f"), oip("2", b"\x00\x00\x80\x3f"))
    assert not same_answer(oip("1", b"\x00\x00\x80\x3f"), oip("2", b"\x00\x00\x00\x40"))


def test_the_window_samples_the_service_times_replicas_report() -> None:
    window = Window()
    for i in range(SAMPLES_PER_REPORT * 2):
        reported = i % 4 != 0  # a custom route of the runtime reports nothing
        window.observe("dep", "rev", 200, 0.030, service_ms=4.0 if reported else None)
    window.observe("dep", "rev", 500, 0.001, service_ms=1.0)  # failures are not timed
    served = window.report()["revisions"]["rev"]
    assert len(served["latencies_ms"]) == SAMPLES_PER_REPORT
    assert len(served["service_ms"]) == SAMPLES_PER_REPORT
    assert set(served["service_ms"]) == {4.0}
    quiet = Window()
    quiet.observe("dep", "rev", 200, 0.030)
    assert quiet.report()["revisions"]["rev"]["service_ms"] == []


def judged(stable: tuple[float, float], canary: tuple[float, float]) -> Verdict:
    """Serve 900 requests on stable and 100 on the canary, each (end-to-end s, service ms), as
    the gateway measures them; then judge what the control plane made of the report."""
    window = Window()
    rng = random.Random(11)
    for revision, (seconds, ms), count in (("stable", stable, 900), ("canary", canary, 100)):
        for _ in range(count):
            jitter = rng.uniform(0.9, 1.1)
            window.observe("dep", revision, 200, seconds * jitter, service_ms=ms * jitter)
    measurements = Measurements(lambda: START)
    measurements.add(json.loads(json.dumps(window.report())))  # as it travels
    return judge(
        measurements.served("stable", START), measurements.served("canary", START), Analysis()
    )


def test_a_3x_slower_canary_fails_though_the_queued_stable_is_slower_end_to_end() -> None:
    verdict = judged(stable=(0.033, 4.0), canary=(0.013, 12.0))
    assert verdict.result == FAIL, verdict.reasons
    assert verdict.evidence["latency"]["measure"] == "service"
    assert verdict.evidence["latency"]["ratio"] == pytest.approx(3, rel=0.1)


def test_a_faster_canary_passes_whatever_its_queue() -> None:
    assert judged(stable=(0.008, 4.0), canary=(0.030, 2.0)).result == PASS
    assert judged(stable=(0.033, 4.0), canary=(0.003, 2.0)).result == PASS


def test_the_token_goes_out_and_the_service_time_comes_back() -> None:
    """Through a real socket, against a replica stand-in that records the request's head."""
    heads: list[bytes] = []
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    answer += b"x-modelyard-service-ms: 4.125\r\ncontent-length: 2\r\n\r\n{}"

    async def replica(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        await reader.readexactly(2)
        writer.write(answer)
        await writer.drain()
        writer.close()

    async def main() -> Response:
        server = await asyncio.start_server(replica, "127.0.0.1", 0)
        async with server:
            endpoint = Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])
            line = token_line("ab" * 32)
            response = await endpoint.send("POST", "/v2/models/m/infer", [], b"{}", line)
            endpoint.close()
            return response

    response = asyncio.run(main())
    assert response.status == 200 and response.service == b"4.125"
    assert parse_service_ms(response.service) == 4.125
    assert b"\r\nx-modelyard-replica-token: " + b"ab" * 32 + b"\r\n" in heads[0]
    for garbage in (None, b"", b"fast", b"-1", b"nan", b"inf"):
        assert parse_service_ms(garbage) is None


def test_the_routing_table_encodes_each_revisions_token_once() -> None:
    def table(token: str | None) -> dict[str, object]:
        revision = {"id": "r1", "name": "api-00001", "percent": 100, "tags": [], "endpoints": []}
        if token is not None:
            revision["token"] = token
        deployment = {"status": "serving", "timeout_s": 60, "max_body_bytes": 1024}
        return {"deployments": {"team/api": {**deployment, "revisions": [revision]}}}

    token = "ab" * 32
    parsed = Table.parse(table(token), {}).deployments["team/api"].revisions[0]
    assert parsed.token_line == b"x-modelyard-replica-token: " + token.encode() + b"\r\n"
    assert token not in repr(parsed)
    # from a control plane that predates tokens: nothing is sent
    assert Table.parse(table(None), {}).deployments["team/api"].revisions[0].token_line == b""
    with pytest.raises(ValueError):  # no header can be smuggled in
        Table.parse(table(token + "\r\nx-other: 1"), {})
