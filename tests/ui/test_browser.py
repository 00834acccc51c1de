"""The dashboard in a real browser: Debian's chromium driven by Playwright (never a browser build
of Playwright's own). Each wait is on the page's DOM with a deadline."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.registry.records import VersionSpec
from modelyard.ui.web import CSP
from tests.conftest import unavailable
from tests.ui.test_pages import deployed, traffic

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ENDED = re.compile("succeeded|failed|cancelled")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}
"""What the screenshots show: one screen, a few tens of KB each."""
LIVE_DEADLINE_MS = 5_000
"""The page shows a change within a second on an idle machine; the deadline allows a busy one."""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed: pip install -e '.[dev]'")
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} is missing: make tools installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


class Tab:
    """A page with what it logged and requested recorded, for the checks at the end."""

    def __init__(self, chromium: Any, base: str) -> None:
        self.context = chromium.new_context(base_url=base, viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.page.set_default_timeout(10_000)
        self.errors: list[str] = []
        self.hosts: set[str] = set()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.hosts.add(r.url.split("/")[2]))

    def sign_in(self, key: str, *, here: bool = False) -> None:
        """Fill in the sign-in form (``here``: the one on screen, which knows where to go next)."""
        if not here:
            self.page.goto("/ui/signin")
        self.page.fill("#key", key)
        self.page.click("#signin")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(chromium: Any, server: BackgroundServer) -> Iterator[Tab]:
    opened = Tab(chromium, server.url)
    yield opened
    opened.close()


def shoot(page: Any, name: str) -> None:
    """Save what the page shows as ``docs/screenshots/ui-<name>.png``, the README's pictures: on
    every run, so they stay current (what they show may differ from run to run; no test compares
    them). Written to a temporary name and renamed, so a reader never sees half a file."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / f"ui-{name}.png"
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    page.screenshot(path=str(partial), type="png")
    os.replace(partial, target)


def test_sign_in_see_only_permitted_namespaces_and_sign_out(
    tab: Tab, teams: Client, alpha_key: str, server: BackgroundServer
) -> None:
    from playwright.sync_api import expect

    page = tab.page
    response = page.goto("/ui/ns/alpha")
    assert response is not None and response.url.endswith("/ui/signin?next=%2Fui%2Fns%2Falpha")
    assert response.headers["content-security-policy"] == CSP
    shoot(page, "signin")
    tab.sign_in(alpha_key, here=True)
    expect(page.locator("h1")).to_have_text("alpha")
    page.goto("/ui")
    expect(page.locator("#namespace-list a")).to_have_text(["alpha"])

    page.goto("/ui/ns/beta")
    expect(page.locator("#error-message")).to_contain_text("no viewer role")
    assert page.locator("#namespace-list").count() == 0
    # chromium logs the 403 answer itself as a console error: that one, and only it, is expected
    assert [e for e in tab.errors if "403" not in e] == []
    tab.errors.clear()

    page.goto("/ui/ns/alpha")
    page.click("#signout")
    expect(page.locator("#signin")).to_be_visible()
    page.goto("/ui/ns/alpha")
    expect(page.locator("#signin")).to_be_visible()  # the session ended
    assert tab.errors == []
    assert tab.hosts == {server.url.split("/")[2]}  # nothing left 127.0.0.1


def test_a_forged_form_is_refused(tab: Tab, teams: Client, alpha_key: str) -> None:
    from playwright.sync_api import expect

    page = tab.page
    tab.sign_in(alpha_key)
    page.goto("/ui/ns/alpha")
    expect(page.locator("h1")).to_have_text("alpha")
    page.eval_on_selector(".signout input[name=csrf]", "el => el.value = 'forged'")
    page.click("#signout")
    expect(page.locator("#error-message")).to_contain_text("CSRF")
    page.goto("/ui/ns/alpha")
    expect(page.locator("h1")).to_have_text("alpha")  # still signed in


def test_the_deployment_page_follows_traffic_and_new_revisions_live(
    tab: Tab, teams: Client, alpha_key: str, server: BackgroundServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    plane = server.plane
    deployed(teams, tmp_path)
    info = plane.deployments.get("alpha", "iris")
    revision = info.revisions[-1]
    with plane.db.read() as session:
        deployment_id = plane.deployments.row(session, "alpha", "iris").id
    page = tab.page
    tab.sign_in(alpha_key)
    page.goto("/ui/ns/alpha/deployments/iris")
    expect(page.locator("#live-state")).to_have_text("live")
    rate = page.locator(f'[data-live-value="{revision.id}:qps"]')
    expect(rate).to_have_text("0.00")

    started = time.monotonic()
    traffic(plane, revision.id, deployment_id, 40)
    expect(rate).to_have_text("4.00", timeout=LIVE_DEADLINE_MS)
    traffic_seconds = time.monotonic() - started

    started = time.monotonic()
    teams.update_deployment("alpha", "iris", timeout_s=30)
    expect(page.locator("#revision-2")).to_be_visible(timeout=LIVE_DEADLINE_MS)
    revision_seconds = time.monotonic() - started
    print(f"live: traffic on screen in {traffic_seconds:.3f} s, revision {revision_seconds:.3f} s")

    # A hidden tab drops its connection; shown again, it catches up on what it missed.
    page.evaluate(
        "() => { Object.defineProperty(document, 'hidden', {value: true, configurable: true});"
        " document.dispatchEvent(new Event('visibilitychange')); }"
    )
    expect(page.locator("#live-state")).to_have_text("paused")
    teams.update_deployment("alpha", "iris", timeout_s=20)
    page.evaluate(
        "() => { Object.defineProperty(document, 'hidden', {value: false, configurable: true});"
        " document.dispatchEvent(new Event('visibilitychange')); }"
    )
    expect(page.locator("#revision-3")).to_be_visible(timeout=LIVE_DEADLINE_MS)
    expect(page.locator("#live-state")).to_have_text("live")

    page.goto("/ui/ns/alpha")
    expect(page.locator("#live-state")).to_have_text("live")
    shoot(page, "overview")
    assert tab.errors == []
    assert tab.hosts == {server.url.split("/")[2]}


def test_a_pipeline_run_is_followed_step_by_step_to_its_end(
    tab: Tab, teams: Client, alpha_key: str, server: BackgroundServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    from tests.pipelines import flows

    teams.create_namespace("team")  # where the chain publishes its model
    teams.register_pipeline("alpha", flows.chain)
    page = tab.page
    tab.sign_in(alpha_key)
    run = teams.run_pipeline("alpha", "chain", {"ledger": str(tmp_path / "ledger.txt")})
    page.goto(f"/ui/ns/alpha/runs/{run.id}")
    expect(page.locator("#live-state")).to_have_text("live")
    expect(page.locator("#run-state")).to_have_text(ENDED, timeout=90_000)
    assert page.locator("#run-state").text_content() == "succeeded", page.content()
    nodes = page.locator("svg.dag g.node")
    assert nodes.count() >= 4
    states = [(n.get_attribute("data-node"), n.get_attribute("class")) for n in nodes.all()]
    assert page.locator("svg.dag g.node.state-succeeded").count() == nodes.count(), states
    assert page.locator("svg.dag line.edge").count() >= 3
    expect(page.locator("#log li").first).to_be_visible()
    page.goto("/ui/ns/alpha/runs?state=succeeded")
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    page.goto("/ui/ns/alpha/runs?state=failed")
    expect(page.locator("#runs tbody tr")).to_contain_text("No runs.")
    page.goto(f"/ui/ns/alpha/runs/{run.id}")
    expect(page.locator("#run-state")).to_have_text("succeeded")
    shoot(page, "run")
    assert tab.errors == []


def test_the_events_feed_is_live_and_filtered(
    tab: Tab, teams: Client, alpha_key: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = tab.page
    tab.sign_in(alpha_key)
    page.goto("/ui/ns/alpha/events")
    page.fill("#type-filter", "model.*")
    page.click("#event-filter button")
    expect(page.locator("#live-state")).to_have_text("live")
    (tmp_path / "notes.bin").write_bytes(b"<img src=x onerror=alert(1)>")
    teams.push("beta/hidden", tmp_path / "notes.bin")  # another namespace: never shown
    teams.push("alpha/notes", tmp_path / "notes.bin")
    expect(page.locator("#events li").first).to_contain_text("model.version.committed")
    expect(page.locator("#events li").first).to_contain_text("alpha/notes@1")
    assert "beta" not in page.locator("#events").inner_text()
    shoot(page, "events")
    assert tab.errors == []


def test_an_open_page_of_a_revoked_key_signs_out_at_once(
    tab: Tab, teams: Client, alpha_key: str
) -> None:
    from playwright.sync_api import expect

    page = tab.page
    tab.sign_in(alpha_key)
    page.goto("/ui/ns/alpha")
    expect(page.locator("#live-state")).to_have_text("live")
    teams.revoke_key("alpha-viewer")
    expect(page.locator("#signin")).to_be_visible(timeout=LIVE_DEADLINE_MS)
    assert tab.errors == []


def test_a_canary_rolls_back_on_screen_with_the_judges_evidence(
    tab: Tab, teams: Client, alpha_key: str, server: BackgroundServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    from tests.conftest import iris_model

    sklearn = VersionSpec(runtime="sklearn")
    teams.push("alpha/iris", iris_model(tmp_path / "v1"), sklearn)
    teams.create_deployment(
        "alpha", "iris", "iris@latest", autoscaling={"min_replicas": 1, "max_replicas": 1}
    )
    teams.set_strategy(
        "alpha",
        "iris",
        strategy="canary",
        steps=[10, 50],
        min_step_seconds=0,
        max_step_seconds=30,
        analysis={"min_requests": 100},
    )
    teams.wait_deployment("alpha", "iris", timeout=60)
    page = tab.page
    tab.sign_in(alpha_key)
    page.goto("/ui/ns/alpha/deployments/iris")
    expect(page.locator("#live-state")).to_have_text("live")
    teams.push("alpha/iris", iris_model(tmp_path / "v2", max_iter=20), sklearn)
    canary = page.locator("article.rollout").first
    expect(canary).to_contain_text("running", timeout=60_000)  # the push made revision 2

    ids = {r.number: r.id for r in teams.get_deployment("alpha", "iris").revisions}
    server.plane.telemetry.add(
        {
            "revisions": {
                ids[1]: {"requests": 900, "errors": 0, "latencies_ms": [5.0] * 900},
                ids[2]: {"requests": 100, "errors": 5, "latencies_ms": [5.0] * 100},
            }
        }
    )
    expect(canary).to_contain_text("rolled_back", timeout=LIVE_DEADLINE_MS * 2)
    expect(canary.locator(".verdict-fail")).to_have_count(1)
    expect(canary.locator(".evidence span").first).to_be_visible()
    assert "error" in canary.inner_text()
    canary.scroll_into_view_if_needed()
    shoot(page, "rollback")
    assert tab.errors == []


def test_a_deployment_deleted_while_open_says_so(
    tab: Tab, teams: Client, alpha_key: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    deployed(teams, tmp_path)
    page = tab.page
    tab.sign_in(alpha_key)
    page.goto("/ui/ns/alpha/deployments/iris")
    expect(page.locator("#live-state")).to_have_text("live")
    teams.delete_deployment("alpha", "iris")
    expect(page.locator("#error-message")).to_contain_text("iris", timeout=LIVE_DEADLINE_MS)
    assert [e for e in tab.errors if "404" not in e] == []  # the refresh's own 404 answer
