"""The gateway's own rules, in process, in front of a small real upstream (`test_upstream`'s
Replica on `modelyard.serving.http`): fast tests of what the end-to-end ones cannot reach.

Most go through httpx's ASGI transport straight into `Gateway` (no socket on the client side);
the replicas behind it are real servers on free ports, or free ports nobody listens on."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
import pytest

from modelyard.gateway.app import Gateway
from modelyard.gateway.routes import Routes
from modelyard.realtime.streams import RESERVED_PATHS
from modelyard.serving import http
from modelyard.testing import free_port
from tests.gateway.test_upstream import Replica, replica

SECRET = "s3cret"
TOKEN = f"my_k1_{SECRET}"
OTHER = "my_k2_other"
"""A key with a role in another namespace only."""
INFER = "/team/echo/v2/models/echo/infer"


def _key(secret: str, admin: bool, roles: dict[str, str]) -> dict[str, object]:
    return {"hash": hashlib.sha256(secret.encode()).hexdigest(), "admin": admin, "roles": roles}


def table(
    *ports: int,
    timeout_s: float = 5,
    max_body_bytes: int = 1 << 20,
    keys: tuple[str, ...] = ("k1", "k2"),
    version: int = 1,
) -> dict[str, object]:
    """A routing table with one deployment, team/echo, whose one revision has a replica on each
    of ``ports`` (none: scaled to zero); ``keys``: which of k1 (admin) and k2 survive."""
    every = {"k1": _key(SECRET, True, {}), "k2": _key("other", False, {"elsewhere": "invoker"})}
    return {
        "version": version,
        "epoch": "e",
        "deployments": {
            "team/echo": {
                "status": "ready" if ports else "scaled to zero",
                "timeout_s": timeout_s,
                "max_body_bytes": max_body_bytes,
                "revisions": [
                    {
                        "id": "r1",
                        "name": "echo-00001",
                        "percent": 100,
                        "tags": [],
                        "endpoints": [f"http://127.0.0.1:{port}" for port in ports],
                    }
                ],
            }
        },
        "keys": {k: v for k, v in every.items() if k in keys},
    }


def client(app: Gateway) -> httpx.AsyncClient:
    """A client that calls ``app`` in process, with key k1."""
    # httpx types an ASGI scope as a MutableMapping, the data plane as a dict
    transport = httpx.ASGITransport(app=cast(Any, app))
    headers = {"authorization": f"Bearer {TOKEN}"}
    return httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=headers)


@asynccontextmanager
async def gateway(
    **limits: Any,
) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient, Replica, int]]:
    """A gateway over one real replica, and its `client`."""
    async with replica() as (_, upstream, port):
        routes = Routes()
        routes.apply(table(port, **limits))
        app = Gateway(routes)
        async with client(app) as calls:
            yield app, calls, upstream, port


def run(scenario: Callable[[], Any]) -> None:
    asyncio.run(scenario())


def test_the_gateway_routes_every_path_through_one_table() -> None:
    app = Gateway(Routes())
    # the names the control plane refuses for deployments are exactly the gateway's segments
    assert set(app.dispatch.segments) == RESERVED_PATHS
    assert app.dispatch.handler("/team/streams/clicks/events") == app.realtime.handle_streams
    assert app.dispatch.handler("/team/predictions/scorer/u1") == app.realtime.handle_predictions
    for deployment_path in ("/team/streams", "/v2/models/streams/infer", "/team/echo/v2/x"):
        assert app.dispatch.handler(deployment_path) == app.dispatch.default
    assert app.dispatch.handler("/metrics") != app.dispatch.default
    with pytest.raises(ValueError, match="already has a handler"):
        app.dispatch.segment("streams", app.dispatch.default)


def test_keys_are_checked_before_anything_is_forwarded() -> None:
    async def scenario() -> None:
        async with gateway() as (app, calls, upstream, port):
            missing = await calls.post(INFER, json={}, headers={"authorization": ""})
            assert missing.status_code == 401
            assert missing.json() == {"error": "no API key: send 'Authorization: Bearer <key>'"}
            invalid = await calls.post(INFER, json={}, headers={"authorization": "Bearer my_k1_x"})
            assert invalid.status_code == 401
            assert invalid.json() == {"error": "unknown or revoked API key"}
            elsewhere = await calls.post(
                INFER, json={}, headers={"authorization": f"Bearer {OTHER}"}
            )
            assert elsewhere.status_code == 403
            assert "key k2 has no invoker role in namespace 'team'" in elsewhere.json()["error"]
            assert (await calls.post(INFER, json={})).status_code == 200
            app.routes.apply(table(port, keys=("k2",), version=2))  # k1 revoked
            revoked = await calls.post(INFER, json={})
            assert revoked.status_code == 401
            assert revoked.json() == {"error": "unknown or revoked API key"}
            assert len(upstream.ports) == 1  # only the one allowed request got through

    run(scenario)


def test_requests_the_gateway_cannot_route() -> None:
    async def scenario() -> None:
        async with gateway() as (_, calls, upstream, _port):
            bare = await calls.post("/v2/models/echo/infer", json={})
            assert bare.status_code == 400 and "X-Modelyard-Namespace" in bare.json()["error"]
            namespaced = await calls.post(
                "/v2/models/echo/infer", json={}, headers={"x-modelyard-namespace": "team"}
            )
            assert namespaced.status_code == 200
            unknown = await calls.post("/team/nope/v2/models/nope/infer", json={})
            assert unknown.status_code == 404
            assert unknown.json()["error"].startswith("deployment team/nope does not exist")
            untagged = await calls.post(INFER, json={}, headers={"x-modelyard-tag": "blue"})
            assert untagged.status_code == 404 and "no revision tagged 'blue'" in untagged.text
            nowhere = await calls.get("/nowhere")
            assert nowhere.status_code == 404 and nowhere.json()["error"].startswith("no route")
            refused = await calls.post("/metrics")
            assert refused.status_code == 405
            assert refused.json() == {"error": "method POST is not allowed on /metrics: use GET"}
            assert (await calls.get("/v2/health/live")).json() == {"live": True}
            # the realtime handlers answer in the control plane API's format
            stream = await calls.post(
                "/team/streams/clicks/events", json={}, headers={"authorization": ""}
            )
            assert stream.status_code == 401
            assert stream.json()["error"]["code"] == "unauthenticated"
            assert len(upstream.ports) == 1

    run(scenario)


def test_a_body_over_the_limit_is_refused_and_never_forwarded() -> None:
    async def scenario() -> None:
        async with gateway(max_body_bytes=64) as (_, calls, upstream, _port):
            declared = await calls.post(INFER, content=b"x" * 65)
            assert declared.status_code == 413
            assert declared.json() == {
                "error": "request body over 64 bytes, this deployment's max_body_mb: send "
                "fewer rows per request or raise max_body_mb"
            }

            async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted as it comes
                for _ in range(10):
                    yield b"x" * 16

            streamed = await calls.post(INFER, content=chunks())
            assert streamed.status_code == 413 and "max_body_mb" in streamed.json()["error"]
            assert (await calls.post(INFER, content=b"x" * 64)).status_code == 200
            assert len(upstream.ports) == 1

    run(scenario)


def test_a_slow_replica_is_answered_504_at_the_deployments_timeout() -> None:
    async def scenario() -> None:
        async with gateway(timeout_s=0.2) as (app, calls, _upstream, _port):
            began = time.monotonic()
            slow = await calls.get("/team/echo/slow")  # the replica takes a second
            assert time.monotonic() - began < 0.9
            assert slow.status_code == 504
            assert slow.json() == {"error": "no answer within 0.2 s (the deployment's timeout_s)"}
            assert b'code="504"' in app.metrics.render()

    run(scenario)


def test_a_request_to_a_revision_at_zero_waits_for_its_replica() -> None:
    async def scenario() -> None:
        async with replica() as (_, upstream, port):
            routes = Routes()
            routes.apply(table())  # scaled to zero
            app = Gateway(routes)
            async with client(app) as calls:
                held = asyncio.create_task(calls.post(INFER, json={}))
                await asyncio.wait_for(routes.demand_posted.wait(), 5)
                assert routes.demand == {"r1"} and not held.done()  # the control plane is asked
                routes.apply(table(port, version=2))  # its replica is ready
                answer = await asyncio.wait_for(held, 5)
                assert answer.status_code == 200 and answer.text == "ok"
                assert app.metrics.cold_starts[("team", "echo")] == 1
                assert len(upstream.ports) == 1

    run(scenario)


def test_a_request_to_a_revision_at_zero_times_out_when_no_replica_comes() -> None:
    async def scenario() -> None:
        routes = Routes()
        routes.apply(table(timeout_s=0.3))
        async with client(Gateway(routes)) as calls:
            began = time.monotonic()
            answer = await calls.post(INFER, json={})
        assert 0.25 < time.monotonic() - began < 2
        assert answer.status_code == 504
        assert answer.json() == {"error": "no replica of echo-00001 got ready within 0.3 s"}

    run(scenario)


def test_a_refused_connection_is_retried_once_on_another_replica() -> None:
    async def scenario() -> None:
        async with replica() as (_, upstream, port):
            dead = free_port()
            routes = Routes()
            routes.apply(table(dead, port))  # the dead one comes first: both are as busy
            app = Gateway(routes)
            async with client(app) as calls:
                answer = await calls.post(INFER, json={})
                assert answer.status_code == 200
                assert answer.headers["x-modelyard-revision"] == "echo-00001"
                assert app.metrics.retries[("team", "echo", "echo-00001")] == 1
                assert (await calls.post(INFER, json={})).status_code == 200  # dead: ejected
                assert app.metrics.retries[("team", "echo", "echo-00001")] == 1
                routes.apply(table(free_port(), free_port(), version=2))  # none listens
                failed = await calls.post(INFER, json={})
                assert failed.status_code == 502
                assert failed.json()["error"].startswith("no replica of echo-00001 answered")
            assert len(upstream.ports) == 2

    run(scenario)


def test_a_body_cut_short_by_the_client_is_not_forwarded() -> None:
    async def scenario() -> None:
        async with replica() as (_, upstream, port):
            routes = Routes()
            routes.apply(table(port))
            sock = socket.create_server(("127.0.0.1", 0))
            gateway_port = sock.getsockname()[1]
            server = http.Server(Gateway(routes), grace_s=1)
            task = asyncio.create_task(server.serve(sock, handle_signals=False))
            head = (
                "POST /team/echo/v2/models/echo/infer HTTP/1.1\r\nhost: x\r\n"
                f"authorization: Bearer {TOKEN}\r\ncontent-length: %d\r\n\r\n"
            )
            _, writer = await asyncio.open_connection("127.0.0.1", gateway_port)
            writer.write((head % 1000).encode() + b'{"inputs": [')
            await writer.drain()
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway_port)
            writer.write((head % 2).encode() + b"{}")
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            writer.close()
            assert len(upstream.ports) == 1, "the cut request reached the replica"
            server.shutdown()
            await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
