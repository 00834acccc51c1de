"""The gateway's client to replicas, against a real server (`modelyard.serving.http`) on a free
port: connections are kept alive and reused (once, every request opened a new one: the parser
stops saying keep-alive after the answer is complete), a deadline closes the connection, and a
connection the replica closed is replaced without the caller noticing."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from modelyard.gateway.upstream import ConnectFailed, Endpoint, UpstreamTimeout
from modelyard.serving import http
from modelyard.testing import free_port

Message = dict[str, Any]


class Replica:
    """Answers with the client port it saw; ``/slow`` takes a second."""

    def __init__(self) -> None:
        self.ports: list[int] = []

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        await receive()
        if scope["path"] == "/slow":
            await asyncio.sleep(1.0)
        self.ports.append(scope["client"][1])
        headers = [(b"content-type", b"text/plain"), (b"x-modelyard-service-ms", b"0.250")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def replica() -> AsyncIterator[tuple[http.Server, Replica, int]]:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = Replica()
    server = http.Server(app, grace_s=1)
    task = asyncio.create_task(server.serve(sock, handle_signals=False))
    try:
        yield server, app, port
    finally:
        server.shutdown()
        await asyncio.wait_for(task, 10)


def test_connections_are_kept_alive_and_reused() -> None:
    async def scenario() -> None:
        async with replica() as (_, app, port):
            endpoint = Endpoint.parse(f"http://127.0.0.1:{port}")
            answers = [await endpoint.send("POST", "/x", [], b"{}") for _ in range(5)]
            assert len(endpoint.idle) == 1
            endpoint.close()
        assert {(a.status, a.body, a.service) for a in answers} == {(200, b"ok", b"0.250")}
        assert len(set(app.ports)) == 1  # one connection served all five

    asyncio.run(scenario())


def test_a_deadline_closes_the_connection() -> None:
    async def scenario() -> None:
        async with replica() as (_, _app, port):
            endpoint = Endpoint.parse(f"http://127.0.0.1:{port}")
            loop = asyncio.get_running_loop()
            began = loop.time()
            with pytest.raises(UpstreamTimeout):
                await endpoint.send("GET", "/slow", [], b"", deadline=time.monotonic() + 0.2)
            assert loop.time() - began < 0.9
            assert not endpoint.idle  # never reused: its answer may still come
            assert (await endpoint.send("GET", "/", [], b"")).status == 200

    asyncio.run(scenario())


def test_a_connection_the_replica_closed_is_replaced() -> None:
    async def scenario() -> None:
        async with replica() as (server, app, port):
            endpoint = Endpoint.parse(f"http://127.0.0.1:{port}")
            await endpoint.send("GET", "/", [], b"")
            for conn in list(server.connections):
                conn.close()  # as a replica's keep-alive timeout does
            deadline = time.monotonic() + 5
            while endpoint.idle and endpoint.idle[0].keep_alive:  # the close has arrived
                assert time.monotonic() < deadline, "the gateway never saw the close"
                await asyncio.sleep(0.005)
            answer = await endpoint.send("GET", "/", [], b"")
        assert answer.status == 200
        assert len(set(app.ports)) == 2

    asyncio.run(scenario())


def test_no_replica_listening_is_a_connect_failure() -> None:
    async def scenario() -> None:
        port = free_port()
        with pytest.raises(ConnectFailed):
            await Endpoint.parse(f"http://127.0.0.1:{port}").send("GET", "/", [], b"")

    asyncio.run(scenario())
