"""The search route's answer to a query that is not an image: refused before any index or
embedder is needed, so a replica of the runtime without a loaded index shows it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import httpx

from modelyard.apps.image_search.runtime import ImageSearchRuntime
from modelyard.serving.server import ModelServer


def test_a_text_file_as_the_query_image_is_a_400_with_a_clear_message() -> None:
    """``curl -F image=@notes.txt '.../search?k=5'``, as a replica answers it."""
    server = ModelServer("image-search")
    server.runtime = ImageSearchRuntime()

    async def send() -> httpx.Response:
        # ModelServer types the ASGI scope and messages as dicts, httpx as mutable mappings
        transport = httpx.ASGITransport(app=cast(Any, server))
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as http:
            return await http.post(
                "/search",
                params={"k": 5},
                files={"image": ("notes.txt", b"shopping list: milk\n", "text/plain")},
            )

    answer = asyncio.run(send())
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "not an image: no JPEG, PNG, WebP, GIF, BMP or TIFF decoder recognises the "
        "data (it begins b'shopping list: milk\\n')"
    }
