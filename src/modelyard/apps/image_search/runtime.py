"""The ``image-search`` runtime: serves an index version built by the ``image-index`` pipeline.

``POST /search`` takes an image (a multipart upload in the field ``image``, or JSON
``{"image": "<base64>"}``) or an item of the catalog (``{"id": "..."}``), and ``k`` (query
parameter or JSON field, default 10, at most 100); it answers the top-k items with their scores
and catalog metadata. The same deployment answers OIP v2 with the embedding of images sent as a
BYTES tensor of base64 strings (input ``image``, output ``embedding``).

Errors: 400 for a body that is not an image (or not what the route takes), 404 for an unknown
item id, 413 past the image size limit (``decode_image``'s ``max_pixels``) or the deployment's
``max_body_mb``.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelyard.errors import InvalidInput, NotFound
from modelyard.serving.protocol import TensorSpec
from modelyard.serving.runtimes import HttpRequest, RouteHandler, Runtime

MAX_K = 100


class ImageSearchRuntime(Runtime):
    name: ClassVar[str] = "image-search"
    platform: ClassVar[str] = "modelyard-image-search"
    batchable = False

    def load(self, path: Path, signature: Mapping[str, Any]) -> None:
        from modelyard.apps.image_search.embedders import load_embedder
        from modelyard.apps.image_search.index import load_index

        identity = json.loads((path / "embedder.json").read_text())
        self.embedder = load_embedder(identity["kind"])
        if self.embedder.name != identity["name"]:
            raise InvalidInput(
                f"the index was built with {identity['name']} but this replica has "
                f"{self.embedder.name}: install the same embedder weights, or rebuild the index"
            )
        self.index = load_index(path / "index")
        self.vectors = np.load(path / "vectors.npy")
        self.items: list[dict[str, Any]] = json.loads((path / "items.json").read_text())
        self.positions = {item["id"]: i for i, item in enumerate(self.items)}
        self._inputs = [TensorSpec("image", "BYTES", (-1,))]
        self._outputs = [TensorSpec("embedding", "FP32", (-1, self.embedder.dim))]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from modelyard.apps.image_search.embedders import decode_image

        images = [decode_image(_b64(str(value))) for value in np.ravel(inputs["image"])]
        return {"embedding": self.embedder.embed(images)}

    def routes(self) -> Mapping[str, RouteHandler]:
        return {"/search": self.search}

    def search(self, request: HttpRequest) -> tuple[int, bytes]:
        from modelyard.apps.image_search.embedders import decode_image

        started = time.perf_counter()
        if request.method != "POST":
            raise InvalidInput("POST an image or an item id to /search")
        fields = _fields(request)
        k = _k(fields.get("k", request.query.get("k", "10")))
        if "id" in fields:
            position = self.positions.get(str(fields["id"]))
            if position is None:
                raise NotFound(f"no item {fields['id']!r} in this index")
            query = self.vectors[position : position + 1]
        elif "image" in fields:
            data = fields["image"]
            image = decode_image(data if isinstance(data, bytes) else _b64(str(data)))
            query = self.embedder.embed([image])
        else:
            raise InvalidInput(
                "send an image (multipart field 'image', or JSON {\"image\": base64}) "
                'or a catalog item (JSON {"id": ...})'
            )
        scores, found = self.index.search(query.astype(np.float32), k)
        results = [
            {**self.items[int(position)], "score": round(float(score), 6)}
            for score, position in zip(scores[0], found[0], strict=True)
            if position >= 0
        ]
        took = (time.perf_counter() - started) * 1000
        return 200, json.dumps({"results": results, "took_ms": round(took, 2)}).encode()


def _fields(request: HttpRequest) -> dict[str, Any]:
    kind = request.content_type.split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        head = f"Content-Type: {request.content_type}\r\n\r\n".encode()
        message = BytesParser(policy=policy.HTTP).parsebytes(head + request.body)
        if not message.is_multipart():
            raise InvalidInput("a malformed multipart body: send the image in a field 'image'")
        fields: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = payload if name == "image" else payload.decode(errors="replace")
        return fields
    if kind in ("application/json", ""):
        try:
            body = json.loads(request.body or b"{}")
        except ValueError as exc:
            raise InvalidInput(f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidInput('send a JSON object: {"image": base64} or {"id": ...}')
        return body
    raise InvalidInput(f"content type {kind!r}: send multipart/form-data (field 'image') or JSON")


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("the image is not valid base64") from None


def _k(value: Any) -> int:
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"k must be a whole number, got {value!r}") from None
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be between 1 and {MAX_K}, got {k}")
    return k
