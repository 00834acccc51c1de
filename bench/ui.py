"""Dashboard benchmark: page weight, first paint, time to the first chart, and how long a change
takes to show on screen, in Debian's chromium driven by Playwright.

An in-process control plane on a temporary home (SQLite, local blobs) serves the API and /ui on a
free port of 127.0.0.1; a namespace holds one deployment (scale to zero: no replica runs) with
``--days`` of per-minute traffic written into ``traffic_minutes`` (default 30: 43,200 minutes).
Printed per screen (overview, deployment at 1h and at 30d, events, model, runs, a failed run of
the image-search pipeline, realtime): the bytes of the HTML, CSS and script it loads, the first
contentful paint the browser reports (n/a when it reported none), and for the deployment the time
until its charts are on screen (navigation start to the SVG in the DOM). Then
``--changes`` times (default 50) each of: a new revision made through the API (from the call to
its row on the open page) and a gateway report of traffic (from the report to the new rate on the
page); p50 and p95 of each. Goal: p95 <= 1 s (peers poll every 5 to 30 s); page under 150 KB;
first paint under 300 ms; 30 days of charts under 500 ms.
"""

from __future__ import annotations

import datetime as dt
import logging
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from _harness import argument_parser, goal, percentile

from modelyard.api.server import BackgroundServer
from modelyard.apps.image_search.pipeline import image_index
from modelyard.client import Client
from modelyard.controlplane import ControlPlane
from modelyard.registry.versions import VersionSpec
from modelyard.settings import Settings
from modelyard.telemetry.records import TrafficMinute
from modelyard.testing import wait_for

CHROMIUM = "/usr/bin/chromium"
# The first contentful paint, waited for: the browser may report it after the load event.
PAINT = """() => new Promise(resolve => {
    const seen = list => list.getEntriesByName('first-contentful-paint')[0];
    new PerformanceObserver(list => { if (seen(list)) resolve(seen(list).startTime); })
        .observe({type: 'paint', buffered: true});
    setTimeout(() => resolve(null), 5000);
})"""
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def seed(plane: ControlPlane, admin: Client, home: Path, days: int) -> str:
    admin.create_namespace("shop")
    (home / "model.bin").write_bytes(b"weights")
    admin.push("shop/ranker", home / "model.bin", VersionSpec(runtime="sklearn"))
    admin.create_deployment(
        "shop", "ranker", "ranker@latest", autoscaling={"min_replicas": 0, "max_replicas": 1}
    )
    with plane.db.read() as session:
        deployment_id = plane.deployments.row(session, "shop", "ranker").id
    now = plane.events.clock()
    minutes = [
        TrafficMinute(
            deployment_id, now - dt.timedelta(minutes=m), 600 + m % 97, m % 5, [300, 250, 40, 9, 1]
        )
        for m in range(1, days * 1440)
    ]
    for i in range(0, len(minutes), 5000):
        plane.telemetry.record(minutes[i : i + 5000])
    return deployment_id


def main() -> None:
    # The seeded model is not a real one: its replicas exit at start, which is not measured here.
    logging.getLogger("modelyard").setLevel(logging.ERROR)
    parser = argument_parser(__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--changes", type=int, default=50)
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        plane = ControlPlane.build(Settings(home=home / "home", api_port=0))
        token = plane.ensure_admin_key()
        assert token is not None
        with (
            BackgroundServer(plane) as server,
            Client(server.url, token, cache_dir=home / "c") as admin,
        ):
            deployment_id = seed(plane, admin, home, args.days)
            # A run of the reference pipeline, for its screen: its catalog does not exist here,
            # so the run fails at its first step and the DAG shows the states that follow.
            admin.register_pipeline("shop", image_index("shop/image-index"))
            run = admin.run_pipeline("shop", "image-index")
            wait_for(
                lambda: admin.get_run("shop", run.id).state in ("failed", "succeeded"),
                timeout=120,
                what="the pipeline run to end",
                interval=0.1,
            )
            screens = {
                "overview": "/ui/ns/shop",
                "deployment 1h": "/ui/ns/shop/deployments/ranker?range=1h",
                "deployment 30d": "/ui/ns/shop/deployments/ranker?range=30d",
                "events": "/ui/ns/shop/events",
                "model": "/ui/ns/shop/models/ranker",
                "runs": "/ui/ns/shop/runs",
                "run": f"/ui/ns/shop/runs/{run.id}",
                "realtime": "/ui/ns/shop/realtime",
            }
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_context(base_url=server.url).new_page()
                page.goto("/ui/signin")
                page.fill("#key", token)
                page.click("#signin")
                page.wait_for_url("**/ui")
                assets = sum(
                    len(httpx.get(f"{server.url}/ui/static/{n}").content)
                    for n in ("app.js", "app.css")
                )
                print(f"{'screen':<16} {'bytes':>8} {'first paint':>12} {'charts':>8}")
                for name, path in screens.items():
                    page.goto(path)
                    html = len(page.content().encode())
                    paint = page.evaluate(PAINT)
                    chart = ""
                    if "deployment" in name:
                        page.goto(path)
                        page.wait_for_selector("figure.chart svg")
                        chart = f"{page.evaluate('() => performance.now()'):.0f} ms"
                    shown = f"{paint:>9.0f} ms" if paint else f"{'n/a':>12}"  # none reported
                    print(f"{name:<16} {html + assets:>8} {shown} {chart:>8}")

                page.goto("/ui/ns/shop/deployments/ranker")
                expect(page.locator("#live-state")).to_have_text("live")
                revision_s: list[float] = []
                for i in range(args.changes):
                    started = time.perf_counter()
                    admin.update_deployment("shop", "ranker", timeout_s=10 + i)
                    page.wait_for_selector(f"#revision-{i + 2}", timeout=10_000)
                    revision_s.append(time.perf_counter() - started)
                info = plane.deployments.get("shop", "ranker")
                revision = info.revisions[-1]
                rate = page.locator(f'[data-live-value="{revision.id}:qps"]')
                traffic_s: list[float] = []
                for i in range(args.changes):
                    before = rate.text_content()
                    started = time.perf_counter()
                    plane.telemetry.add(
                        {
                            "at": time.time(),
                            "revisions": {revision.id: {"requests": 10 + i, "latencies_ms": [4.0]}},
                            "deployments": {
                                deployment_id: {"requests": 10 + i, "buckets": [10 + i]}
                            },
                        }
                    )
                    expect(rate).not_to_have_text(before or "", timeout=10_000)
                    traffic_s.append(time.perf_counter() - started)
                browser.close()
        plane.close()
    for what, values in (("new revision", revision_s), ("traffic report", traffic_s)):
        p50, p95 = statistics.median(values), percentile(sorted(values), 0.95)
        print(
            f"{what:<16} on screen: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"
            f" over {len(values)}  {goal('p95 <= 1 s', p95 <= 1.0)}"
        )


if __name__ == "__main__":
    main()
