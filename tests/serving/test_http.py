"""The data plane's HTTP/1.1 server against real clients: httpx, and raw sockets for what httpx
never sends (pipelining, garbage, a head too large, a body cut short, ``Expect: 100-continue``).

Each test serves a small ASGI app on a free port in its own event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from modelyard.serving import http
from modelyard.testing import wait_for

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class EchoApp:
    """Answers with what it saw: method, path, query, body length and digest, client port.
    ``/slow`` waits for ``release``; ``/fail`` raises; ``/stream`` answers in three chunks."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.disconnected = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.events.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        path = scope["path"]
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected.set()
                return
            body += message["body"]
            if not message["more_body"]:
                break
        if path == "/slow":
            self.entered.set()
            await self.release.wait()
        if path == "/fail":
            raise RuntimeError("a bug in the app")
        headers = [(b"content-type", b"text/plain")]
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for part in (b"one,", b"two,", b"three"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        answer = (
            f"{scope['method']} {path} {scope['query_string'].decode()} {len(body)} "
            f"{hashlib.sha256(body).hexdigest()[:16]} {scope['client'][1]}"
        ).encode()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


@asynccontextmanager
async def serving(
    app: EchoApp, **options: Any
) -> AsyncIterator[tuple[http.Server, int, asyncio.Task[None]]]:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = http.Server(app, **options)
    task = asyncio.create_task(server.serve(sock, handle_signals=False))
    while not hasattr(server, "loop") or server.date == b"":
        await asyncio.sleep(0.005)
    try:
        yield server, port, task
    finally:
        server.shutdown()
        await asyncio.wait_for(task, 10)


async def raw(port: int, data: bytes, *, read_until_eof: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        if read_until_eof:
            return await asyncio.wait_for(reader.read(), 5)
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


def test_keep_alive_serves_every_request_on_one_connection() -> None:
    async def scenario() -> None:
        app = EchoApp()
        async with serving(app) as (_, port, _task), httpx.AsyncClient() as client:
            answers = [
                await client.post(f"http://127.0.0.1:{port}/p%20q?x=1", content=b"abc")
                for _ in range(3)
            ]
        assert {a.status_code for a in answers} == {200}
        words = [a.text.split() for a in answers]
        assert words[0][:4] == ["POST", "/p", "q", "x=1"]  # the path is percent-decoded
        assert len({w[-1] for w in words}) == 1  # one client port: one connection
        assert answers[0].headers["content-length"] == str(len(answers[0].content))
        assert "date" in answers[0].headers
        assert app.events == ["lifespan.startup", "lifespan.shutdown"]

    asyncio.run(scenario())


def test_pipelined_requests_are_answered_in_order() -> None:
    async def scenario() -> None:
        async with serving(EchoApp()) as (_, port, _task):
            requests = b"".join(
                b"POST /%d HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\n%d" % (i, i)
                for i in range(3)
            )
            answer = await raw(port, requests + b"GET /last HTTP/1.1\r\nconnection: close\r\n\r\n")
        assert answer.count(b"HTTP/1.1 200 OK") == 4
        order = [answer.index(b"POST /%d " % i) for i in range(3)] + [answer.index(b"GET /last")]
        assert order == sorted(order)
        assert answer.count(b"connection: close") == 1  # the last answer's

    asyncio.run(scenario())


def test_large_bodies_and_chunked_bodies_arrive_whole() -> None:
    async def scenario() -> None:
        body = bytes(range(256)) * (8 * 4096)  # 8 MiB: many reads, reading paused and resumed

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 100_000):
                yield body[start : start + 100_000]

        digest = hashlib.sha256(body).hexdigest()[:16]
        async with serving(EchoApp()) as (_, port, _task), httpx.AsyncClient() as client:
            url = f"http://127.0.0.1:{port}/big"
            sized = await client.post(url, content=body)
            chunked = await client.post(url, content=chunks())  # transfer-encoding: chunked
        for answer in (sized, chunked):
            assert answer.status_code == 200
            assert answer.text.split()[2:4] == [str(len(body)), digest]

    asyncio.run(scenario())


def test_bad_requests_get_400_and_the_connection_closes() -> None:
    async def scenario() -> None:
        async with serving(EchoApp()) as (_, port, _task):
            garbage = await raw(port, b"NOT HTTP AT ALL\r\n\r\n")
            bad_length = await raw(port, b"POST / HTTP/1.1\r\ncontent-length: x\r\n\r\n")
            huge_head = await raw(port, b"GET / HTTP/1.1\r\nx: " + b"a" * 70_000 + b"\r\n\r\n")
        for answer in (garbage, bad_length):
            assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
            assert b"connection: close" in answer
        assert huge_head.startswith(b"HTTP/1.1 431 "), huge_head[:80]

    asyncio.run(scenario())


def test_a_client_gone_mid_body_is_told_to_the_app_and_others_are_served() -> None:
    async def scenario() -> None:
        app = EchoApp()
        async with serving(app) as (_, port, _task):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /cut HTTP/1.1\r\ncontent-length: 100000\r\n\r\n" + b"x" * 10)
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()
            await asyncio.wait_for(app.disconnected.wait(), 5)
            async with httpx.AsyncClient() as client:
                after = await client.get(f"http://127.0.0.1:{port}/after")
        assert after.status_code == 200

    asyncio.run(scenario())


def test_app_failures_head_streaming_and_continue() -> None:
    async def scenario() -> None:
        async with serving(EchoApp()) as (_, port, _task):
            async with httpx.AsyncClient() as client:
                failed = await client.get(f"http://127.0.0.1:{port}/fail")
                head = await client.head(f"http://127.0.0.1:{port}/h")
                streamed = await client.get(f"http://127.0.0.1:{port}/stream")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /c HTTP/1.1\r\ncontent-length: 5\r\nexpect: 100-continue\r\n"
                b"connection: close\r\n\r\n"
            )
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.write(b"hello")
            final = await asyncio.wait_for(reader.read(), 5)
            writer.close()
        assert failed.status_code == 500
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) > 0
        assert streamed.headers["transfer-encoding"] == "chunked"
        assert streamed.content == b"one,two,three"
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert final.startswith(b"HTTP/1.1 200 OK") and b"POST /c  5 " in final

    asyncio.run(scenario())


def test_shutdown_lets_requests_in_flight_finish_and_closes_idle_connections() -> None:
    async def scenario() -> None:
        app = EchoApp()
        async with serving(app, grace_s=10) as (server, port, task):
            idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
            async with httpx.AsyncClient() as client:
                slow = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/slow"))
                await asyncio.wait_for(app.entered.wait(), 5)
                server.shutdown()
                assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # closed at once
                await asyncio.sleep(0.1)
                assert not task.done()  # waits for the request in flight
                app.release.set()
                answer = await slow
            idle_writer.close()
            await asyncio.wait_for(task, 5)
            refused = False
            try:
                await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                refused = True
        assert answer.status_code == 200
        assert answer.headers["connection"] == "close"
        assert refused

    asyncio.run(scenario())


def test_idle_keep_alive_connections_are_closed() -> None:
    async def scenario() -> None:
        async with serving(EchoApp(), keep_alive_s=1) as (_, port, _task):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0)
            rest = await asyncio.wait_for(reader.read(), 5)  # the body, then the server's close
            writer.close()
        assert rest.startswith(b"GET / ")

    asyncio.run(scenario())


SIGTERM_SERVER = """
import asyncio, socket, sys
from modelyard.serving import http

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await receive()
    print(scope["path"], flush=True)
    await asyncio.sleep(0.5)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done"})

sock = socket.socket(fileno=int(sys.argv[1]))
http.run(http.serve(app, sock, grace_s=10))
print("exited", flush=True)
"""


def test_sigterm_drains_requests_in_flight_then_exits_0() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SIGTERM_SERVER), str(sock.fileno())],
        pass_fds=[sock.fileno()],
        stdout=subprocess.PIPE,
        text=True,
    )
    sock.close()
    try:
        with httpx.Client(timeout=10) as client:
            wait_for(lambda: _answers(client, port), 15, "the server to answer", interval=0.05)
        assert process.stdout is not None

        async def scenario() -> httpx.Response:
            async with httpx.AsyncClient(timeout=10) as client:
                call = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/drained"))
                loop = asyncio.get_running_loop()
                assert process.stdout is not None
                while (await loop.run_in_executor(None, process.stdout.readline)) != "/drained\n":
                    pass  # the probes' lines
                process.send_signal(signal.SIGTERM)
                return await call

        answer = asyncio.run(scenario())
        assert answer.status_code == 200 and answer.content == b"done"
        assert process.wait(10) == 0
        assert process.stdout.read().strip().endswith("exited")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def _answers(client: httpx.Client, port: int) -> bool:
    try:
        return client.get(f"http://127.0.0.1:{port}/").status_code == 200
    except httpx.HTTPError:
        return False
