"""The data plane's HTTP/1.1 server: the gateway and every replica run on it.

An ``asyncio.Protocol`` per connection and httptools' parser, calling an ASGI 3 application (the
part of it the data plane uses: ``http`` and ``lifespan`` scopes, no websockets or extensions).
It exists because uvicorn's per-request machinery (a cycle object and a middleware per request,
flow-control objects, a logger check, header validation) cost more CPU than the gateway's own
routing and about as much as a small model's ``predict``; everything here that can be done once is
(status lines, the ``date`` header, a connection's addresses), and a response is one write.

What it does:
- keep-alive (HTTP/1.1 by default, ``Connection: close`` honoured both ways); an idle connection
  is closed after ``keep_alive_s``;
- request bodies by ``Content-Length`` or chunked (httptools decodes the chunks), streamed to the
  app through ``receive`` with flow control: reading pauses while more than ``HIGH_WATER`` bytes
  wait for the app, so an app that rejects a large body (413) never holds it; ``Expect:
  100-continue`` is answered when the app first asks for the body;
- pipelined requests are answered in order, one at a time (reading pauses meanwhile);
- responses with ``content-length`` (added when the app gives none and sends one body), chunked
  when the app streams without a length, no body to ``HEAD``;
- what httptools cannot parse, or a head over ``MAX_HEAD_BYTES``, is answered 400 (431) and the
  connection closed; an app that raises before answering gives 500, after it the connection is
  closed; a client that disconnects gets its request's ``receive`` answered ``http.disconnect``;
- SIGTERM or SIGINT (or `Server.shutdown`): stop accepting, close idle connections, let requests
  in flight finish (and close their connections after them) for up to ``grace_s``, then close the
  rest, then the app's lifespan shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import signal
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from email.utils import formatdate
from typing import Any, TypeVar, cast
from urllib.parse import unquote

import httptools

log = logging.getLogger(__name__)
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
T = TypeVar("T")

HIGH_WATER = 256 * 1024
MAX_HEAD_BYTES = 64 * 1024
KEEP_ALIVE_S = 75.0
ASGI = {"version": "3.0", "spec_version": "2.3"}


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode())


STATUS_LINES = {status.value: _status_line(status.value) for status in http.HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Request:
    """One request and its response: the ``receive`` and ``send`` its app call gets."""

    __slots__ = (
        "chunked",
        "complete",
        "conn",
        "continue_expected",
        "delivered",
        "finished",
        "head_only",
        "head_written",
        "headers",
        "keep_alive",
        "pending",
        "scope",
        "size",
        "started",
        "status",
        "waiter",
    )

    def __init__(self, conn: _Connection, scope: Scope, keep_alive: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.head_only = scope["method"] == "HEAD"
        self.continue_expected = False
        self.pending: list[bytes] = []
        self.size = 0  # bytes in pending
        self.complete = False  # the whole body was parsed
        self.delivered = False  # ...and handed to the app
        self.waiter: asyncio.Future[None] | None = None
        self.started = False
        self.head_written = False
        self.finished = False
        self.chunked = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def run(self, app: App) -> None:
        try:
            await app(self.scope, self.receive, self.send)
            if not self.started:
                log.error("%s %s: the application sent no response", *self._what())
                await self._fail()
            elif not self.finished:
                self.conn.close()  # the answer is cut short: the client must see that
        except Exception:
            log.exception("%s %s: the application failed", *self._what())
            await self._fail()
        except asyncio.CancelledError:
            self.conn.close()
            raise
        finally:
            self.conn.finished(self)

    def _what(self) -> tuple[str, str]:
        return self.scope["method"], self.scope["path"]

    async def _fail(self) -> None:
        if self.started or self.conn.lost:
            self.conn.close()
            return
        body = b'{"error":"internal server error"}'
        self.keep_alive = False
        headers = [(b"content-type", b"application/json")]
        await self.send({"type": "http.response.start", "status": 500, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def receive(self) -> Message:
        conn = self.conn
        while not self.pending and not self.complete and not conn.lost:
            if self.continue_expected:
                self.continue_expected = False
                conn.write(CONTINUE)
            self.waiter = conn.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        if self.pending or (self.complete and not self.delivered):
            body = self.pending[0] if len(self.pending) == 1 else b"".join(self.pending)
            self.pending = []
            self.size = 0
            self.delivered = self.complete
            conn.update_reading()
            return {"type": "http.request", "body": body, "more_body": not self.complete}
        if not self.finished and not conn.lost:
            await asyncio.shield(conn.disconnected)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.status = message["status"]
            self.headers = message.get("headers", [])
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self.started or self.finished:
            raise RuntimeError("http.response.body without http.response.start, or after the end")
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        conn = self.conn
        if not self.head_written:
            data = self._head(body, more)
            self.head_written = True
            if self.head_only:
                body = b""
            if self.chunked and body:
                data += b"%x\r\n%b\r\n" % (len(body), body)
            else:
                data += body
        elif self.head_only:
            data = b""
        elif self.chunked:
            data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
        else:
            data = body
        if not more:
            self.finished = True
            if self.chunked and not self.head_only:
                data += b"0\r\n\r\n"
        if conn.lost:
            return
        if data:
            conn.write(data)
        if conn.write_paused is not None:
            await asyncio.shield(conn.write_paused)

    def _head(self, body: bytes, more: bool) -> bytes:
        lines = [STATUS_LINES.get(self.status) or _status_line(self.status)]
        length = False
        for name, value in self.headers:
            if name == b"content-length":
                length = True
            elif name == b"connection":
                if value.lower() == b"close":
                    self.keep_alive = False
                continue
            lines.append(b"%b: %b\r\n" % (name, value))
        if not length:
            if more:
                self.chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                lines.append(b"content-length: %d\r\n" % len(body))
        if not self.complete or self.conn.server.stopping:
            self.keep_alive = False  # the unread rest of the body would be taken for a request
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(self.conn.server.date)
        return b"".join(lines)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests and runs them one at a time, in order."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.addresses: tuple[Any, Any] = (None, None)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.reject: tuple[int, str] | None = None
        self.parsing: _Request | None = None  # the request whose body is being parsed
        self.active: _Request | None = None  # the request the app is answering
        self.queued: deque[_Request] = deque()  # pipelined behind the active one
        self.task: asyncio.Task[None] | None = None
        self.lost = False
        self.disconnected: asyncio.Future[None] = self.loop.create_future()
        self.write_paused: asyncio.Future[None] | None = None
        self.reading = True
        self.idle_ticks = 0

    # asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.addresses = (
            _address(transport.get_extra_info("sockname")),
            _address(transport.get_extra_info("peername")),
        )
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._bad(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            status, message = self.reject or (400, f"malformed HTTP request: {exc}")
            self._bad(status, message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.connections.discard(self)
        if not self.disconnected.done():
            self.disconnected.set_result(None)
        if self.write_paused is not None and not self.write_paused.done():
            self.write_paused.set_result(None)
        for request in (self.active, self.parsing):
            if request is not None:
                request.wake()
        self.queued.clear()

    def pause_writing(self) -> None:
        self.write_paused = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.write_paused is not None and not self.write_paused.done():
            self.write_paused.set_result(None)
        self.write_paused = None

    # httptools callbacks ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.idle_ticks = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > MAX_HEAD_BYTES:
            self._too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > MAX_HEAD_BYTES:
            self._too_large()

    def on_headers_complete(self) -> None:
        parser = self.parser
        raw = self.url
        if raw[:1] == b"/":
            raw_path, _, query = raw.partition(b"?")
        else:  # absolute form (a proxy's request) or "*"
            url = httptools.parse_url(raw)
            raw_path, query = url.path or b"/", url.query or b""
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        scope = {
            "type": "http",
            "asgi": ASGI,
            "http_version": parser.get_http_version(),
            "server": self.addresses[0],
            "client": self.addresses[1],
            "scheme": "http",
            "method": parser.get_method().decode("ascii"),
            "root_path": "",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": self.headers,
        }
        request = _Request(self, scope, parser.should_keep_alive())
        for name, value in self.headers:
            if name == b"expect" and value.lower() == b"100-continue":
                request.continue_expected = True
        self.parsing = request
        if self.active is None:
            self._start(request)
        else:
            self.queued.append(request)
            self.update_reading()

    def on_body(self, body: bytes) -> None:
        request = self.parsing
        if request is None:
            return
        request.pending.append(body)
        request.size += len(body)
        request.wake()
        if request.size > HIGH_WATER:
            self.update_reading()

    def on_message_complete(self) -> None:
        request = self.parsing
        if request is not None:
            request.complete = True
            request.continue_expected = False
            request.wake()
        self.parsing = None

    # the connection's side ----------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    @property
    def idle(self) -> bool:
        return self.active is None and self.parsing is None

    def update_reading(self) -> None:
        """Read while nothing is queued and the body being parsed fits ``HIGH_WATER``."""
        parsing = self.parsing
        want = not self.queued and (parsing is None or parsing.size <= HIGH_WATER)
        if want == self.reading or self.transport is None or self.transport.is_closing():
            return
        self.reading = want
        if want:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def finished(self, request: _Request) -> None:
        """The app returned: the connection goes on with the next request, or closes."""
        self.active = None
        self.task = None
        if self.lost:
            return
        if not (request.finished and request.keep_alive) or self.server.stopping:
            self.close()
            return
        if self.queued:
            self._start(self.queued.popleft())
        self.update_reading()

    def _start(self, request: _Request) -> None:
        self.active = request
        self.idle_ticks = 0
        self.task = self.loop.create_task(request.run(self.server.app))

    def _too_large(self) -> None:
        self.reject = (431, f"request head over {MAX_HEAD_BYTES} bytes")
        raise ValueError(self.reject[1])  # httptools stops parsing and raises its own error

    def _bad(self, status: int, message: str) -> None:
        """Answer what could not be parsed (unless an answer is under way), then close."""
        if self.active is not None or self.transport is None:
            self.queued.clear()
            if self.active is not None:
                self.active.keep_alive = False
            else:
                self.close()
            return
        body = b'{"error":"%b"}' % message.replace('"', "'").encode("ascii", "replace")
        self.write(
            STATUS_LINES.get(status, _status_line(status))
            + b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
            + b"connection: close\r\n"
            + self.server.date
            + body
        )
        self.close()


def _address(address: Any) -> tuple[str, int] | None:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None


class Server:
    """Serves one ASGI app on listening sockets until `shutdown` (or SIGTERM, SIGINT)."""

    def __init__(self, app: App, *, grace_s: float = 30.0, keep_alive_s: float = KEEP_ALIVE_S):
        self.app = app
        self.grace_s = grace_s
        self.keep_alive_s = keep_alive_s
        self.connections: set[_Connection] = set()
        self.stopping = False
        self.date = b""
        self._stop: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop

    def shutdown(self) -> None:
        """Begin the graceful shutdown (safe from a signal handler on the loop)."""
        if self._stop is not None:
            self._stop.set()

    async def serve(self, sock: socket.socket, *, handle_signals: bool = True) -> None:
        """Serve on the listening ``sock`` until shut down; returns once drained."""
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        lifespan = _Lifespan(self.app)
        await lifespan.startup()
        self._tick()
        listener = await self.loop.create_server(lambda: _Connection(self), sock=sock)
        signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        for signum in signals:
            self.loop.add_signal_handler(signum, self.shutdown)
        try:
            await self._stop.wait()
        finally:
            for signum in signals:
                self.loop.remove_signal_handler(signum)
            await self._drain(listener)
            await lifespan.shutdown()

    async def _drain(self, listener: asyncio.AbstractServer) -> None:
        self.stopping = True
        listener.close()
        deadline = self.loop.time() + self.grace_s
        while True:
            for conn in list(self.connections):
                if conn.idle:
                    conn.close()
            if not self.connections or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)
        tasks = [conn.task for conn in self.connections if conn.task is not None]
        if tasks:
            log.warning(
                "%d request(s) still running after %.0f s: cancelled", len(tasks), self.grace_s
            )
        for conn in list(self.connections):
            if conn.task is not None:
                conn.task.cancel()
            conn.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _tick(self) -> None:
        """Once a second: the ``date`` header, and closing connections idle too long."""
        self.date = b"date: %b\r\n\r\n" % formatdate(usegmt=True).encode()
        for conn in list(self.connections):
            if conn.idle:
                conn.idle_ticks += 1
                if conn.idle_ticks > self.keep_alive_s:
                    conn.close()
        if not self.stopping:
            self.loop.call_later(1.0, self._tick)


class _Lifespan:
    """The app's ASGI lifespan: startup before the first connection, shutdown after the last."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.answers: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.supported = True

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI}
        try:
            await self.app(scope, self.inbox.get, self.answers.put)
        except Exception:
            if self.supported:
                log.debug("the application does not support the lifespan protocol", exc_info=True)
        finally:
            self.supported = False
            self.answers.put_nowait({"type": "lifespan.gone"})

    async def _ask(self, what: str) -> None:
        if not self.supported:
            return
        await self.inbox.put({"type": f"lifespan.{what}"})
        answer = await self.answers.get()
        if answer["type"] == f"lifespan.{what}.failed":
            raise RuntimeError(f"the application's {what} failed: {answer.get('message', '')}")

    async def startup(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())
        await self._ask("startup")

    async def shutdown(self) -> None:
        await self._ask("shutdown")
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


async def serve(
    app: App,
    sock: socket.socket,
    *,
    grace_s: float = 30.0,
    keep_alive_s: float = KEEP_ALIVE_S,
    handle_signals: bool = True,
) -> None:
    """Serve ``app`` on the listening socket ``sock`` until SIGTERM or SIGINT, then drain."""
    server = Server(app, grace_s=grace_s, keep_alive_s=keep_alive_s)
    await server.serve(sock, handle_signals=handle_signals)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop where it is installed (a faster loop), else on asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
