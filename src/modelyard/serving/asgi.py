"""The ASGI pieces every data-plane application shares: the gateway, its realtime routes and the
replicas, all served by `modelyard.serving.http`.

- the types of an ASGI 3 application (the part the data plane uses);
- `read_body`: the one reader of a request body, with its size limit (413) and the client that
  leaves half-way (499): nothing of a request cut short is ever used;
- `bearer`: the API key of an ``Authorization: Bearer`` header;
- `respond`: a whole answer, head and body, in two messages.

Rejections are `modelyard.errors` classes, each with its ``http_status``; how they are written
into a body stays with each protocol (OIP's ``{"error": "..."}``, the realtime API's
``{"error": {"code", "message"}}``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from modelyard.errors import ClientClosed, PayloadTooLarge

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
JSON = b"application/json"


async def read_body(receive: Receive, limit: int, advice: str = "") -> bytes:
    """The request's whole body, at most ``limit`` bytes.

    Raises `PayloadTooLarge` ("request body over {limit} bytes" + ``advice``) as soon as more
    arrived, without reading the rest, and `ClientClosed` when the client disconnected first."""
    message = await receive()
    more: bool = message.get("more_body", False)
    body: bytes = message.get("body", b"")
    if not more and message["type"] == "http.request" and len(body) <= limit:
        return body  # the usual case: one message, nothing to join
    chunks = [body]
    size = len(body)
    while True:
        if message["type"] == "http.disconnect":
            raise ClientClosed("the client closed the connection before sending the whole body")
        if size > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes{advice}")
        if not more:
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        message = await receive()
        more = message.get("more_body", False)
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)


def bearer(authorization: bytes | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header value; None without one."""
    if not authorization:
        return None
    text = authorization.decode()
    return text[7:] if text[:7].lower() == "bearer " else None


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer with ``body`` (its length given), ``extra`` headers after the content type."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
