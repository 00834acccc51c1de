"""The raw log in PostgreSQL: one table, queryable with SQL for feature work.

``realtime_events`` has one row per event (``data`` as JSONB) with a unique index on (stream,
event id) for the dedup and one on (stream, entity, seq) for histories. An append is one
transaction, durable at commit. Appends to one stream take a transaction-scoped advisory lock,
so they commit in ``seq`` order: a reader that has seen ``seq`` n never sees a smaller one appear
later (two writers could otherwise commit out of the order their ``seq`` were drawn in).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson

from modelyard.errors import ConfigError
from modelyard.realtime.streams import NewEvent, RawEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS realtime_events (
    seq BIGSERIAL PRIMARY KEY,
    stream TEXT NOT NULL, event_id TEXT NOT NULL, entity TEXT NOT NULL, type TEXT NOT NULL,
    time DOUBLE PRECISION NOT NULL, ingested_at DOUBLE PRECISION NOT NULL, data JSONB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS realtime_events_id ON realtime_events (stream, event_id);
CREATE INDEX IF NOT EXISTS realtime_events_entity ON realtime_events (stream, entity, seq);
CREATE INDEX IF NOT EXISTS realtime_events_stream ON realtime_events (stream, seq);
"""
_COLUMNS = "seq, event_id, entity, type, time, ingested_at, data"


class PostgresEventStore:
    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigError(
                "the PostgreSQL event store needs psycopg: pip install 'modelyard[postgres]'"
            ) from exc
        self._psycopg = psycopg
        self.url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        with self._conn() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('modelyard.realtime.schema'))")
            conn.execute(_SCHEMA)

    @contextmanager
    def _conn(self) -> Iterator[Any]:
        """This thread's connection, in one transaction."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._psycopg.connect(self.url, autocommit=True)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        with conn.transaction():
            yield conn

    def append(self, stream: str, events: Sequence[NewEvent], now: float) -> list[bool]:
        if not events:
            return []
        with self._conn() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (stream,))
            rows = conn.execute(
                "INSERT INTO realtime_events (stream, event_id, entity, type, time, ingested_at, "
                "data) SELECT %s, e.id, e.entity, e.type, e.time, %s, e.data::jsonb FROM "
                "unnest(%s::text[], %s::text[], %s::text[], %s::float8[], %s::text[]) "
                "WITH ORDINALITY AS e(id, entity, type, time, data, n) ORDER BY e.n "
                "ON CONFLICT (stream, event_id) DO NOTHING RETURNING event_id",
                (
                    stream,
                    now,
                    [e.event_id for e in events],
                    [e.entity for e in events],
                    [e.type for e in events],
                    [e.time for e in events],
                    [orjson.dumps(e.data).decode() for e in events],
                ),
            ).fetchall()
        inserted = {row[0] for row in rows}
        stored = []
        for e in events:  # a repeat inside the batch: only its first occurrence is stored
            stored.append(e.event_id in inserted)
            inserted.discard(e.event_id)
        return stored

    def read(self, stream: str, after: int, limit: int) -> list[RawEvent]:
        return self._query(
            f"SELECT {_COLUMNS} FROM realtime_events WHERE stream = %s AND seq > %s "
            "ORDER BY seq LIMIT %s",
            (stream, after, limit),
        )

    def history(
        self, stream: str, entity: str, upto: int | None = None, limit: int = 1000
    ) -> list[RawEvent]:
        rows = self._query(
            f"SELECT {_COLUMNS} FROM realtime_events WHERE stream = %s AND entity = %s "
            "AND seq <= %s ORDER BY seq DESC LIMIT %s",
            (stream, entity, upto if upto is not None else 2**62, limit),
        )
        return rows[::-1]

    def last_seq(self, stream: str) -> int:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT MAX(seq) FROM realtime_events WHERE stream = %s", (stream,)
            ).fetchone()
        return int(row[0] or 0)

    def pending(self, stream: str, after: int) -> tuple[int, float | None]:
        with self._conn() as conn:
            count, oldest = conn.execute(
                "SELECT COUNT(*), MIN(ingested_at) FROM realtime_events "
                "WHERE stream = %s AND seq > %s",
                (stream, after),
            ).fetchone()
        return int(count), oldest

    def delete_entity(self, stream: str, entity: str) -> int:
        return self._delete("stream = %s AND entity = %s", (stream, entity))

    def purge(self, stream: str, before: float) -> int:
        return self._delete("stream = %s AND ingested_at < %s", (stream, before))

    def drop(self, stream: str) -> None:
        self._delete("stream = %s", (stream,))

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[RawEvent]:
        with self._conn() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [RawEvent(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]

    def _delete(self, where: str, params: tuple[Any, ...]) -> int:
        with self._conn() as conn:
            return int(conn.execute(f"DELETE FROM realtime_events WHERE {where}", params).rowcount)
