"""The dashboard in a real browser against a real platform (``modelyard up``, its gateway and a
replica): a chart that moves under real load through the gateway, an alert that fires from real
errors, a session that outlives a restart of the control plane; and, against an in-process
control plane, two keys side by side and the realtime screen's figures. Every wait is on the
page's DOM with a deadline; no request leaves 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.registry.records import VersionSpec
from tests.conftest import Serving
from tests.ui.test_browser import LIVE_DEADLINE_MS, Tab, chromium, shoot, tab
from tests.ui.test_pages import ingest

pytestmark = pytest.mark.slow
__all__ = ["chromium", "tab"]  # the fixtures this module uses

MODEL_PY = """
def predict(inputs):
    x = next(iter(inputs.values()))
    if (x < 0).any():
        raise ValueError("negative input")
    return {"y": x * 2}
"""
ALERT_DEADLINE_MS = 120_000
"""The SLO controller evaluates every 30 s, after the gateway's minutes are written."""


def infer_body(value: float) -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [value]}]}


@pytest.fixture
def platform_tab(chromium: Any, serving: Serving) -> Iterator[Tab]:
    opened = Tab(chromium, serving.platform.url)
    yield opened
    opened.close()


def viewer_key(client: Client) -> str:
    _, token = client.create_key("team-viewer", {"team": "viewer"})
    return token


def loopback_only(tab: Tab, url: str) -> None:
    assert tab.hosts == {url.split("/")[2]}  # nothing left 127.0.0.1


def test_under_real_load_the_chart_moves_and_real_errors_fire_an_alert(
    platform_tab: Tab, serving: Serving, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    client = serving.client
    folder = tmp_path / "doubler"
    folder.mkdir()
    (folder / "model.py").write_text(MODEL_PY)
    client.push("team/doubler", folder, VersionSpec(runtime="python"))
    client.create_deployment(
        "team", "doubler", "doubler@latest", autoscaling={"min_replicas": 1, "max_replicas": 1}
    )
    objective = {"name": "availability", "kind": "availability", "target": 0.99}
    client.set_slos("team", "doubler", [objective])
    client.wait_deployment("team", "doubler", timeout=60)
    (revision,) = client.get_deployment("team", "doubler").revisions

    tab, page = platform_tab, platform_tab.page
    tab.sign_in(viewer_key(client))
    page.goto("/ui/ns/team/deployments/doubler")
    expect(page.locator("#live-state")).to_have_text("live")
    rate = page.locator(f'[data-live-value="{revision.id}:qps"]')
    expect(rate).to_have_text("0.00")
    line = page.locator("#per-revision polyline").first
    before = line.get_attribute("points")

    with serving.load("doubler", [], workers=1, body=infer_body(1.0)) as load:
        expect(rate).not_to_have_text("0.00", timeout=LIVE_DEADLINE_MS)
        expect(line).not_to_have_attribute("points", before or "", timeout=LIVE_DEADLINE_MS * 2)
    assert load.answered > 0 and load.failures == [], load.failures[:3]
    shoot(page, "deployment")

    errors = page.locator(f'[data-live-value="{revision.id}:errors"]')
    with serving.load("doubler", [], workers=1, body=infer_body(-1.0)) as failing:
        expect(errors).not_to_have_text("0.00%", timeout=LIVE_DEADLINE_MS)
        firing = page.locator("#alerts li.alert-firing").first
        expect(firing).to_contain_text("availability", timeout=ALERT_DEADLINE_MS)
    assert failing.failures and failing.failures[0].startswith("5"), failing.failures[:1]
    expect(page.locator("#slos .bad")).not_to_have_count(0)  # the budget is spent
    assert tab.errors == []
    loopback_only(tab, serving.platform.url)


def test_a_signed_in_page_outlives_a_restart_of_the_control_plane_but_not_its_key(
    platform_tab: Tab, serving: Serving, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    tab, page = platform_tab, platform_tab.page
    tab.sign_in(viewer_key(serving.client))
    page.goto("/ui/ns/team/events")
    state = page.locator("#live-state")
    expect(state).to_have_text("live")

    serving.platform.kill()
    expect(state).not_to_have_text("live", timeout=LIVE_DEADLINE_MS)
    client = serving.restart()  # same home, same port: the page's stream comes back by itself
    expect(state).to_have_text("live", timeout=30_000)
    (tmp_path / "notes.bin").write_bytes(b"notes")
    client.push("team/notes", tmp_path / "notes.bin")
    expect(page.locator("#events li").first).to_contain_text("team/notes@1")
    page.reload()
    expect(page.locator("h1")).to_have_text("Events of team")  # still signed in

    client.revoke_key("team-viewer")
    expect(page.locator("#signin")).to_be_visible(timeout=LIVE_DEADLINE_MS)
    page.goto("/ui/ns/team/events")
    expect(page.locator("#signin")).to_be_visible()
    # chromium logged the stream cut by the kill and the connections refused meanwhile: only those
    assert [e for e in tab.errors if "net::ERR_" not in e] == []
    loopback_only(tab, serving.platform.url)


def test_a_second_key_sees_only_its_own_namespace(
    chromium: Any, teams: Client, alpha_key: str, server: BackgroundServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    _, beta_key = teams.create_key("beta-viewer", {"beta": "viewer"})
    alpha, beta = Tab(chromium, server.url), Tab(chromium, server.url)
    try:
        alpha.sign_in(alpha_key)
        beta.sign_in(beta_key)
        beta.page.goto("/ui")
        expect(beta.page.locator("#namespace-list a")).to_have_text(["beta"])
        for tab, namespace in ((alpha, "alpha"), (beta, "beta")):
            tab.page.goto(f"/ui/ns/{namespace}/events")
            expect(tab.page.locator("#live-state")).to_have_text("live")

        (tmp_path / "v1").mkdir()
        (tmp_path / "v1" / "weights.bin").write_bytes(b"weights")
        teams.push("alpha/ranker", tmp_path / "v1", VersionSpec(metrics={"auc": 0.91}))
        teams.push("beta/notes", tmp_path / "v1")
        lineage = {"run": "nightly-42", "step": "train"}
        spec = VersionSpec(metrics={"auc": 0.93}, lineage=lineage)
        teams.push("alpha/ranker", tmp_path / "v1", spec)
        expect(alpha.page.locator("#events li").first).to_contain_text("alpha/ranker@2")
        expect(beta.page.locator("#events li").first).to_contain_text("beta/notes@1")
        assert "alpha" not in beta.page.locator("#events").inner_text()

        beta.page.goto("/ui/ns/alpha/models/ranker")
        expect(beta.page.locator("#error-message")).to_contain_text("no viewer role")
        alpha.page.goto("/ui/ns/alpha/models/ranker")
        expect(alpha.page.locator("main")).to_contain_text("nightly-42")
        shoot(alpha.page, "model")
        assert alpha.errors == []
        assert [e for e in beta.errors if "403" not in e] == []  # chromium logs the 403 answer
        loopback_only(alpha, server.url)
        loopback_only(beta, server.url)
    finally:
        alpha.close()
        beta.close()


def test_the_realtime_screen_follows_its_stream_live(
    tab: Tab, teams: Client, alpha_key: str, server: BackgroundServer
) -> None:
    from playwright.sync_api import expect

    teams.realtime.create_stream("alpha", "clicks")
    teams.realtime.create("alpha", "scorer", stream="clicks", function="tests.realtime.nowhere:f")
    ingest(server.plane, 30, predicted=10)
    page = tab.page
    tab.sign_in(alpha_key)
    page.goto("/ui/ns/alpha/realtime")
    expect(page.locator("#live-state")).to_have_text("live")
    rate = page.locator('[data-live-value="realtime/stream/clicks:events_per_s"]')
    expect(rate).to_have_text("0.50")  # 30 events in the last minute
    expect(page.locator('[data-live-value="realtime/deployment/scorer:p50"]')).to_have_text(
        "250.0 ms"
    )
    ingest(server.plane, 30, predicted=0, first=30)
    expect(rate).to_have_text("1.00", timeout=LIVE_DEADLINE_MS)  # no reload
    expect(page.locator('[data-live-value="realtime/deployment/scorer:lag_events"]')).to_have_text(
        "60"
    )
    shoot(page, "realtime")
    assert tab.errors == []
    loopback_only(tab, server.url)
