"""The gateway's own rules, in process, in front of a small real upstream (`test_upstream`'s
Replica on `modelyard.serving.http`): fast tests of what the end-to-end ones cannot reach."""

from __future__ import annotations

import asyncio
import hashlib
import socket

from modelyard.gateway.app import Gateway
from modelyard.gateway.routes import Routes
from modelyard.serving import http
from tests.gateway.test_upstream import replica

SECRET = "s3cret"
TOKEN = f"my_k1_{SECRET}"


def table(port: int) -> dict[str, object]:
    return {
        "version": 1,
        "epoch": "e",
        "deployments": {
            "team/echo": {
                "status": "ready",
                "timeout_s": 5,
                "max_body_bytes": 1 << 20,
                "revisions": [
                    {
                        "id": "r1",
                        "name": "echo-00001",
                        "percent": 100,
                        "tags": [],
                        "endpoints": [f"http://127.0.0.1:{port}"],
                    }
                ],
            }
        },
        "keys": {
            "k1": {"hash": hashlib.sha256(SECRET.encode()).hexdigest(), "admin": True, "roles": {}}
        },
    }


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
