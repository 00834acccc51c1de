"""``make demo-realtime``: a shop's click stream scored on every ``add_to_cart``, end to end.

Starts the platform (``modelyard up``, embedded defaults, data in ``.modelyard-realtime-demo``),
creates the ``shop/clicks`` stream and sends two days of synthetic history (`clickstream`: many
users, Zipf-skewed activity, sessions, purchases that depend on behaviour). Builds the training
set by replay from the raw log (each ``add_to_cart`` seeing the history it would have seen), labels
it with the session's outcome from the same log, trains a scikit-learn classifier on 80 % of the
users, prints its AUC on the held-out 20 % and commits it with that metric. Then deploys
``shop/purchase-intent`` (model ``purchase@latest``, triggered by ``add_to_cart``) and sends a live
stream at ``--rate`` events/s, showing events/s, lag and trigger-to-stored-prediction latency in
the terminal, and the AUC of the online predictions. ``--once`` exits after ``--seconds``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.live import Live
from rich.table import Table

from modelyard.apps.image_search.demo import start_platform
from modelyard.apps.realtime_demo.clickstream import Shop, sessions
from modelyard.apps.realtime_demo.scoring import FEATURES
from modelyard.client import Client
from modelyard.errors import Conflict, NotFound
from modelyard.realtime.backends import open_event_store
from modelyard.realtime.eventstore import EventStore
from modelyard.registry.records import VersionSpec
from modelyard.settings import Settings

console = Console()
NAMESPACE, STREAM, MODEL = "shop", "clicks", "purchase"
FEATURES_DEPLOYMENT, DEPLOYMENT = "cart-features", "purchase-intent"
SCORING = "modelyard.apps.realtime_demo.scoring"
TICK_S = 0.05


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modelyard.apps.realtime_demo.demo")
    parser.add_argument("--home", type=Path, default=Path(".modelyard-realtime-demo"))
    parser.add_argument("--api-port", type=int, default=8700)
    parser.add_argument("--gateway-port", type=int, default=8701)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=6000, help="sessions of history")
    parser.add_argument("--rate", type=float, default=300.0, help="live events per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="live phase with --once")
    parser.add_argument("--once", action="store_true", help="exit after --seconds of live stream")
    args = parser.parse_args(argv)
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    platform = start_platform(home, args.api_port, args.gateway_port)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        run_demo(home, args)
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        platform.terminate()
        platform.wait(60)


def run_demo(home: Path, args: argparse.Namespace) -> None:
    key = (home / "admin.key").read_text().strip()
    client = Client(
        f"http://127.0.0.1:{args.api_port}",
        key,
        cache_dir=home / "client-cache",
        gateway_url=f"http://127.0.0.1:{args.gateway_port}",
    )
    events = open_event_store(Settings(home=home).realtime_events_url)
    shop = Shop(users=args.users)
    with contextlib.suppress(Conflict):  # the demo ran here before
        client.create_namespace(NAMESPACE, "the realtime inference demo")
    with contextlib.suppress(Conflict):
        client.realtime.create_stream(
            NAMESPACE, STREAM, time_field="ts", retention="30d", allowed_lateness="3d"
        )
    now = time.time()
    history = list(sessions(shop, args.sessions, now - 2 * 86400, now - 3600, seed=1, prefix="h"))
    with console.status(f"sending {len(history):,} events of history"):
        _wait_for_stream(client)
        sent = client.stream(NAMESPACE, STREAM).send_many(history, batch=2000)
    console.print(f"history: {sent['stored']:,} events stored ({len(sent['duplicates'])} repeats)")

    with console.status("building the training set by replay from the raw log"):
        rows = training_set(client, events, now)
    auc, model_folder = train(rows, Path(tempfile.mkdtemp()))
    console.print(f"[bold]AUC on held-out users: {auc:.3f}[/] ({len(rows):,} add-to-cart rows)")
    version = client.push(
        f"{NAMESPACE}/{MODEL}",
        model_folder,
        VersionSpec(runtime="sklearn", metrics={"auc_heldout": auc}, description="replay-trained"),
    )
    console.print(f"committed {version.namespace}/{version.name}@{version.number}")
    with contextlib.suppress(Conflict):
        client.realtime.create(
            NAMESPACE,
            DEPLOYMENT,
            stream=STREAM,
            function=f"{SCORING}:score",
            model=f"{MODEL}@latest",
            rule={"types": ["add_to_cart"]},
        )
    live(client, shop, args)
    console.print(f"[bold]AUC on held-out users (offline): {auc:.3f}[/]")
    events.close()


def _wait_for_stream(client: Client) -> None:
    """The gateway learns a new stream with its next routing table."""
    deadline = time.monotonic() + 30
    while True:
        try:
            client.realtime.entity_events(NAMESPACE, STREAM, "nobody")
            return
        except NotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def training_set(client: Client, events: EventStore, now: float) -> list[dict[str, Any]]:
    """Replay of the features function over the history, labelled from the log: 1 when the
    add-to-cart's session ended in a purchase."""
    from modelyard.realtime.replay import replay_to_dataset

    with contextlib.suppress(Conflict):
        client.realtime.create(
            NAMESPACE,
            FEATURES_DEPLOYMENT,
            stream=STREAM,
            function=f"{SCORING}:features",
            rule={"types": ["add_to_cart"]},
        )
    replay_to_dataset(client, events, NAMESPACE, FEATURES_DEPLOYMENT, 0, now, "cart-training", None)
    client.realtime.delete(NAMESPACE, FEATURES_DEPLOYMENT)  # its rows are all we wanted
    folder = client.pull(f"{NAMESPACE}/cart-training@latest", kind="dataset")
    if (folder / "predictions.parquet").exists():
        import pyarrow.parquet as pq

        table = pq.read_table(folder / "predictions.parquet").to_pylist()
    else:  # written without pyarrow
        lines = (folder / "predictions.jsonl").read_text().splitlines()
        table = [{**row, "value": json.dumps(row["value"])} for row in map(json.loads, lines)]
    session_of: dict[str, str] = {}
    bought: set[str] = set()
    for event in _log(events):
        session_of[event.event_id] = str(event.data.get("session"))
        if event.type == "purchase":
            bought.add(session_of[event.event_id])
    return [
        {
            "entity": row["entity"],
            "features": json.loads(row["value"]),
            "label": int(session_of.get(row["event_id"]) in bought),
        }
        for row in table
    ]


def _log(events: EventStore) -> Iterator[Any]:
    after = 0
    while page := events.read(f"{NAMESPACE}/{STREAM}", after, 5000):
        yield from page
        after = page[-1].seq


def train(rows: list[dict[str, Any]], folder: Path) -> tuple[float, Path]:
    """A gradient-boosted classifier on 80 % of the users; AUC on the other 20 %."""
    import joblib
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    held_out = np.array([hash_user(row["entity"]) % 5 == 0 for row in rows])
    features = np.array([[row["features"][name] for name in FEATURES] for row in rows])
    labels = np.array([row["label"] for row in rows])
    model = GradientBoostingClassifier(n_estimators=150, max_depth=3, random_state=0)
    model.fit(features[~held_out], labels[~held_out])
    auc = float(roc_auc_score(labels[held_out], model.predict_proba(features[held_out])[:, 1]))
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")
    return auc, folder


def hash_user(user: str) -> int:
    """A stable hash (Python's own is salted per process): the same users are held out."""
    return zlib.crc32(user.encode())


def live(client: Client, shop: Shop, args: argparse.Namespace) -> None:
    """Sends the live stream at ``args.rate`` and shows what the platform makes of it."""
    stream = client.stream(NAMESPACE, STREAM)
    with console.status("waiting for the worker to load the model"):
        warmup = {"event_id": f"warmup-{time.time()}", "user_id": "warmup", "type": "add_to_cart"}
        stream.send({**warmup, "ts": time.time(), "session": "warmup"})
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(NotFound):
                if (
                    client.realtime.prediction(NAMESPACE, DEPLOYMENT, "warmup").event_id
                    == (warmup["event_id"])
                ):
                    break
            if time.monotonic() > deadline:
                raise SystemExit("no prediction within 120 s: see the worker's log")
            time.sleep(0.1)
    stats = LiveStats()
    started = time.time()
    chunk = 60.0
    round_ = 0
    with Live(stats.table(), console=console, refresh_per_second=4) as view:
        while not args.once or time.time() - started < args.seconds:
            length = min(chunk, args.seconds) if args.once else chunk
            count = max(1, int(args.rate * length / 6.5))  # a session has 6.5 events on average
            begin = time.time()
            run = f"l{int(started)}-"  # the live events of each run are new ones
            planned = list(
                sessions(shop, count, begin, begin + length, seed=100 + round_, prefix=run)
            )
            stats.plan(planned)
            # Sent at the fixed rate in the order of their event times (``ts``, kept: the
            # model learnt on them), so the live stream interleaves many users' sessions.
            batch: list[dict[str, object]] = []
            for n, event in enumerate(planned):
                due = begin + n / args.rate
                if due > time.time() + TICK_S or len(batch) >= 1000:
                    if batch:
                        stream.send_many(batch)
                        stats.sent(batch)
                        batch = []
                    stats.poll(client)
                    view.update(stats.table())
                    time.sleep(max(0.0, due - time.time()))
                if args.once and time.time() - started >= args.seconds:
                    break
                batch.append(event)
            if batch:
                stream.send_many(batch)
                stats.sent(batch)
            round_ += 1
        deadline = time.monotonic() + 30
        while stats.waiting and time.monotonic() < deadline:
            stats.poll(client)
            view.update(stats.table())
            time.sleep(0.2)
    console.print()
    console.print(stats.summary())


class LiveStats:
    """What the live view shows: sent events/s, lag, trigger-to-prediction latency, online AUC."""

    def __init__(self) -> None:
        self.count = 0
        self.recent: list[tuple[float, int]] = []
        self.waiting: dict[str, tuple[str, float]] = {}
        """user -> (add_to_cart event id, when it was sent) not predicted yet."""
        self.latencies: list[float] = []
        self.scores: dict[str, float] = {}
        self.session_of: dict[str, str] = {}
        self.last_of: dict[str, str] = {}
        """session -> its last event's id: a session is over (its outcome known) once sent."""
        self.over: set[str] = set()
        self.bought: set[str] = set()
        self.lag: dict[str, float] = {}

    def plan(self, events: list[dict[str, object]]) -> None:
        for event in events:
            self.last_of[str(event["session"])] = str(event["event_id"])

    def sent(self, batch: list[dict[str, object]]) -> None:
        now = time.time()
        self.count += len(batch)
        self.recent.append((now, len(batch)))
        for event in batch:
            self.session_of[str(event["event_id"])] = str(event["session"])
            if self.last_of.get(str(event["session"])) == event["event_id"]:
                self.over.add(str(event["session"]))
            if event["type"] == "purchase":
                self.bought.add(str(event["session"]))
            if event["type"] == "add_to_cart":
                self.waiting[str(event["user_id"])] = (str(event["event_id"]), now)

    def poll(self, client: Client) -> None:
        users = list(self.waiting)[:200]
        if users:
            found = client.realtime.predictions(NAMESPACE, DEPLOYMENT, users)
            for user, prediction in found.items():
                self.scores[prediction.event_id] = float(prediction.value["purchase_probability"])
                event_id, sent_at = self.waiting[user]
                if prediction.event_id == event_id:
                    self.latencies.append(prediction.written_at - sent_at)
                    del self.waiting[user]
        self.lag = client.realtime.lag(NAMESPACE, DEPLOYMENT)

    def rate(self) -> float:
        now = time.time()
        self.recent = [(t, n) for t, n in self.recent if now - t <= 2.0]
        return sum(n for _, n in self.recent) / 2.0

    def latency(self) -> str:
        if not self.latencies:
            return "-"
        p50, p99 = np.percentile(self.latencies, [50, 99]) * 1000
        return f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(self.latencies) * 1000:.0f} ms"

    def table(self) -> Table:
        table = Table(title="shop/purchase-intent, live", show_header=False)
        table.add_row("events sent", f"{self.count:,} ({self.rate():.0f}/s)")
        table.add_row(
            "lag",
            f"{self.lag.get('events', 0):.0f} events, oldest {self.lag.get('oldest_s', 0):.2f} s",
        )
        table.add_row("add_to_cart -> stored prediction", self.latency())
        table.add_row("predictions seen", f"{len(self.scores):,} ({len(self.waiting)} pending)")
        return table

    def summary(self) -> str:
        from sklearn.metrics import roc_auc_score

        sessions_of = {e: self.session_of.get(e) for e in self.scores}
        scored = [
            (p, int(sessions_of[e] in self.bought))
            for e, p in self.scores.items()
            if sessions_of[e] in self.over  # sessions cut off by the end have no outcome yet
        ]
        labels = {label for _, label in scored}
        online = (
            f"{roc_auc_score([y for _, y in scored], [p for p, _ in scored]):.3f}"
            if len(labels) == 2
            else "n/a (one class)"
        )
        return (
            f"live: {self.count:,} events, {len(self.scores):,} predictions, latency "
            f"{self.latency()}; AUC of the online predictions ({len(scored)} of sessions that "
            f"ended): {online}"
        )


if __name__ == "__main__":
    main()
