"""Keep-alive HTTP/1.1 connections from the gateway to replicas.

A small client on asyncio streams and httptools' parser instead of a general-purpose one: the
gateway forwards one request per call to one of a few loopback endpoints, and a general client's
per-request machinery (URL objects, header models, connection state machines) would cost more
than the replica's own work for a small model.

:class:`ConnectFailed` means the request never reached a replica (connection refused or reset
before a byte of the answer came back): the gateway may send it to another replica.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

import httptools

MAX_IDLE_PER_ENDPOINT = 256


class ConnectFailed(Exception):
    """The request reached no replica: safe to try another one."""


class UpstreamTimeout(Exception):
    pass


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _Reader:
    """httptools callbacks for one response."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def request(self, head: bytes, body: bytes) -> tuple[Response, bool]:
        """Send one request; the response and whether the connection can be reused."""
        self.writer.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.writer.write(body)
        callbacks = _Reader()
        parser = httptools.HttpResponseParser(callbacks)
        received = False
        while not callbacks.done:
            try:
                data = await self.reader.read(65536)
            except (ConnectionError, OSError) as exc:
                if received:
                    raise
                raise ConnectFailed(str(exc)) from exc
            if not data:
                if received:
                    raise ConnectionError("the replica closed the connection mid-answer")
                raise ConnectFailed("the replica closed the connection before answering")
            received = True
            parser.feed_data(data)
        response = Response(
            parser.get_status_code(),
            callbacks.headers,
            b"".join(callbacks.body) if len(callbacks.body) != 1 else callbacks.body[0],
        )
        return response, parser.should_keep_alive()

    def close(self) -> None:
        self.writer.close()


@dataclass
class Endpoint:
    """One replica: its idle connections and how many requests it has outstanding."""

    host: str
    port: int
    outstanding: int = 0
    idle: deque[Connection] = field(default_factory=deque)

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        hostport = url.split("://", 1)[-1].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        return cls(host, int(port))

    async def _connect(self) -> Connection:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return Connection(reader, writer)

    async def send(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Response:
        head = b"".join(
            [
                f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n".encode(),
                *(name + b": " + value + b"\r\n" for name, value in headers),
                b"content-length: %d\r\n\r\n" % len(body),
            ]
        )
        reused = bool(self.idle)
        connection = self.idle.pop() if reused else await self._connect()
        try:
            response, keep = await connection.request(head, body)
        except ConnectFailed:
            connection.close()
            if not reused:
                raise
            # A kept-alive connection the replica closed meanwhile: one fresh try on this one.
            connection = await self._connect()
            try:
                response, keep = await connection.request(head, body)
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
