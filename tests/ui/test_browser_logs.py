"""The deployment page's live log panel in a real browser: a line a replica logs while the page is
open appears in it, as text."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.registry.records import VersionSpec
from modelyard.serving.replica_headers import TOKEN_HEADER
from modelyard.serving.states import ReplicaState
from tests.ui.test_browser import LIVE_DEADLINE_MS, Tab, chromium, tab

pytestmark = pytest.mark.slow
__all__ = ["chromium", "tab"]  # the fixtures this module uses

MODEL_PY = """
import logging

log = logging.getLogger("model")


def predict(inputs):
    x = next(iter(inputs.values()))
    log.info("served <b>%s</b>", x.tolist())
    return {"y": x * 2}
"""


def test_a_line_a_replica_logs_appears_in_the_open_page(
    tab: Tab, teams: Client, alpha_key: str, server: BackgroundServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "model.py").write_text(MODEL_PY)
    teams.push("alpha/echo", folder, VersionSpec(runtime="python"))
    teams.create_deployment(
        "alpha", "echo", "echo@latest", autoscaling={"min_replicas": 1, "max_replicas": 1}
    )
    teams.wait_deployment("alpha", "echo", timeout=60)
    plane = server.plane
    (revision,) = [r.revision for p in plane.deployments.plans() for r in p.routes]
    (replica,) = [
        r for r in plane.orchestrator.replicas(revision.id) if r.state == ReplicaState.READY
    ]

    page = tab.page
    tab.sign_in(alpha_key)
    page.goto("/ui/ns/alpha/deployments/echo")
    panel = page.locator("#log-panel")
    expect(panel).to_contain_text("loaded from", timeout=LIVE_DEADLINE_MS)  # what it wrote

    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [42.0]}]}
    answer = httpx.post(
        f"{replica.url}/v2/models/echo/infer",
        json=body,
        headers={TOKEN_HEADER.decode(): revision.token},
    )
    assert answer.status_code == 200, answer.text
    line = panel.locator(".log-line", has_text="served")
    expect(line).to_contain_text("INFO model served <b>[42.0]</b>", timeout=LIVE_DEADLINE_MS)
    expect(line.locator(".replica")).to_have_text(replica.id)
    assert panel.locator("b").count() == 0  # text, never markup
    # the page's main part is drawn again on events: the panel keeps its lines and goes on
    teams.update_deployment("alpha", "echo", timeout_s=20)
    expect(page.locator("#revision-2")).to_be_visible(timeout=LIVE_DEADLINE_MS)
    expect(line).to_have_count(1)
    expect(panel.locator(".log-line", has_text="-00002-")).not_to_have_count(0, timeout=20_000)
    assert tab.errors == []
    assert tab.hosts == {server.url.split("/")[2]}
