"""The one request body reader every data-plane application uses (`modelyard.serving.asgi`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modelyard.errors import ClientClosed, PayloadTooLarge
from modelyard.serving.asgi import Message, Receive, bearer, read_body


def messages(*sent: Message) -> tuple[Receive, list[Message]]:
    """A ``receive`` that hands out ``sent`` in order, and what is still unread."""
    left = list(sent)

    async def receive() -> Message:
        return left.pop(0)

    return receive, left


def chunk(body: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


def read(receive: Receive, limit: int, advice: str = "") -> Any:
    return asyncio.run(read_body(receive, limit, advice))


def test_a_body_in_one_message_or_several() -> None:
    assert read(messages(chunk(b"abc", False))[0], 3) == b"abc"
    assert read(messages(chunk(b"ab", True), chunk(b"", True), chunk(b"c", False))[0], 3) == b"abc"
    assert read(messages({"type": "http.request"})[0], 0) == b""


def test_a_body_over_the_limit_is_refused_before_the_rest_is_read() -> None:
    receive, left = messages(chunk(b"ab", True), chunk(b"cd", True), chunk(b"ef", False))
    with pytest.raises(PayloadTooLarge) as refused:
        read(receive, 3, ": send less")
    assert refused.value.message == "request body over 3 bytes: send less"
    assert refused.value.http_status == 413
    assert len(left) == 1
    with pytest.raises(PayloadTooLarge):
        read(messages(chunk(b"abcd", False))[0], 3)


def test_a_client_that_leaves_half_way_gives_no_body() -> None:
    receive, _ = messages(chunk(b"ab", True), {"type": "http.disconnect"})
    with pytest.raises(ClientClosed) as closed:
        read(receive, 100)
    assert closed.value.http_status == 499
    with pytest.raises(ClientClosed):
        read(messages({"type": "http.disconnect"})[0], 100)


def test_the_key_of_a_bearer_header() -> None:
    assert bearer(b"Bearer my_k1_s") == "my_k1_s"
    assert bearer(b"bearer my_k1_s") == "my_k1_s"
    assert bearer(b"Basic abc") is None
    assert bearer(b"") is None and bearer(None) is None
