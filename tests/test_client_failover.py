"""The SDK during a failover: a write a standby refused (503 ``unavailable``, never executed) is
sent again after its ``Retry-After`` until a leader takes it or the retry budget is spent; other
errors, streamed bodies and an unreachable server fail at once."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.api.errors import error_response
from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.controlplane import ControlPlane
from modelyard.errors import ServerUnreachable, StoreError, Unavailable
from modelyard.lease import LeaseState
from modelyard.settings import Settings
from modelyard.testing import wait_for

LEADER_URL = "http://leader.example:8000"


class Scripted:
    """A real HTTP server on a free port of 127.0.0.1 that refuses the first ``refusals``
    requests with ``code`` (503, the body and ``Retry-After`` a standby sends), then answers
    201 with a namespace; ``seen`` holds each request's method, path and body."""

    def __init__(self, refusals: int, code: str = "unavailable", retry_after: str = "0") -> None:
        self.refusals = refusals
        self.seen: list[tuple[str, str, bytes]] = []
        refusal = error_response(
            503,
            code,
            f"this control plane is a standby: a at {LEADER_URL} holds the lease (term 1); "
            f"send the request there, or retry in {retry_after} s",
            leader="a",
            leader_url=LEADER_URL,
            retry_after=retry_after,
        ).body
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Transfer-Encoding") == "chunked":
                    body = self._chunked()
                script.seen.append((self.command, self.path, body))
                if len(script.seen) <= script.refusals:
                    self._answer(503, bytes(refusal), {"Retry-After": retry_after})
                else:
                    namespace = {
                        "name": "team",
                        "description": "",
                        "created_at": "2026-01-01T00:00:00Z",
                    }
                    self._answer(201, json.dumps(namespace).encode(), {})

            do_PUT = do_POST

            def _chunked(self) -> bytes:
                data = b""
                while size := int(self.rfile.readline().strip() or b"0", 16):
                    data += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return data

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test says what it saw

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> Scripted:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def standby_then_leader() -> Iterator[Scripted]:
    with Scripted(refusals=3) as server:
        yield server


def test_a_write_a_standby_refused_is_sent_again_until_it_is_taken(
    standby_then_leader: Scripted,
) -> None:
    with Client(standby_then_leader.url, "key", retry_unavailable_s=30) as client:
        created = client.create_namespace("team", "the ranking team")
    assert created.name == "team"
    seen = standby_then_leader.seen
    assert len(seen) == 4  # three refusals, then the one that was taken
    assert {(method, path) for method, path, _ in seen} == {("POST", "/api/v1/namespaces")}
    assert {body for _, _, body in seen} == {seen[0][2]}  # the same request every time
    assert json.loads(seen[0][2]) == {"name": "team", "description": "the ranking team"}


def test_past_the_budget_the_refusal_is_raised_naming_the_leader() -> None:
    with Scripted(refusals=1_000_000) as server, Client(server.url, retry_unavailable_s=0.5) as c:
        started = time.monotonic()
        with pytest.raises(Unavailable) as raised:
            c.create_namespace("team")
        took = time.monotonic() - started
    assert LEADER_URL in raised.value.message
    assert raised.value.details["leader_url"] == LEADER_URL
    assert "times over" in raised.value.message  # it says how long it retried
    assert 0.5 <= took < 5
    assert 2 <= len(server.seen) <= 10  # a "Retry-After: 0" waits a little, it does not spin


def test_a_budget_of_zero_sends_once() -> None:
    with (
        Scripted(refusals=1) as server,
        Client(server.url, retry_unavailable_s=0) as client,
        pytest.raises(Unavailable, match="standby"),
    ):
        client.create_namespace("team")
    assert len(server.seen) == 1


def test_another_503_is_not_retried() -> None:
    with (
        Scripted(refusals=1, code="store_unavailable") as server,
        Client(server.url) as client,
        pytest.raises(StoreError),
    ):
        client.create_namespace("team")
    assert len(server.seen) == 1


def test_a_streamed_body_is_not_sent_again() -> None:
    """A file's chunks cannot be replayed (the upload of a version's file sends them so)."""
    with (
        Scripted(refusals=1) as server,
        Client(server.url) as client,
        pytest.raises(Unavailable),
    ):
        client.request("PUT", "/drafts/1/files/a.bin", content=iter([b"abc", b"def"]))
    assert server.seen == [("PUT", "/api/v1/drafts/1/files/a.bin", b"abcdef")]


def test_a_server_that_is_not_running_fails_at_once() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", retry_unavailable_s=30) as client:
        started = time.monotonic()
        with pytest.raises(ServerUnreachable, match="modelyard up"):
            client.create_namespace("team")
    assert time.monotonic() - started < 5


def test_a_write_whose_answer_never_came_says_it_may_have_taken_effect() -> None:
    """A server that reads the request and closes the connection (killed mid-request): a write
    is not said to be unreachable-and-not-done, but sent and maybe done; a read, only gone."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def hang_up() -> None:
            for _ in range(2):
                conn, _ = listener.accept()
                with conn:
                    conn.recv(65536)

        thread = threading.Thread(target=hang_up)
        thread.start()
        with Client(f"http://127.0.0.1:{port}", api_key="k", retry_unavailable_s=0) as client:
            with pytest.raises(ServerUnreachable, match="may have taken effect; look"):
                client.create_namespace("team")
            with pytest.raises(ServerUnreachable, match=r"stopped answering GET .* still running"):
                client.list_namespaces()
        thread.join(10)


def test_a_write_sent_to_a_standby_succeeds_once_it_leads(tmp_path: Path) -> None:
    """Two real control planes on one database: the SDK's write to the standby is refused until
    the leader stops and the standby takes the lease, then taken, once."""
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = (
        ControlPlane.build(
            Settings(
                home=tmp_path / name, database_url=database, lease_seconds=3, lease_retry_seconds=1
            )
        )
        for name in ("a", "b")
    )
    answers: list[int] = []
    try:
        first.ensure_admin_key()
        token = first.settings.admin_key_path.read_text().strip()
        with contextlib.ExitStack() as stack, contextlib.ExitStack() as leading:
            leading.enter_context(BackgroundServer(first))  # started first, it takes the lease
            standby = stack.enter_context(BackgroundServer(second))
            assert second.lease.state == LeaseState.STANDBY
            client = stack.enter_context(Client(standby.url, token, retry_unavailable_s=60))

            def record(response: httpx.Response) -> None:
                answers.append(response.status_code)

            client.http.event_hooks["response"].append(record)
            pool = stack.enter_context(ThreadPoolExecutor(1))
            created = pool.submit(client.create_namespace, "team")
            wait_for(lambda: 503 in answers, 30, "the standby to refuse the write")
            leading.close()  # the leader stops and hands the lease back
            assert created.result(timeout=60).name == "team"
            assert second.lease.leading
        assert answers[0] == 503 and answers[-1] == 201 and answers.count(201) == 1
        assert [ns.name for ns in second.namespaces.list()] == ["team"]
    finally:
        second.close()
        first.close()
