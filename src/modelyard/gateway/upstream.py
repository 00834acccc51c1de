"""Keep-alive HTTP/1.1 connections from the gateway to replicas.

A small client on an asyncio protocol and httptools' parser instead of a general-purpose one: the
gateway forwards one request per call to one of a few loopback endpoints, and a general client's
per-request machinery (URL objects, header models, connection state machines) would cost more
than the replica's own work for a small model.

:class:`ConnectFailed` means the request never reached a replica (connection refused or reset
before a byte of the answer came back): the gateway may send it to another replica.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import cast

import httptools

from modelyard.serving.replica_headers import SERVICE_HEADER

MAX_IDLE_PER_ENDPOINT = 256


class ConnectFailed(Exception):
    """The request reached no replica: safe to try another one."""


class UpstreamTimeout(Exception):
    """No answer before the request's deadline: the connection was closed."""


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    service: bytes | None = None
    """The replica's ``x-modelyard-service-ms`` value, picked out while parsing."""


class Connection(asyncio.Protocol):
    """One keep-alive connection to a replica, one request at a time: a protocol fed by the
    event loop, with one parser for the connection's life (no stream buffers, no task per read)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.received = False
        self.keep_alive = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._service: bytes | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: no subclass

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"the replica answered no valid HTTP: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.keep_alive = False
        if self.received:
            self._fail(ConnectionError("the replica closed the connection mid-answer"))
        else:
            reason = str(exc) if exc else "the replica closed the connection before answering"
            self._fail(ConnectFailed(reason))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if name == SERVICE_HEADER:
            self._service = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        # Read here: once the message is complete the parser no longer says keep-alive.
        self.keep_alive = self.parser.should_keep_alive()
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        response = Response(self.parser.get_status_code(), self._headers, body, self._service)
        self._headers, self._body, self._service = [], [], None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(response)

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.close()

    async def request(
        self, head: bytes, body: bytes, deadline: float | None = None
    ) -> tuple[Response, bool]:
        """Send one request; the response and whether the connection can be reused. Past
        ``deadline`` (`time.monotonic`) it raises `UpstreamTimeout` and closes the connection:
        a timer on the answer, cheaper than a timeout scope around the call."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectFailed("the connection to the replica was closed")
        self.received = False
        self.waiter = self.loop.create_future()
        if len(body) < 65536:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        timer = None
        if deadline is not None:
            timer = self.loop.call_later(deadline - time.monotonic(), self._expire)
        try:
            response = await self.waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()
        return response, self.keep_alive

    def _expire(self) -> None:
        self._fail(UpstreamTimeout("no answer before the deadline"))

    def close(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()


@dataclass
class Endpoint:
    """One replica: its idle connections and how many requests it has outstanding."""

    host: str
    port: int
    outstanding: int = 0
    idle: deque[Connection] = field(default_factory=deque)
    host_line: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.host_line = f"host: {self.host}:{self.port}\r\n".encode()

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        hostport = url.split("://", 1)[-1].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        return cls(host, int(port))

    async def _connect(self, deadline: float | None) -> Connection:
        loop = asyncio.get_running_loop()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(Connection, self.host, self.port)
        except TimeoutError:
            raise UpstreamTimeout(f"no connection to {self.host}:{self.port} in time") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return connection

    async def send(
        self,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        lines: bytes = b"",
        deadline: float | None = None,
    ) -> Response:
        """Send one request; ``lines`` are header lines already encoded (CRLF included). Past
        ``deadline`` (`time.monotonic`), `UpstreamTimeout`."""
        head = b"".join(
            [
                f"{method} {path} HTTP/1.1\r\n".encode(),
                self.host_line,
                *[name + b": " + value + b"\r\n" for name, value in headers],
                lines,
                b"content-length: %d\r\n\r\n" % len(body),
            ]
        )
        reused = bool(self.idle)
        connection = self.idle.pop() if reused else await self._connect(deadline)
        try:
            response, keep = await connection.request(head, body, deadline)
        except ConnectFailed:
            connection.close()
            if not reused:
                raise
            # A kept-alive connection the replica closed meanwhile: one fresh try on this one.
            connection = await self._connect(deadline)
            try:
                response, keep = await connection.request(head, body, deadline)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            connection.close()
            raise
        if keep and len(self.idle) < MAX_IDLE_PER_ENDPOINT:
            self.idle.append(connection)
        else:
            connection.close()
        return response

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()
