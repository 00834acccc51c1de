from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modelyard.client import Client
from modelyard.controlplane import ControlPlane
from modelyard.errors import InvalidInput
from modelyard.events.webhooks import SIGNATURE_HEADER, Backoff, verify_signature
from modelyard.settings import Settings
from modelyard.testing import free_port, wait_for


class Receiver:
    """A real HTTP endpoint that records what it gets; it can fail or hang on purpose."""

    def __init__(self, port: int) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.release = threading.Event()
        self.release.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.release.wait(30)
                outer.received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def plane(settings: Settings) -> Iterator[ControlPlane]:
    cp = ControlPlane.build(
        settings, backoff=Backoff(base_seconds=0.05, max_seconds=0.2, max_attempts=50)
    )
    yield cp
    cp.close()


def push(admin: Client, tmp_path: Path, name: str) -> None:
    (tmp_path / f"{name}.bin").write_bytes(name.encode())
    admin.push(f"team/{name}", tmp_path / f"{name}.bin")


def test_webhooks_are_signed_and_filtered(admin: Client, tmp_path: Path) -> None:
    admin.create_namespace("team")
    receiver = Receiver(free_port())
    try:
        url = f"http://127.0.0.1:{receiver.server.server_port}/hook"
        _, secret = admin.create_webhook("team", url, ["model.version.*"])
        push(admin, tmp_path, "m")
        wait_for(lambda: len(receiver.received) == 1)
        headers, body = receiver.received[0]
        assert verify_signature(secret, body, headers[SIGNATURE_HEADER])
        assert not verify_signature("other secret", body, headers[SIGNATURE_HEADER])
        event = json.loads(body)
        assert event["type"] == headers["X-Modelyard-Event"] == "model.version.committed"
        assert event["data"]["name"] == "m"
    finally:
        receiver.close()


def test_a_down_endpoint_is_retried_until_it_is_up(admin: Client, tmp_path: Path) -> None:
    admin.create_namespace("team")
    port = free_port()
    hook, _ = admin.create_webhook("team", f"http://127.0.0.1:{port}/hook", ["model.*"])
    push(admin, tmp_path, "m")

    def attempts() -> int:
        rows = admin.request("GET", f"/namespaces/team/webhooks/{hook.id}/deliveries")
        return int(rows[0]["attempts"]) if rows else 0

    wait_for(lambda: attempts() >= 2)
    receiver = Receiver(port)
    try:
        wait_for(lambda: len(receiver.received) == 1)
        rows = admin.request("GET", f"/namespaces/team/webhooks/{hook.id}/deliveries")
        wait_for(
            lambda: (
                admin.request("GET", f"/namespaces/team/webhooks/{hook.id}/deliveries")[0]["state"]
                == "delivered"
            )
        )
        assert rows[0]["attempts"] >= 2
    finally:
        receiver.close()


def test_a_hanging_endpoint_never_blocks_the_writer(admin: Client, tmp_path: Path) -> None:
    admin.create_namespace("team")
    receiver = Receiver(free_port())
    receiver.release.clear()  # the endpoint hangs until released
    try:
        admin.create_webhook("team", f"http://127.0.0.1:{receiver.server.server_port}/", ["*"])
        push(admin, tmp_path, "first")
        push(admin, tmp_path, "second")  # commits while the first delivery hangs
        assert [v.number for v in admin.list_versions("team/second")] == [1]
        assert receiver.received == []
        receiver.release.set()
        wait_for(lambda: len(receiver.received) >= 2)
    finally:
        receiver.close()


def test_a_pattern_no_event_type_matches_is_refused(admin: Client) -> None:
    admin.create_namespace("team")
    for typo, hint in [
        ("modle.*", "model.*"),
        ("model.version.comitted", "model.version.committed"),
    ]:
        said = f"{typo!r} matches no event type: did you mean {hint!r}?"
        with pytest.raises(InvalidInput, match=re.escape(said)):
            admin.create_webhook("team", "http://127.0.0.1:9/hook", [typo])
    with pytest.raises(InvalidInput, match=re.escape("'model.*.committed' matches no event type")):
        admin.create_webhook("team", "http://127.0.0.1:9/hook", ["model.*.committed"])
    assert admin.list_webhooks("team") == []
    hook, _ = admin.create_webhook("team", "http://127.0.0.1:9/hook", ["model.version.*", "*"])
    assert hook.events == ["model.version.*", "*"]
