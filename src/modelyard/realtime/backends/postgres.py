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
from modelyard.realtime.eventstore import DecodedEvents, HistoryReads
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
_LATERAL = ", ".join(
    f"CASE WHEN h.seq > w.known THEN h.{column} END" for column in _COLUMNS.split(", ")[1:]
)


class PostgresEventStore(HistoryReads):
    def __init__(self, url: str) -> None:
        try:
            import psycopg
            import psycopg.types.json
        except ImportError as exc:
            raise ConfigError(
                "the PostgreSQL event store needs psycopg: pip install 'modelyard[postgres]'"
            ) from exc
        self._psycopg = psycopg
        self.url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self.decoded = DecodedEvents()
        with self._conn() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('modelyard.realtime.schema'))")
            conn.execute(_SCHEMA)

    @contextmanager
    def _conn(self) -> Iterator[Any]:
        """This thread's connection, in autocommit: each statement is its own transaction and
        sees one snapshot (BEGIN and COMMIT around it would be two more round trips)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._psycopg.connect(self.url, autocommit=True)
            # JSONB read by orjson: several times faster than json (which ingest wrote it with)
            self._psycopg.types.json.set_json_loads(orjson.loads, conn)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        yield conn

    def append(self, stream: str, events: Sequence[NewEvent], now: float) -> list[bool]:
        if not events:
            return []
        # One statement, so one round trip (not BEGIN, the lock, the insert and COMMIT): the
        # lock's row is joined to every event's, so it is taken before any row draws its seq,
        # and held until the statement's own transaction commits.
        with self._conn() as conn:
            rows = conn.execute(
                "WITH locked AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtext(%s))) "
                "INSERT INTO realtime_events (stream, event_id, entity, type, time, ingested_at, "
                "data) SELECT %s, e.id, e.entity, e.type, e.time, %s, e.data::jsonb FROM locked, "
                "unnest(%s::text[], %s::text[], %s::text[], %s::float8[], %s::text[]) "
                "WITH ORDINALITY AS e(id, entity, type, time, data, n) ORDER BY e.n "
                "ON CONFLICT (stream, event_id) DO NOTHING RETURNING event_id",
                (
                    stream,
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

    def _read(
        self,
        stream: str,
        triggers: Sequence[tuple[str, int]],
        limit: int,
        decoded: DecodedEvents,
    ) -> list[list[RawEvent]]:
        if not triggers:
            return []
        # Only the events after those held decoded are read in full (see DecodedEvents), and
        # of an entity's run of triggers, each reads in full only what the one before it did not:
        # rows come in trigger order, so an event the run read already is in ``fresh``.
        held: list[dict[int, RawEvent]] = []
        known: list[int] = []
        read_to: dict[str, int] = {}
        for entity, upto in triggers:
            kept, highest = decoded.known(stream, entity)
            held.append(kept)
            known.append(max(highest, read_to.get(entity, 0)))
            read_to[entity] = max(upto, read_to.get(entity, 0))
        rows = self._histories(stream, triggers, known, limit)
        found: list[list[RawEvent]] = [[] for _ in triggers]
        fresh: dict[tuple[str, int], RawEvent] = {}
        missed = set()
        for r in rows:
            if r[2] is None:
                entity = triggers[r[0] - 1][0]
                event = held[r[0] - 1].get(r[1]) or fresh.get((entity, r[1]))
                if event is None:
                    missed.add(r[0] - 1)  # older than what is held: read in full below
                    continue
                found[r[0] - 1].append(event)
            else:
                event = RawEvent(r[1], r[2], r[3], r[4], r[5], r[6], r[7])
                fresh[(event.entity, event.seq)] = event
                found[r[0] - 1].append(event)
        if missed:
            again = sorted(missed)
            for i in again:
                found[i] = []
            wanted = [triggers[i] for i in again]
            for r in self._histories(stream, wanted, [-1] * len(again), limit):
                found[again[r[0] - 1]].append(RawEvent(r[1], r[2], r[3], r[4], r[5], r[6], r[7]))
        for (entity, _), events in zip(triggers, found, strict=True):
            decoded.keep(stream, entity, events)
        return found

    def _histories(
        self, stream: str, triggers: Sequence[tuple[str, int]], known: list[int], limit: int
    ) -> list[Any]:
        """Rows (trigger's number from 1, seq, the other columns: NULL where ``seq`` is not
        above the trigger's ``known``), in history order."""
        with self._conn() as conn:
            rows: list[Any] = conn.execute(
                f"SELECT w.n, h.seq, {_LATERAL} FROM unnest(%s::text[], %s::bigint[], "
                "%s::bigint[]) WITH ORDINALITY AS w(entity, upto, known, n) CROSS JOIN LATERAL "
                "(SELECT * FROM realtime_events e WHERE e.stream = %s AND e.entity = w.entity "
                "AND e.seq <= w.upto ORDER BY e.seq DESC LIMIT %s) h ORDER BY w.n, h.seq",
                ([t[0] for t in triggers], [t[1] for t in triggers], known, stream, limit),
            ).fetchall()
        return rows

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
