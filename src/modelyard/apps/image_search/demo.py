"""``make demo``: the visually-similar-item search, from pipeline to API, on the embedded defaults.

Starts the platform (``modelyard up``: control plane and gateway), registers the catalog dataset
(Twemoji graphics and near-duplicates of the photos bundled with scikit-image and scikit-learn,
plus two broken files the pipeline must skip), registers the ``image-index`` pipeline with an
hourly schedule, runs it once, deploys the index it publishes (later commits deploy by
themselves), searches with augmented copies of catalog items, prints the answers and the API's
URLs, and serves until Ctrl-C (``--once``: exits after the queries).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from shlex import quote
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelyard.client import Client, scan_files
from modelyard.errors import Conflict
from modelyard.pipelines.records import ScheduleSpec
from modelyard.pipelines.states import FINISHED, RunState, StepState

console = Console()
NAMESPACE, DATASET, MODEL, DEPLOYMENT = "demo", "catalog", "image-index", "image-search"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modelyard.apps.image_search.demo")
    parser.add_argument("--home", type=Path, default=Path(".modelyard-demo"))
    parser.add_argument("--api-port", type=int, default=8700)
    parser.add_argument("--gateway-port", type=int, default=8701)
    parser.add_argument("--emoji", type=int, default=800, help="emoji in the catalog (0: all)")
    parser.add_argument("--once", action="store_true", help="exit after the queries")
    args = parser.parse_args(argv)
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    platform = start_platform(home, args.api_port, args.gateway_port)
    try:
        run_demo(home, args)
        if not args.once:
            console.print("\n[bold]Serving until Ctrl-C.[/]")
            wait_for_signal(signal.SIGINT, signal.SIGTERM)
    finally:
        platform.terminate()
        platform.wait(60)


def wait_for_signal(*signals: signal.Signals) -> None:
    """Return once one of ``signals`` arrives. Not ``signal.sigwait``: it waits only for signals
    blocked in every thread, and a signal the interpreter's own handler took instead (any thread
    started before could receive it) left it waiting for good: the demo hung on Ctrl-C."""
    arrived = threading.Event()
    for number in signals:
        signal.signal(number, lambda *_: arrived.set())
    while not arrived.wait(0.5):  # the timeout lets the main thread run the handlers
        pass


def run_demo(home: Path, args: argparse.Namespace) -> None:
    from modelyard.apps.image_search.catalog import (
        ATTRIBUTION,
        emoji_catalog,
        near_duplicate_set,
        write_catalog,
    )
    from modelyard.apps.image_search.pipeline import image_index

    key = (home / "admin.key").read_text().strip()
    api = f"http://127.0.0.1:{args.api_port}"
    gateway = f"http://127.0.0.1:{args.gateway_port}"
    client = Client(api, key, cache_dir=home / "client-cache")
    with contextlib.suppress(Conflict):  # the demo ran here before
        client.create_namespace(NAMESPACE, "the image search demo")

    with console.status("building the catalog (emoji + near-duplicate photos)"):
        photos, queries = near_duplicate_set(home / "photos", copies=4, seed=0)
        emoji = emoji_catalog(limit=args.emoji or None)
        folder = write_catalog([*emoji, *photos], home / "catalog", attribution=ATTRIBUTION)
        (folder / "broken-truncated.png").write_bytes(emoji[0].path.read_bytes()[:200])
        (folder / "broken-not-an-image.jpg").write_bytes(b"this is no image")
        add_broken_items(folder)
        files = scan_files(folder)
        target = f"{NAMESPACE}/{DATASET}"
        # A re-run builds the same bytes: keep the version there is, as `datasets push` does.
        version = client.identical_latest(target, [e for _, e in files], kind="dataset")
        pushed = version is None
        if version is None:
            version = client.push(target, folder, kind="dataset", files=files)
    console.print(
        f"dataset [bold]{version.ref}[/]: {len(emoji)} emoji, {len(photos)} photos "
        f"and 2 broken files ({version.size_bytes / 1e6:.1f} MB)"
        + ("" if pushed else ", unchanged since the last run: nothing pushed"),
        soft_wrap=True,
    )

    params = {
        "catalog": f"{NAMESPACE}/{DATASET}@latest",
        "cache": str(home / "embeddings"),
    }
    client.register_pipeline(NAMESPACE, image_index(f"{NAMESPACE}/{MODEL}"))
    with contextlib.suppress(Conflict):
        client.create_schedule(
            NAMESPACE,
            ScheduleSpec(name="hourly", pipeline="image-index", cron="0 * * * *", params=params),
        )
    console.print("pipeline [bold]image-index[/] registered, scheduled hourly (cron 0 * * * *)")

    run = client.run_pipeline(NAMESPACE, "image-index", params)
    follow_run(client, run.id)

    with console.status("deploying the index (the gateway holds requests until it is ready)"):
        with contextlib.suppress(Conflict):
            client.create_deployment(
                NAMESPACE, DEPLOYMENT, f"{MODEL}@latest", timeout_s=60, max_body_mb=20
            )
        latest = client.get_version(f"{NAMESPACE}/{MODEL}@latest")
        deployment = client.wait_deployment(
            NAMESPACE, DEPLOYMENT, version=latest.number, timeout=300
        )
    console.print(f"deployment [bold]{NAMESPACE}/{DEPLOYMENT}[/]: {deployment.status}")
    example = home / "query.jpg"
    query(gateway, key, emoji, queries, example)

    search = f"{gateway}/{NAMESPACE}/{DEPLOYMENT}/search"
    # soft_wrap: lines as long as they are, so a command copied from the terminal still works.
    console.print(
        f"\n[bold]Search API[/]  POST {search}?k=10  (multipart field 'image', JSON "
        '{"image": base64} or {"id": "emoji-1f600"})\n'
        f"[bold]OIP v2[/]      POST {gateway}/{NAMESPACE}/{DEPLOYMENT}/v2/models/{DEPLOYMENT}"
        "/infer  (BYTES input 'image' -> FP32 'embedding')\n"
        f"[bold]Control plane[/] {api}/api/v1/docs   [bold]metrics[/] {gateway}/metrics\n"
        f"[bold]Key[/]         {home / 'admin.key'}  (Authorization: Bearer <key>)\n"
        f'  curl -H "Authorization: Bearer $(cat {quote(str(home / "admin.key"))})" '
        f"-F image=@{quote(str(example))} '{search}?k=5'\n"
        f"  ({example.name}: an augmented copy of a catalog photo; any JPEG or PNG will do)\n"
        f"New dataset versions are indexed hourly; every commit of {NAMESPACE}/{MODEL} is "
        "deployed by itself.\n"
        f"[dim]{ATTRIBUTION}[/]",
        soft_wrap=True,
    )


def add_broken_items(folder: Path) -> None:
    """List the two broken files in catalog.json, as a careless catalog export would."""
    import json

    catalog = folder / "catalog.json"
    entries = json.loads(catalog.read_text())
    items = entries["items"] if isinstance(entries, dict) else entries
    for name in ("broken-truncated.png", "broken-not-an-image.jpg"):
        items.append(
            {"id": name, "file": name, "label": name, "category": "broken", "subcategory": ""}
        )
    catalog.write_text(json.dumps(entries))


def follow_run(client: Client, run_id: str) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bars: dict[str, Any] = {}
        while True:
            run = client.get_run(NAMESPACE, run_id)
            for attempt in run.steps:
                if attempt.node not in bars:
                    bars[attempt.node] = progress.add_task(attempt.node, total=1)
                done = attempt.state in (StepState.SUCCEEDED, StepState.CACHED, StepState.SKIPPED)
                progress.update(
                    bars[attempt.node],
                    completed=1 if done else 0,
                    description=f"{attempt.node}: {attempt.state}",
                )
            if run.state in FINISHED:
                break
            time.sleep(0.5)
    if run.state != RunState.SUCCEEDED:
        raise SystemExit(f"the pipeline run {run_id} {run.state}: {run.reason}")
    cached = [step.node for step in run.steps if step.state == StepState.CACHED]
    if cached:
        console.print(
            f"  {', '.join(cached)}: from the cache (same catalog, same code): nothing was "
            "embedded, skipped or tuned again",
            soft_wrap=True,
        )
    # Each line comes as "[step] text", step by step: the catalog's skipped files, then recall.
    lines = [line.partition("] ")[2] for line in client.run_logs(NAMESPACE, run_id)]
    for text in [t for t in lines if t.startswith("skipped")] + [
        t for t in lines if "recall@10" in t
    ]:
        console.print(f"  {text}", markup=False, highlight=False, soft_wrap=True)


def query(
    gateway: str, key: str, emoji: list[Any], queries: list[tuple[Path, str]], example: Path
) -> None:
    """Search with augmented copies of catalog items; the first photo's copy is kept as
    ``example``, the query image of the curl the demo prints."""
    from PIL import Image

    from modelyard.apps.image_search.catalog import augment

    rng = np.random.default_rng(7)
    picks = [(item.path, item.id) for item in emoji[:: max(1, len(emoji) // 4)][:4]]
    picks += queries[:4]
    table = Table(title="queries: augmented copies of catalog items", title_justify="left")
    for column in ("query (expected item)", "top 5 (score)", "hit"):
        table.add_column(column)
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
        for path, expected in picks:
            image = augment(Image.open(path), rng)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
            if (path, expected) == queries[0]:
                example.write_bytes(buffer.getvalue())
            answer = http.post(
                f"{gateway}/{NAMESPACE}/{DEPLOYMENT}/search",
                params={"k": 5},
                files={"image": ("query.jpg", buffer.getvalue(), "image/jpeg")},
            )
            answer.raise_for_status()
            results = answer.json()["results"]
            top = ", ".join(f"{r['label'][:24]} ({r['score']:.2f})" for r in results)
            ids = [r["id"] for r in results]
            hit = expected in ids or any(i.startswith(expected) for i in ids)
            table.add_row(expected, top, "[green]yes[/]" if hit else "[red]no[/]")
    console.print(table)


def start_platform(home: Path, api_port: int, gateway_port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MODELYARD_HOME": str(home),
        "MODELYARD_API_PORT": str(api_port),
        "MODELYARD_GATEWAY_PORT": str(gateway_port),
    }
    log = open(home / "platform.log", "ab")  # noqa: SIM115 - the child keeps it open
    process = subprocess.Popen(
        [sys.executable, "-m", "modelyard", "up"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    with console.status(f"starting modelyard (log: {home / 'platform.log'})"):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"modelyard up exited ({process.returncode}): see platform.log")
            try:
                if httpx.get(f"http://127.0.0.1:{api_port}/api/v1/health").is_success:
                    console.print(f"modelyard up: API on :{api_port}, gateway on :{gateway_port}")
                    return process
            except httpx.TransportError:
                time.sleep(0.2)
    process.terminate()
    raise SystemExit("the control plane did not answer within 60 s")


if __name__ == "__main__":
    main()
