"""The realtime benchmark's Feast peer: a push source into a Redis online store, a feature pipeline
that keeps each user's last 100 events, and an inference loop around ``get_online_features``.

Feast keeps features, not events: it runs no model and holds no history to compute features from.
Used as its documentation describes streaming features, the part it leaves to the user is a stream
processor that computes the features and pushes them (``FeatureStore.push`` to a ``PushSource``,
``PushMode.ONLINE``), and the service that scores reads them back (``get_online_features``). Here
both run in one process of Feast's own venv (``bench/.venvs/feast``): events come from a Redis
stream; the pipeline keeps each user's last 100 events in memory, and after every event computes
the same 12 features of the shop's model (``modelyard.apps.realtime_demo.scoring.features``, the
event as the trigger) and pushes them as the user's row of the feature view ``user_last_100``;
for a trigger it then reads that row with ``get_online_features``, predicts with the same model
and stores the prediction and its latency in Redis like the other peers. A trigger's features are
pushed before they are read, in the order of the stream: a later event of the same user waits for
the next push.

What differs from the other targets: the features are computed and written for every event (the
online store must be fresh for any reader), not only for triggers; the history lives in the
pipeline's memory (a kill -9 loses it, so that row is not measured); the raw events are not kept
anywhere queryable.

Part of ``bench/realtime.py``, which describes the method.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from _harness import ensure_venv, venv_version, wait_until
from realtime_load import Result
from realtime_peers import measure_on_redis
from serving_peers import Processes

from modelyard.apps.realtime_demo.clickstream import Shop

FEAST = ("feast[redis]==0.67.0", "scikit-learn==1.9.1", "joblib==1.6.0", "orjson==3.13.0")
FEAST_FLOW = """
import datetime as dt
import json, os, time

import joblib, pandas as pd, redis
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, PushSource, RepoConfig
from feast.data_source import PushMode
from feast.types import Float64
from feast.value_type import ValueType

from modelyard.apps.realtime_demo.scoring import FEATURES, features
from modelyard.realtime.history import History
from modelyard.realtime.streams import RawEvent

URL, PREFIX, WORK = os.environ["BENCH_REDIS"], os.environ["BENCH_PREFIX"], os.environ["BENCH_WORK"]
MODEL = joblib.load(os.environ["BENCH_MODEL"])
VIEW, PUSH = "user_last_100", "user_last_100_push"
NAMES = [f"{VIEW}:{name}" for name in FEATURES]

config = RepoConfig(
    project=PREFIX.replace("-", "_"),
    registry=os.path.join(WORK, "registry.db"),
    provider="local",
    online_store={"type": "redis", "connection_string": os.environ["BENCH_FEAST_REDIS"]},
    offline_store={"type": "file"},
    entity_key_serialization_version=3,
)
store = FeatureStore(config=config)
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
batch = FileSource(path=os.path.join(WORK, "offline.parquet"), timestamp_field="event_timestamp")
push = PushSource(name=PUSH, batch_source=batch)
view = FeatureView(
    name=VIEW,
    entities=[user],
    ttl=dt.timedelta(days=1),
    schema=[Field(name=name, dtype=Float64) for name in FEATURES],
    source=push,
    online=True,
)
store.apply([user, push, view])
r = redis.Redis.from_url(URL)
windows = {}
r.set(PREFIX + ":ready", 1)


def segments(events):
    # A trigger must be its user's last event in what is pushed before it is read.
    part, triggered = [], set()
    for event in events:
        if event["user_id"] in triggered:
            yield part
            part, triggered = [], set()
        part.append(event)
        if event["type"] == "add_to_cart":
            triggered.add(event["user_id"])
    if part:
        yield part


def run(events):
    rows, triggers = [], []
    base = dt.datetime.now(dt.timezone.utc)
    for n, event in enumerate(events):
        user_id = event["user_id"]
        window = windows.setdefault(user_id, [])
        window.append(event)
        del window[:-100]
        history = History([RawEvent(k, e["event_id"], user_id, e["type"], 0.0, 0.0, e)
                           for k, e in enumerate(window, 1)])
        # strictly increasing times: the online store keeps a row only if it is newer
        rows.append({"user_id": user_id, "event_timestamp": base + dt.timedelta(microseconds=n),
                     **features(history)})
        if event["type"] == "add_to_cart":
            triggers.append(event)
    store.push(PUSH, pd.DataFrame(rows), to=PushMode.ONLINE)
    if not triggers:
        return
    found = store.get_online_features(
        features=NAMES, entity_rows=[{"user_id": e["user_id"]} for e in triggers]
    ).to_dict()
    matrix = [[found[name][i] for name in FEATURES] for i in range(len(triggers))]
    values = MODEL.predict_proba(matrix)[:, 1]
    written = time.time()
    pipe = r.pipeline()
    for event, value in zip(triggers, values):
        body = json.dumps({"value": float(value), "event_id": event["event_id"]})
        pipe.set(PREFIX + ":p:" + event["user_id"], body)
        pipe.hsetnx(PREFIX + ":lat", event["event_id"], written - event["ingested_at"])
    pipe.execute()


last = "0"
while True:
    got = r.xread({PREFIX + ":events": last}, count=1000, block=20)
    if not got:
        continue
    entries = got[0][1]
    last = entries[-1][0].decode()
    events = [json.loads(fields[b"e"]) for _, fields in entries]
    for part in segments(events):
        run(part)
    r.incrby(PREFIX + ":seen", len(events))
"""


def feast_redis(url: str) -> str:
    """Feast's connection string (``host:port,db=N``) for a redis-py URL."""
    rest = url.split("://", 1)[-1]
    address, _, db = rest.partition("/")
    return f"{address},db={db or '0'}"


def bench_feast(
    args: argparse.Namespace, work: Path, procs: Processes, model: Path, shop: Shop
) -> Result:
    import redis

    python, _ = ensure_venv("feast", FEAST)
    prefix = f"bench-feast-{os.getpid()}"
    r = redis.Redis.from_url(args.redis)
    folder = work / "feast"
    folder.mkdir(exist_ok=True)
    (folder / "feast_flow.py").write_text(FEAST_FLOW)
    src = Path(__file__).resolve().parent.parent / "src"
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "BENCH_REDIS": args.redis,
        "BENCH_FEAST_REDIS": feast_redis(args.redis),
        "BENCH_PREFIX": prefix,
        "BENCH_WORK": str(folder),
        "BENCH_MODEL": str(model / "model.joblib"),
    }
    worker = procs.start("feast", [str(python), "feast_flow.py"], env, folder)
    wait_until("the feature pipeline", lambda: bool(r.exists(f"{prefix}:ready")), 180, worker)

    def send(batch: list[dict[str, Any]]) -> None:
        now = time.time()
        pipe = r.pipeline(transaction=False)
        for e in batch:
            pipe.xadd(f"{prefix}:events", {"e": json.dumps({**e, "ingested_at": now})})
        pipe.execute()

    def caught_up() -> bool:
        return int(r.get(f"{prefix}:seen") or 0) >= r.xlen(f"{prefix}:events")

    def settle() -> None:
        """The ingest figures' events go through the pipeline too (each one's features are
        pushed): the rates are measured once it has caught up with them."""
        wait_until("the feature pipeline to catch up", caught_up, 600, worker)

    version = venv_version("feast", "feast")
    result = Result("feast", note=f"feast {version}; events in a Redis stream; no HTTP")
    try:
        measure_on_redis(result, r, prefix, worker, send, args, shop, settle)
        result.kill = "not measured (the pipeline's history is in its memory)"
    finally:
        procs.stop(worker)
        for pattern in (f"{prefix}:*", f"*{prefix.replace('-', '_')}*"):
            for key in r.scan_iter(match=pattern, count=1000):
                r.delete(key)
    return result
