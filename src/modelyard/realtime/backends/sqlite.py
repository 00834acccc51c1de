"""The embedded backends: the raw log, the queue and the prediction store as SQLite files.

Each is its own file under the home (``realtime/events.db``, ``triggers.db``, ``predictions.db``),
apart from the metadata database, so ingest never queues behind the control plane's writes. WAL
mode; the raw log and the predictions with ``synchronous=FULL``: a transaction is on disk when its
commit returns, so an acknowledged batch survives kill -9 (and a power cut). The queue runs with
``synchronous=NORMAL``, which skips the flush at each commit (its claims and acknowledgements are
a worker's most frequent writes): a commit still survives kill -9 of any process, and what a power
cut can take back (its last transactions, whole) the queue rebuilds or repeats without effect:
the router's cursor goes back with the triggers it queued, so it queues them again from the log;
an acknowledgement taken back runs its trigger again, whose prediction is stored already. Writers
of several processes (the gateway, workers, the control plane) queue on SQLite's busy timeout.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from modelyard.errors import StoreError
from modelyard.realtime.eventstore import DecodedEvents, HistoryReads
from modelyard.realtime.predictions import Prediction
from modelyard.realtime.queue import DeadLetter, Trigger
from modelyard.realtime.streams import NewEvent, RawEvent
from modelyard.types import Record


class _File:
    """One connection to one SQLite file, shared by this process's threads under a lock."""

    def __init__(self, url: str, schema: str, synchronous: str = "FULL") -> None:
        # SQLAlchemy's form: sqlite:///relative/path, sqlite:////absolute/path
        self.path = Path(url.removeprefix("sqlite:///"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self.conn.isolation_level = None  # transactions are ours: BEGIN IMMEDIATE for writes
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.execute("PRAGMA busy_timeout=30000")
        with self._lock:
            self.conn.executescript(schema)  # idempotent; outside a transaction by design

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"realtime store {self.path} failed: {exc}") from exc
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"realtime store {self.path} failed: {exc}") from exc

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self.conn

    def close(self) -> None:
        with self._lock:
            self.conn.close()


_EVENTS = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL, event_id TEXT NOT NULL, entity TEXT NOT NULL, type TEXT NOT NULL,
    time REAL NOT NULL, ingested_at REAL NOT NULL, data BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS events_id ON events (stream, event_id);
CREATE INDEX IF NOT EXISTS events_entity ON events (stream, entity, seq);
CREATE INDEX IF NOT EXISTS events_stream ON events (stream, seq);
"""
_COLUMNS = "seq, event_id, entity, type, time, ingested_at, data"


_REST = _COLUMNS.split(", ")[1:]


def _event(row: tuple[Any, ...]) -> RawEvent:
    return RawEvent(row[0], row[1], row[2], row[3], row[4], row[5], orjson.loads(row[6]))


def _history(rows: Iterable[tuple[Any, ...]], held: dict[int, RawEvent]) -> list[RawEvent] | None:
    """A history from rows newest first, each in full or (its columns NULL) one of ``held``;
    None when one of those is not held."""
    events = []
    for row in rows:
        if row[1] is None:
            event = held.get(row[0])
            if event is None:
                return None
            events.append(event)
        else:
            events.append(_event(row))
    events.reverse()
    return events


class SqliteEventStore(HistoryReads):
    def __init__(self, url: str) -> None:
        self.file = _File(url, _EVENTS)
        self.decoded = DecodedEvents()

    def append(self, stream: str, events: Sequence[NewEvent], now: float) -> list[bool]:
        insert = (
            "INSERT OR IGNORE INTO events (stream, event_id, entity, type, time, ingested_at, "
            "data) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        stored = []
        with self.file.write() as conn:
            for e in events:
                cursor = conn.execute(
                    insert,
                    (stream, e.event_id, e.entity, e.type, e.time, now, orjson.dumps(e.data)),
                )
                stored.append(cursor.rowcount == 1)
        return stored

    def read(self, stream: str, after: int, limit: int) -> list[RawEvent]:
        query = f"SELECT {_COLUMNS} FROM events WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?"
        with self.file.read() as conn:
            return [_event(row) for row in conn.execute(query, (stream, after, limit))]

    def _read(
        self,
        stream: str,
        triggers: Sequence[tuple[str, int]],
        limit: int,
        decoded: DecodedEvents,
    ) -> list[list[RawEvent]]:
        # only the events after those held decoded are read in full (see DecodedEvents)
        query = (
            "SELECT seq, "
            + ", ".join(f"CASE WHEN seq > :known THEN {c} END" for c in _REST)
            + " FROM events WHERE stream = :stream AND entity = :entity AND seq <= :upto "
            "ORDER BY seq DESC LIMIT :limit"
        )
        found = []
        with self.file.read() as conn:  # one lock and one snapshot for the lot
            conn.execute("BEGIN")
            try:
                for entity, upto in triggers:
                    held, known = decoded.known(stream, entity)
                    params = {"stream": stream, "entity": entity, "upto": upto, "limit": limit}
                    rows = conn.execute(query, {**params, "known": known}).fetchall()
                    events = _history(rows, held)
                    if events is None:  # older than what is held: read in full
                        events = _history(conn.execute(query, {**params, "known": -1}), {})
                        assert events is not None
                    decoded.keep(stream, entity, events)
                    found.append(events)
            finally:
                conn.execute("COMMIT")
        return found

    def last_seq(self, stream: str) -> int:
        with self.file.read() as conn:
            row = conn.execute("SELECT MAX(seq) FROM events WHERE stream = ?", (stream,)).fetchone()
        return int(row[0] or 0)

    def pending(self, stream: str, after: int) -> tuple[int, float | None]:
        query = "SELECT COUNT(*), MIN(ingested_at) FROM events WHERE stream = ? AND seq > ?"
        with self.file.read() as conn:
            count, oldest = conn.execute(query, (stream, after)).fetchone()
        return int(count), oldest

    def delete_entity(self, stream: str, entity: str) -> int:
        with self.file.write() as conn:
            query = "DELETE FROM events WHERE stream = ? AND entity = ?"
            return conn.execute(query, (stream, entity)).rowcount

    def purge(self, stream: str, before: float) -> int:
        with self.file.write() as conn:
            query = "DELETE FROM events WHERE stream = ? AND ingested_at < ?"
            return conn.execute(query, (stream, before)).rowcount

    def drop(self, stream: str) -> None:
        with self.file.write() as conn:
            conn.execute("DELETE FROM events WHERE stream = ?", (stream,))

    def close(self) -> None:
        self.file.close()


_TRIGGERS = """
CREATE TABLE IF NOT EXISTS triggers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment TEXT NOT NULL, entity TEXT NOT NULL, seq INTEGER NOT NULL,
    event_id TEXT NOT NULL, event_time REAL NOT NULL, enqueued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, lease_until REAL NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0, error TEXT, failed_at REAL);
CREATE UNIQUE INDEX IF NOT EXISTS triggers_seq ON triggers (deployment, seq);
CREATE INDEX IF NOT EXISTS triggers_entity ON triggers (deployment, dead, entity, id);
CREATE INDEX IF NOT EXISTS triggers_lease ON triggers (deployment, lease_until);
CREATE TABLE IF NOT EXISTS cursors (deployment TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


class SqliteTriggerQueue:
    def __init__(self, url: str) -> None:
        self.file = _File(url, _TRIGGERS, synchronous="NORMAL")  # see the module's docstring

    def cursor(self, deployment: str) -> int:
        with self.file.read() as conn:
            row = conn.execute(
                "SELECT seq FROM cursors WHERE deployment = ?", (deployment,)
            ).fetchone()
        return int(row[0]) if row else 0

    def enqueue(self, deployment: str, triggers: Sequence[Trigger], cursor: int) -> None:
        insert = (
            "INSERT OR IGNORE INTO triggers (deployment, entity, seq, event_id, event_time, "
            "enqueued_at) VALUES (?, ?, ?, ?, ?, ?)"
        )
        with self.file.write() as conn:
            conn.executemany(
                insert,
                [
                    (deployment, t.entity, t.seq, t.event_id, t.event_time, t.enqueued_at)
                    for t in triggers
                ],
            )
            conn.execute(
                "INSERT INTO cursors (deployment, seq) VALUES (?, ?) ON CONFLICT (deployment) "
                "DO UPDATE SET seq = MAX(seq, excluded.seq)",
                (deployment, cursor),
            )

    def claim(self, deployment: str, limit: int, lease_s: float, now: float) -> list[Trigger]:
        # Of each entity with no trigger out (on a lease not yet over), its oldest queued ones.
        query = (
            "SELECT id, entity, seq, event_id, event_time, enqueued_at, attempts FROM triggers "
            "WHERE deployment = ? AND dead = 0 AND entity NOT IN (SELECT entity FROM triggers "
            "WHERE deployment = ? AND lease_until > ? AND dead = 0) ORDER BY id LIMIT ?"
        )
        with self.file.write() as conn:
            rows = conn.execute(query, (deployment, deployment, now, limit)).fetchall()
            conn.executemany(
                "UPDATE triggers SET lease_until = ? WHERE id = ?",
                [(now + lease_s, row[0]) for row in rows],
            )
        return [
            Trigger(deployment, r[1], r[2], r[3], r[4], r[5], r[6], handle=str(r[0])) for r in rows
        ]

    def put_back(self, triggers: Sequence[Trigger]) -> None:
        if not triggers:
            return
        with self.file.write() as conn:
            conn.executemany(
                "UPDATE triggers SET lease_until = 0 WHERE id = ?",
                [(int(t.handle),) for t in triggers],
            )

    def ack(self, trigger: Trigger) -> None:
        self.ack_many([trigger])

    def ack_many(self, triggers: Sequence[Trigger]) -> None:
        if not triggers:
            return
        with self.file.write() as conn:
            conn.executemany(
                "DELETE FROM triggers WHERE id = ?", [(int(t.handle),) for t in triggers]
            )

    def fail(self, trigger: Trigger, error: str, max_attempts: int, now: float) -> bool:
        attempts = trigger.attempts + 1
        dead = attempts >= max_attempts
        with self.file.write() as conn:
            conn.execute(
                "UPDATE triggers SET attempts = ?, lease_until = 0, dead = ?, error = ?, "
                "failed_at = ? WHERE id = ?",
                (attempts, int(dead), error, now, int(trigger.handle)),
            )
        return dead

    def release(self, deployment: str) -> None:
        with self.file.write() as conn:
            conn.execute(
                "UPDATE triggers SET lease_until = 0 WHERE deployment = ? AND lease_until > 0",
                (deployment,),
            )

    def pending(self, deployment: str) -> tuple[int, float | None]:
        query = "SELECT COUNT(*), MIN(enqueued_at) FROM triggers WHERE deployment = ? AND dead = 0"
        with self.file.read() as conn:
            count, oldest = conn.execute(query, (deployment,)).fetchone()
        return int(count), oldest

    def dead_letters(self, deployment: str, limit: int = 100) -> list[DeadLetter]:
        query = (
            "SELECT entity, seq, event_id, attempts, error, failed_at FROM triggers "
            "WHERE deployment = ? AND dead = 1 ORDER BY id LIMIT ?"
        )
        with self.file.read() as conn:
            rows = conn.execute(query, (deployment, limit)).fetchall()
        return [
            DeadLetter.model_validate(
                {
                    "deployment": deployment,
                    "entity": r[0],
                    "seq": r[1],
                    "event_id": r[2],
                    "attempts": r[3],
                    "error": r[4] or "",
                    "failed_at": r[5],
                }
            )
            for r in rows
        ]

    def retry(self, deployment: str) -> int:
        with self.file.write() as conn:
            return conn.execute(
                "UPDATE triggers SET dead = 0, attempts = 0, lease_until = 0 "
                "WHERE deployment = ? AND dead = 1",
                (deployment,),
            ).rowcount

    def drop(self, deployment: str) -> None:
        with self.file.write() as conn:
            conn.execute("DELETE FROM triggers WHERE deployment = ?", (deployment,))
            conn.execute("DELETE FROM cursors WHERE deployment = ?", (deployment,))

    def close(self) -> None:
        self.file.close()


_PREDICTIONS = """
CREATE TABLE IF NOT EXISTS predictions (
    deployment TEXT NOT NULL, event_id TEXT NOT NULL, model TEXT NOT NULL,
    entity TEXT NOT NULL, seq INTEGER NOT NULL, event_time REAL NOT NULL, value BLOB NOT NULL,
    written_at REAL NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (deployment, event_id, model));
CREATE INDEX IF NOT EXISTS predictions_entity ON predictions (deployment, entity, seq);
CREATE INDEX IF NOT EXISTS predictions_expiry ON predictions (expires_at);
CREATE TABLE IF NOT EXISTS latest (
    deployment TEXT NOT NULL, entity TEXT NOT NULL, event_id TEXT NOT NULL, model TEXT NOT NULL,
    seq INTEGER NOT NULL, PRIMARY KEY (deployment, entity));
"""
_PREDICTION_COLUMNS = "p.entity, p.value, p.model, p.event_id, p.seq, p.event_time, p.written_at"


def _prediction(deployment: str, row: tuple[Any, ...], expires_at: float) -> Prediction:
    return Prediction(
        deployment=deployment,
        entity=row[0],
        value=orjson.loads(row[1]),
        model=row[2] or None,
        event_id=row[3],
        seq=row[4],
        event_time=row[5],
        written_at=row[6],
        expires_at=expires_at,
    )


class SqlitePredictionStore:
    def __init__(self, url: str) -> None:
        self.file = _File(url, _PREDICTIONS)

    def put(self, prediction: Prediction) -> bool:
        return self.put_many([prediction])[0]

    def put_many(self, predictions: Sequence[Prediction]) -> list[bool]:
        if not predictions:
            return []
        stored = []
        with self.file.write() as conn:
            for p in predictions:
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        p.deployment,
                        p.event_id,
                        p.model or "",
                        p.entity,
                        p.seq,
                        p.event_time,
                        orjson.dumps(p.value, default=_jsonable),
                        p.written_at,
                        p.expires_at,
                    ),
                ).rowcount
                if inserted:
                    conn.execute(
                        "INSERT INTO latest VALUES (?, ?, ?, ?, ?) ON CONFLICT (deployment, "
                        "entity) DO UPDATE SET event_id = excluded.event_id, model = "
                        "excluded.model, seq = excluded.seq WHERE excluded.seq >= latest.seq",
                        (p.deployment, p.entity, p.event_id, p.model or "", p.seq),
                    )
                stored.append(bool(inserted))
        return stored

    def latest(self, deployment: str, entities: Sequence[str], now: float) -> dict[str, Prediction]:
        if not entities:
            return {}
        marks = ", ".join("?" * len(entities))
        query = (
            f"SELECT {_PREDICTION_COLUMNS}, p.expires_at FROM latest l JOIN predictions p ON "
            "p.deployment = l.deployment AND p.event_id = l.event_id AND p.model = l.model "
            f"WHERE l.deployment = ? AND l.entity IN ({marks}) AND p.expires_at > ?"
        )
        with self.file.read() as conn:
            rows = conn.execute(query, (deployment, *entities, now)).fetchall()
        return {row[0]: _prediction(deployment, row, row[7]) for row in rows}

    def history(self, deployment: str, entity: str, limit: int, now: float) -> list[Prediction]:
        query = (
            f"SELECT {_PREDICTION_COLUMNS}, p.expires_at FROM predictions p WHERE "
            "p.deployment = ? AND p.entity = ? AND p.expires_at > ? "
            "ORDER BY p.seq DESC, p.written_at DESC LIMIT ?"
        )
        with self.file.read() as conn:
            rows = conn.execute(query, (deployment, entity, now, limit)).fetchall()
        return [_prediction(deployment, row, row[7]) for row in rows]

    def count(self, deployment: str) -> int:
        with self.file.read() as conn:
            query = "SELECT COUNT(*) FROM predictions WHERE deployment = ?"
            return int(conn.execute(query, (deployment,)).fetchone()[0])

    def purge(self, now: float) -> int:
        with self.file.write() as conn:
            removed = conn.execute("DELETE FROM predictions WHERE expires_at <= ?", (now,)).rowcount
            conn.execute(
                "DELETE FROM latest WHERE NOT EXISTS (SELECT 1 FROM predictions p WHERE "
                "p.deployment = latest.deployment AND p.event_id = latest.event_id "
                "AND p.model = latest.model)"
            )
        return removed

    def drop(self, deployment: str) -> None:
        with self.file.write() as conn:
            conn.execute("DELETE FROM predictions WHERE deployment = ?", (deployment,))
            conn.execute("DELETE FROM latest WHERE deployment = ?", (deployment,))

    def close(self) -> None:
        self.file.close()


def _jsonable(value: Any) -> Any:
    """What an inference function may return besides JSON: numpy values and records."""
    if isinstance(value, Record):
        return value.to_dict()
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
