"""A runtime plug-in of the tests' own, loaded by ``module:Class``: it doubles its input and
serves a route of its own."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelyard.errors import InvalidInput
from modelyard.serving.runtimes import HttpRequest, RouteHandler, Runtime


class EchoRuntime(Runtime):
    name: ClassVar[str] = "echo"
    platform: ClassVar[str] = "tests"

    def load(self, path: Path, signature: Mapping[str, Any]) -> None:
        self.greeting = (path / "greeting.txt").read_text().strip()

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"doubled": next(iter(inputs.values())) * 2}

    def routes(self) -> Mapping[str, RouteHandler]:
        return {"/greet": self.greet}

    def greet(self, request: HttpRequest) -> tuple[int, bytes]:
        if request.content_type != "application/json":
            raise InvalidInput("send JSON")
        who = json.loads(request.body)["name"]
        return 200, json.dumps({"text": f"{self.greeting}, {who}", "q": request.query}).encode()
