"""The control plane's access lines: one per request, but not for its own components' polling."""

from __future__ import annotations

import logging

import pytest

from modelyard.client import Client
from modelyard.serving.replica_headers import INTERNAL_HEADER


def _levels(caplog: pytest.LogCaptureFixture, path: str) -> list[int]:
    return [
        r.levelno for r in caplog.records if r.name == "modelyard.access" and path in r.getMessage()
    ]


def test_a_replicas_polling_is_not_an_access_line_but_its_errors_are(
    admin: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="modelyard.access")
    admin.create_namespace("team")
    admin.http.get("/namespaces/team")
    assert _levels(caplog, "/api/v1/namespaces/team ") == [logging.INFO]

    caplog.clear()
    # a realtime worker asks for its role every second: 86,400 lines a day were noise
    admin.http.get("/namespaces/team", headers={INTERNAL_HEADER: "realtime-worker"})
    admin.http.get("/namespaces/ghost", headers={INTERNAL_HEADER: "realtime-worker"})
    assert _levels(caplog, "/api/v1/namespaces/team ") == [logging.DEBUG]
    assert _levels(caplog, "/api/v1/namespaces/ghost ") == [logging.INFO]  # a 404 still shows

    caplog.clear()  # a write is always an access line, whatever it is marked
    admin.http.post("/namespaces", json={"name": "t2"}, headers={INTERNAL_HEADER: "x"})
    assert _levels(caplog, "/api/v1/namespaces ") == [logging.INFO]
