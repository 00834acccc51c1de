"""Replay: a realtime deployment's function over a past window of the raw log, offline.

Every event of the stream is walked in log order through the deployment's trigger rule (so the
debounce drops what it dropped online); each trigger whose event time lies in ``[start, end)``
gets the history it had online (the entity's events up to and including it, by log sequence) and
the function runs with the chosen model version. With the same version, the values equal those
predicted online: offline evaluation and point-in-time-correct training sets from the serving
code. The rows go to a dataset version (Parquet when pyarrow is installed, else JSON lines); a
pipeline step can call `replay_to_dataset` the same way. Histories are read, and a `batched`
function called, a chunk of triggers at a time.

Not guaranteed equal: a debounced rule whose worker restarted (its debounce state starts empty
at a restart), and events removed since (retention, a deleted entity).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelyard.client import Client
from modelyard.realtime.eventstore import EventStore
from modelyard.realtime.functions import call_many
from modelyard.realtime.models import Model
from modelyard.realtime.records import RealtimeWorkload
from modelyard.realtime.rules import Matcher, load_callable
from modelyard.realtime.worker import BATCH as CHUNK
from modelyard.realtime.worker import history_of
from modelyard.registry.records import VersionInfo, VersionSpec

PAGE = 5000


def replay(
    events: EventStore,
    namespace: str,
    spec: RealtimeWorkload,
    start: float,
    end: float,
    model: Model | None,
) -> Iterator[dict[str, Any]]:
    """One row per trigger in the window: entity, trigger event id, seq and time, model, value."""
    stream = f"{namespace}/{spec.stream}"
    function = load_callable(spec.function, "function")
    matcher = Matcher(spec.rule)
    after = 0
    while True:
        page = events.read(stream, after, PAGE)
        if not page:
            return
        after = page[-1].seq
        due = [e for e in matcher.triggers(page) if start <= e.time < end]
        for i in range(0, len(due), CHUNK):
            chunk = due[i : i + CHUNK]
            found = events.histories(stream, [(e.entity, e.seq) for e in chunk], spec.history_limit)
            histories = [history_of(f, e.seq) for f, e in zip(found, chunk, strict=True)]
            for event, value in zip(chunk, call_many(function, histories, model), strict=True):
                yield {
                    "entity": event.entity,
                    "event_id": event.event_id,
                    "seq": event.seq,
                    "event_time": event.time,
                    "model": model.label if model is not None else None,
                    "value": value,
                }


def write_rows(rows: list[dict[str, Any]], folder: Path) -> Path:
    """``predictions.parquet`` (``value`` as JSON text) if pyarrow is installed, else
    ``predictions.jsonl``."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        path = folder / "predictions.jsonl"
        with open(path, "w") as out:
            for row in rows:
                out.write(json.dumps(row, default=_plain) + "\n")
        return path
    columns = {k: [row[k] for row in rows] for k in ("entity", "event_id", "seq", "event_time")}
    columns["model"] = [row["model"] for row in rows]
    columns["value"] = [json.dumps(row["value"], default=_plain) for row in rows]
    path = folder / "predictions.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def replay_to_dataset(
    client: Client,
    events: EventStore,
    namespace: str,
    deployment: str,
    start: float,
    end: float,
    dataset: str,
    model: Model | None,
) -> VersionInfo:
    """Replay ``namespace/deployment`` over ``[start, end)`` into the next version of the
    dataset ``namespace/dataset``, with the window and model in its params and tags."""
    info = client.realtime.get(namespace, deployment)
    rows = list(replay(events, namespace, info.spec, start, end, model))
    with tempfile.TemporaryDirectory() as temp:
        write_rows(rows, Path(temp))
        spec = VersionSpec(
            description=f"replay of {namespace}/{deployment}",
            params={"start": start, "end": end, "rows": len(rows)},
            tags={
                "replay.deployment": f"{namespace}/{deployment}",
                "replay.model": model.label if model is not None else "",
            },
        )
        return client.push(f"{namespace}/{dataset}", temp, spec, kind="dataset")


def _plain(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
