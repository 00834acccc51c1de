"""The queue of triggers on NATS JetStream: the bus when the platform outgrows one machine.

Layout (``P`` is the URL's ``?prefix=``, default ``modelyard``):

- stream ``P_triggers``, work-queue retention on file storage, subjects
  ``P.triggers.{namespace}.{deployment}.{entity}``: a trigger is a message, removed once acked.
  Enqueue publishes with ``Nats-Msg-Id: {deployment}:{seq}``, so a repeat within the stream's
  duplicate window is stored once; a repeat after it runs again, which the prediction store's
  one-prediction-per-(deployment, trigger, model version) rule turns into no new effect.
- one durable pull consumer per deployment, filtered on its subjects, explicit acks with
  ``ack_wait`` = the lease: a trigger not acked in time (its worker died or hangs) is delivered
  again. ``release`` (a worker starting) recreates the consumer, so every unacked trigger goes out
  again at once instead of after the ack wait.
- stream ``P_dead`` (``P.dead.{namespace}.{deployment}.{entity}``): dead letters with their
  traceback; ``retry`` publishes them as triggers again and purges them.
- key-value bucket ``P_cursors``: the router's cursor per deployment, moved after its triggers
  were acknowledged by the server (a crash in between re-publishes them: deduplicated). It only
  goes forward, in one round trip: a compare-and-set on the revision this client last read or
  wrote (kept in memory; the deployment's one router is usually the only writer). When another
  process moved it meanwhile (a router that took over, a drop) the set fails and the cursor is read
  again: a cursor not past it is not written, so it never goes back, and it never skips, as only
  a cursor whose triggers the server stored is written. A cursor not past the one in memory is
  checked against the server's, as that one may have gone back (a drop elsewhere).

Per-entity order: JetStream hands a pull consumer messages in stream order but several at once, so
this class keeps the fetched triggers in memory per entity and hands out, in log order, the oldest
it holds of entities that have none out: all of an entity's (a run) unless the claim's limit cuts
it; the entity's others wait until the whole run is acked, failed or put back. A failed trigger is
nak'ed and its entity waits for its redelivery, so it goes first again; the run's triggers after it
that were put back stay delivered to this client, unacked (with their handles and attempts), and
follow it. The same goes for a run whose lease ended: it goes again once delivered again.
A claim fetches only when what it holds does not fill the batch. With nothing to hand out it
fetches at most what it has room for in one round trip: nats-py's fetch first sends a no-wait pull,
which the server answers with what it has (new or due again) and ends at once; with none it waits
up to ``FETCH_S`` for the first to come. With some to hand out it asks how many the consumer has
undelivered and fetches those, never waiting on the server (a fetch returns once full, else only
when its time is up).
That holds within one worker process: a realtime revision runs one replica
(`modelyard.serving.controller.REALTIME_REPLICAS`) for this reason.
A trigger's attempts are the consumer's deliveries of it (``num_delivered`` - 1): failures and
ended leases count towards ``max_attempts`` and the dead letters; a worker's restart recreates
the consumer, which counts again from one.

Acks cost one round trip per batch, not one per trigger: a batch's acks are published without
waiting for the server's answer to each, except the last of each deployment, a request. The server
takes a connection's messages in order and a consumer's acks in order, so its answer to that one
means it has processed them all: when ``ack_many`` returns, the triggers are gone (``pending``
no longer counts them) and the entities may go on. Only a connection lost in the middle of a
batch can lose an ack that was not the one confirmed; that trigger is delivered again after the
ack wait and run again, which the prediction store turns into no new effect (one prediction per
(deployment, trigger, model version), the latest never going back to an older trigger). Naks are
not confirmed either: a lost one only delays the retry until the ack wait.

How durable an acknowledged enqueue is depends on the server: JetStream's file store survives a
kill -9 of the server; set ``sync_interval: always`` (NATS 2.10+) for a power cut.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import heapq
import re
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

import orjson

from modelyard.errors import ConfigError, StoreError
from modelyard.realtime.queue import DeadLetter, Trigger

T = TypeVar("T")
DUPLICATE_WINDOW_S = 600.0
FETCH_S = 0.05
"""How long one fetch waits on the server for triggers; the worker polls again when idle."""
BUFFER = 4096
"""Triggers fetched and held per deployment before fetching more: an entity with a backlog
larger than this holds up the others until it is worked down (a hot user)."""
_PLAIN = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(slots=True)
class _Out:
    """An entity's triggers not in this client's hands: on lease to a worker, or awaited from the
    server again (nak'ed, or on a lease that ended), so none of the entity's later ones goes
    before them."""

    leased: set[int] = field(default_factory=set)
    until: float = 0.0
    """The end of the lease of ``leased``."""
    awaited: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.leased or self.awaited)


def token(value: str) -> str:
    """A name as one subject token: as it is when it is plain, else ``~`` and base64url (NATS
    gives ``.``, ``*``, ``>`` and spaces a meaning; ``~`` never starts a plain token)."""
    if _PLAIN.fullmatch(value):
        return value
    return "~" + base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


class NatsTriggerQueue:
    def __init__(self, url: str) -> None:
        try:
            import nats  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "the NATS trigger queue needs nats-py: pip install 'modelyard[realtime]'"
            ) from exc
        parts = urlsplit(url)
        self.prefix = parse_qs(parts.query).get("prefix", ["modelyard"])[0]
        if not _PLAIN.fullmatch(self.prefix):
            raise ConfigError(f"the NATS queue's prefix {self.prefix!r} is not [A-Za-z0-9_-]+")
        self.server = urlunsplit(parts._replace(query=""))
        self.triggers_stream = f"{self.prefix}_triggers"
        self.dead_stream = f"{self.prefix}_dead"
        self._lock = threading.Lock()
        self._fetching = threading.Lock()
        self._held: dict[str, dict[str, dict[int, Trigger]]] = {}
        """Per deployment and entity: fetched triggers not handed out yet, by seq."""
        self._out: dict[str, dict[str, _Out]] = {}
        """Per deployment and entity with triggers out: which, and until when."""
        self._subs: dict[str, Any] = {}
        self._cursors: dict[str, tuple[int, int]] = {}
        """Per deployment: the newest cursor and its revision this client read or wrote."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nats", daemon=True)
        self._thread.start()
        try:
            self._run(self._connect())
        except BaseException:
            self.close()
            raise

    # plumbing -----------------------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except FutureTimeout as exc:
            if future.done():  # the coroutine's own timeout
                raise StoreError(f"the NATS trigger queue at {self.server} timed out") from exc
            future.cancel()
            raise StoreError(f"the NATS trigger queue at {self.server} did not answer") from exc
        except (OSError, ConnectionError) as exc:
            raise StoreError(f"the NATS trigger queue at {self.server} failed: {exc}") from exc
        except Exception as exc:
            if type(exc).__module__.startswith("nats"):
                raise StoreError(
                    f"the NATS trigger queue at {self.server} failed: {exc!r}"
                ) from exc
            raise

    async def _connect(self) -> None:
        import nats
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig

        self.nc = await nats.connect(
            self.server, connect_timeout=5, max_reconnect_attempts=-1, allow_reconnect=True
        )
        self.js = self.nc.jetstream()
        for name, subjects, retention in (
            (self.triggers_stream, f"{self.prefix}.triggers.>", RetentionPolicy.WORK_QUEUE),
            (self.dead_stream, f"{self.prefix}.dead.>", RetentionPolicy.LIMITS),
        ):
            config = StreamConfig(
                name=name,
                subjects=[subjects],
                retention=retention,
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_S,
            )
            await self.js.add_stream(config)  # the same config again is a no-op
        self.kv = await self.js.create_key_value(bucket=f"{self.prefix}_cursors", history=1)

    def _subject(self, kind: str, deployment: str, entity: str = "") -> str:
        namespace, _, name = deployment.partition("/")
        base = f"{self.prefix}.{kind}.{token(namespace)}.{token(name)}"
        return f"{base}.{token(entity)}" if entity else f"{base}.>"

    @staticmethod
    def _durable(deployment: str) -> str:
        readable = re.sub(r"[^A-Za-z0-9_-]", "_", deployment)[:64]
        return f"{readable}-{hashlib.sha256(deployment.encode()).hexdigest()[:10]}"

    @staticmethod
    def _cursor_key(deployment: str) -> str:
        return deployment.encode().hex()

    # the protocol -------------------------------------------------------------------------------
    def cursor(self, deployment: str) -> int:
        return self._run(self._cursor(deployment))

    async def _cursor(self, deployment: str) -> int:
        return (await self._read_cursor(deployment))[0]

    async def _read_cursor(self, deployment: str) -> tuple[int, int]:
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self.kv.get(self._cursor_key(deployment))
            read = int(entry.value or b"0"), entry.revision or 0
        except KeyNotFoundError as exc:  # never set (revision 0), or purged: its marker's
            read = 0, exc.entry.revision if exc.entry is not None else 0
        self._remember(deployment, *read)
        return read

    def _remember(self, deployment: str, cursor: int, revision: int) -> None:
        # Revisions only grow: a read that answered before a write (another thread's) is older.
        if revision >= self._cursors.get(deployment, (0, -1))[1]:
            self._cursors[deployment] = cursor, revision

    def enqueue(self, deployment: str, triggers: Sequence[Trigger], cursor: int) -> None:
        self._run(self._enqueue(deployment, triggers, cursor))

    async def _enqueue(self, deployment: str, triggers: Sequence[Trigger], cursor: int) -> None:
        # Published in order on one connection: the stream keeps each entity's triggers in log
        # order. The cursor moves only once the server stored every one of them.
        acks = [
            await self.js.publish_async(
                self._subject("triggers", deployment, t.entity),
                _payload(t),
                headers={"Nats-Msg-Id": f"{deployment}:{t.seq}"},
            )
            for t in triggers
        ]
        await asyncio.gather(*acks)
        await self._move_cursor(deployment, cursor)

    async def _move_cursor(self, deployment: str, cursor: int) -> None:
        from nats.js.errors import KeyWrongLastSequenceError

        known = self._cursors.get(deployment)
        if known is None or cursor <= known[0]:  # see the module docstring
            known = await self._read_cursor(deployment)
        while cursor > known[0]:
            try:
                revision = await self.kv.update(
                    self._cursor_key(deployment), str(cursor).encode(), last=known[1]
                )
            except KeyWrongLastSequenceError:  # moved by another process meanwhile
                known = await self._read_cursor(deployment)
            else:
                self._remember(deployment, cursor, revision)
                return

    def claim(self, deployment: str, limit: int, lease_s: float, now: float) -> list[Trigger]:
        claimed = self._hand_out(deployment, limit, lease_s, now)
        if len(claimed) < limit and self._fetching.acquire(blocking=False):
            try:
                with self._lock:
                    held = sum(len(h) for h in self._held.get(deployment, {}).values())
                fetched = []
                if held < BUFFER:
                    # wait for the server only when there is nothing to hand out meanwhile
                    wait = not claimed
                    fetched = self._run(self._fetch(deployment, BUFFER - held, lease_s, wait))
            finally:
                self._fetching.release()
            with self._lock:
                entities = self._held.setdefault(deployment, {})
                for trigger in fetched:
                    # a redelivery of a held trigger replaces it: its new handle is the live one
                    entities.setdefault(trigger.entity, {})[trigger.seq] = trigger
            more = self._hand_out(deployment, limit - len(claimed), lease_s, now)
            if more:  # in log order, as if claimed at once
                claimed = sorted(claimed + more, key=lambda t: t.seq)
        return claimed

    def _hand_out(self, deployment: str, limit: int, lease_s: float, now: float) -> list[Trigger]:
        """The oldest ``limit`` of the held triggers of entities with none out, in log order."""
        with self._lock:
            out = self._out.setdefault(deployment, {})
            entities = self._held.get(deployment, {})
            free: list[tuple[int, str]] = []
            for entity, held in entities.items():
                state = out.get(entity)
                before: float = float("inf")
                if state is not None:
                    if state.leased and now < state.until:
                        continue
                    # the lease is over: the server delivers its triggers again
                    state.awaited |= state.leased
                    state.leased = set()
                    # none goes before one that is awaited: never an entity's next while an
                    # earlier one is unacked
                    before = min((s for s in state.awaited if s not in held), default=before)
                free += [(seq, entity) for seq in held if seq < before]
            runs: dict[str, list[Trigger]] = {}
            for seq, entity in heapq.nsmallest(limit, free):
                runs.setdefault(entity, []).append(entities[entity].pop(seq))
            for entity, run in runs.items():
                if not entities[entity]:
                    del entities[entity]
                state = out.setdefault(entity, _Out())
                state.leased, state.until = {t.seq for t in run}, now + lease_s
                state.awaited -= state.leased
        return sorted((t for run in runs.values() for t in run), key=lambda t: t.seq)

    async def _fetch(self, deployment: str, room: int, lease_s: float, wait: bool) -> list[Trigger]:
        sub = self._subs.get(deployment)
        if sub is None:
            sub = self._subs[deployment] = await self._subscribe(deployment, lease_s)
        if wait:  # what the server has, at once, else the first to come (module docstring)
            ready = room
        else:  # a fetch waits for its batch or its time: ask for what the server has undelivered
            ready = min(room, (await sub.consumer_info()).num_pending)
            if not ready:
                return []
        try:
            messages = await sub.fetch(ready, timeout=FETCH_S)
        except TimeoutError:  # nats-py's and asyncio's: no trigger came within FETCH_S
            return []
        found = []
        for message in messages:
            data = orjson.loads(message.data)
            attempts = message.metadata.num_delivered - 1
            found.append(_trigger(deployment, data, attempts, message.reply))
        return found

    async def _subscribe(self, deployment: str, lease_s: float) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        config = ConsumerConfig(
            durable_name=self._durable(deployment),
            filter_subject=self._subject("triggers", deployment),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=lease_s,
            max_ack_pending=20_000,
        )
        await self.js.add_consumer(self.triggers_stream, config)
        return await self.js.pull_subscribe_bind(
            durable=self._durable(deployment), stream=self.triggers_stream
        )

    def ack(self, trigger: Trigger) -> None:
        self.ack_many([trigger])

    def ack_many(self, triggers: Sequence[Trigger]) -> None:
        if not triggers:
            return
        # confirmed (in one round trip) before the entities go on, see the module docstring
        self._run(self._ack_all(triggers))
        repeats = []
        with self._lock:
            for trigger in triggers:
                self._settle(trigger, awaited=False)
                held = self._held.get(trigger.deployment, {}).get(trigger.entity, {})
                repeat = held.pop(trigger.seq, None)  # delivered again while it was out
                if repeat is not None:
                    repeats.append(repeat.handle)
        if repeats:  # the same stream messages, acked already: nothing to confirm
            self._run(self._publish_all(repeats, b"+ACK"))

    def _settle(self, trigger: Trigger, awaited: bool) -> None:
        """``trigger`` is no longer out (with the lock held); ``awaited``: the server delivers it
        again, and the entity waits for it."""
        entities = self._out.get(trigger.deployment, {})
        state = entities.get(trigger.entity)
        if state is None:
            if awaited:
                self._out.setdefault(trigger.deployment, {})[trigger.entity] = _Out(
                    awaited={trigger.seq}
                )
            return
        state.leased.discard(trigger.seq)
        if awaited:
            state.awaited.add(trigger.seq)
        else:
            state.awaited.discard(trigger.seq)
        if not state:
            del entities[trigger.entity]

    async def _ack_all(self, triggers: Sequence[Trigger]) -> None:
        # A deployment's acks go to its one consumer, which processes them in the order this
        # connection sent them: the answer to its last confirms the ones before it too.
        last = {t.deployment: t.handle for t in triggers}
        await self._publish_all(
            [t.handle for t in triggers if t.handle != last[t.deployment]], b"+ACK"
        )
        await asyncio.gather(*(self.nc.request(h, b"+ACK", timeout=5) for h in last.values()))

    async def _publish_all(self, subjects: list[str], body: bytes) -> None:
        for subject in subjects:  # buffered: no round trip
            await self.nc.publish(subject, body)

    def fail(self, trigger: Trigger, error: str, max_attempts: int, now: float) -> bool:
        attempts = trigger.attempts + 1
        dead = attempts >= max_attempts
        if dead:
            letter = {**_fields(trigger), "attempts": attempts, "error": error, "failed_at": now}
            subject = self._subject("dead", trigger.deployment, trigger.entity)
            self._run(self._bury(subject, orjson.dumps(letter), trigger))
        else:
            self._run(self._publish_all([trigger.handle], b"-NAK"))
        with self._lock:
            self._settle(trigger, awaited=not dead)
        return dead

    async def _bury(self, subject: str, letter: bytes, trigger: Trigger) -> None:
        # the dead letter is stored before the trigger goes; the ack is confirmed like a batch's
        await self.js.publish(subject, letter)
        await self._ack_all([trigger])

    def put_back(self, triggers: Sequence[Trigger]) -> None:
        # Still delivered to this client and unacked: held again as they are (handle, attempts),
        # unless the server delivered one again meanwhile (its new handle is the live one).
        with self._lock:
            for trigger in triggers:
                state = self._out.get(trigger.deployment, {}).get(trigger.entity)
                if state is None or trigger.seq not in state.leased | state.awaited:
                    continue  # acked, or released: not this client's any more
                self._settle(trigger, awaited=False)
                entities = self._held.setdefault(trigger.deployment, {})
                entities.setdefault(trigger.entity, {}).setdefault(trigger.seq, trigger)

    def release(self, deployment: str) -> None:
        self._run(self._release(deployment))
        with self._lock:
            self._held.pop(deployment, None)
            self._out.pop(deployment, None)

    async def _release(self, deployment: str) -> None:
        from nats.js.errors import NotFoundError

        sub = self._subs.pop(deployment, None)
        if sub is not None:
            await sub.unsubscribe()
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(self.triggers_stream, self._durable(deployment))

    def pending(self, deployment: str) -> tuple[int, float | None]:
        return self._run(self._pending(deployment))

    async def _pending(self, deployment: str) -> tuple[int, float | None]:
        from nats.js.errors import NotFoundError

        subjects = self._subject("triggers", deployment)
        try:
            info = await self.js.consumer_info(self.triggers_stream, self._durable(deployment))
            count = info.num_pending + info.num_ack_pending
        except NotFoundError:
            stream = await self.js.stream_info(self.triggers_stream, subjects_filter=subjects)
            count = sum((stream.state.subjects or {}).values())
        if not count:
            return 0, None
        try:
            first = await self.js.get_msg(self.triggers_stream, seq=1, subject=subjects, next=True)
        except NotFoundError:
            return 0, None
        return count, float(orjson.loads(first.data or b"{}").get("enqueued_at", 0.0))

    def dead_letters(self, deployment: str, limit: int = 100) -> list[DeadLetter]:
        letters = self._run(self._dead(deployment, limit))
        return [
            DeadLetter.model_validate(
                {k: v for k, v in data.items() if k in DeadLetter.model_fields}
            )
            for data in letters
        ]

    async def _dead(self, deployment: str, limit: int) -> list[dict[str, Any]]:
        from nats.js.errors import NotFoundError

        subjects, seq = self._subject("dead", deployment), 1
        found: list[dict[str, Any]] = []
        while len(found) < limit:
            try:
                message = await self.js.get_msg(
                    self.dead_stream, seq=seq, subject=subjects, next=True
                )
            except NotFoundError:
                break
            found.append(orjson.loads(message.data or b"{}"))
            seq = (message.seq or seq) + 1
        return found

    def retry(self, deployment: str) -> int:
        return self._run(self._retry(deployment), timeout=300)

    async def _retry(self, deployment: str) -> int:
        letters = await self._dead(deployment, 2**31)
        acks = [
            await self.js.publish_async(
                self._subject("triggers", deployment, data["entity"]),
                orjson.dumps({**data, "attempts": 0}),
                headers={"Nats-Msg-Id": f"{deployment}:{data['seq']}:retry:{data['failed_at']}"},
            )
            for data in letters
        ]
        await asyncio.gather(*acks)
        await self.js.purge_stream(self.dead_stream, subject=self._subject("dead", deployment))
        return len(letters)

    def drop(self, deployment: str) -> None:
        self.release(deployment)
        self._run(self._drop(deployment))

    async def _drop(self, deployment: str) -> None:
        from nats.js.errors import KeyNotFoundError

        await self.js.purge_stream(
            self.triggers_stream, subject=self._subject("triggers", deployment)
        )
        await self.js.purge_stream(self.dead_stream, subject=self._subject("dead", deployment))
        with contextlib.suppress(KeyNotFoundError):
            await self.kv.purge(self._cursor_key(deployment))
        self._cursors.pop(deployment, None)  # gone back to 0: read it again

    def close(self) -> None:
        if self._loop.is_closed():
            return
        nc = getattr(self, "nc", None)
        if nc is not None:
            with contextlib.suppress(StoreError):
                self._run(nc.close(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def _fields(trigger: Trigger) -> dict[str, Any]:
    return {
        "deployment": trigger.deployment,
        "entity": trigger.entity,
        "seq": trigger.seq,
        "event_id": trigger.event_id,
        "event_time": trigger.event_time,
        "enqueued_at": trigger.enqueued_at,
    }


def _payload(trigger: Trigger) -> bytes:
    return orjson.dumps(_fields(trigger))


def _trigger(deployment: str, data: dict[str, Any], attempts: int, handle: str) -> Trigger:
    return Trigger(
        deployment,
        str(data["entity"]),
        int(data["seq"]),
        str(data["event_id"]),
        float(data["event_time"]),
        float(data["enqueued_at"]),
        attempts,
        handle,
    )
