"""One control plane at a time: a lease in the database, taken and renewed like Kubernetes' Lease.

The lease is one row (``control_plane_lease``): who holds it, where that holder serves its API,
until when, and a *term* raised at every acquisition (a fencing number that never goes back).
Every change is a conditional UPDATE in its own short transaction, a compare-and-set:

- *acquire* succeeds only when nobody holds the lease or its holder let it expire;
- *renew* and *release* succeed only while the row still names this holder and this term.

Times come from one clock, the database's (PostgreSQL's ``clock_timestamp()``; on SQLite the clock
of the one machine that holds the file), so holders on different machines, and a holder restarted
after a clock change, compare the same numbers.

The holder counts its own deadline on its monotonic clock from the start of its last successful
renewal: ``renew deadline`` (two thirds of the lease) later it stops its controllers unless a
renewal succeeded since, which is at least a third of the lease before a standby may take over.
A separate deadline loop enforces this even while a renewal hangs on an unreachable database.

A control plane restarted on the same machine and home (``modelyard up`` after a crash) need not
wait for its dead predecessor's lease to expire: a holder keeps an exclusive lock on a file of its
home for as long as it lives and records its *seat* (host and the home's id) in the row, so a
process of the same seat that now holds that lock knows the holder is gone, and takes the lease
over at once (still a compare-and-set on the old holder and term). Other machines, and pods,
whose host names differ, wait for the expiry.
What the deadline cannot cover is a holder frozen between its check and a write (a paused VM).
The term fences such writes: while it holds the lease, every write transaction of the holder's
database begins by reading the row with its holder and term (`LeaseTable.fence`), locked until the
transaction ends (PostgreSQL: ``FOR SHARE``, which a takeover's UPDATE waits for; SQLite: the
write lock ``BEGIN IMMEDIATE`` took). A write that finds the lease taken is refused and changes
nothing; a takeover waits for the writes already checked to end.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from modelyard.errors import ModelyardError, Unavailable
from modelyard.loops import FOREVER, Loop
from modelyard.store.db import Database
from modelyard.store.schema import ControlPlaneLeaseRow

log = logging.getLogger(__name__)

LEASE_NAME = "control-plane"
RENEW_DEADLINE = 2 / 3
"""The share of the lease a holder may go without a successful renewal before it steps down."""


class LeaseState(enum.StrEnum):
    STANDBY = "standby"
    """Waiting for the lease; the controllers do not run."""
    LEADER = "leader"
    """Holding the lease; the controllers run."""
    LOST = "lost"
    """Held it, then could not renew in time or found it taken: the controllers were stopped."""
    RELEASED = "released"
    """Stopped on purpose; the lease was handed back."""


@dataclass(frozen=True)
class LeaseRecord:
    """The row as one transaction saw it, with the database's clock at that moment."""

    holder: str | None
    holder_url: str | None
    seat: str | None
    term: int
    expires_at: float
    now: float

    @property
    def held(self) -> bool:
        return self.holder is not None and self.expires_at > self.now


def identity() -> str:
    """This process among all control planes: its host (a pod's name), its pid, a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class HomeLock:
    """An exclusive lock on ``<home>/controlplane.lock``, which the kernel drops when the process
    dies, even by kill -9, and the home's id, made once (``<home>/controlplane.id``)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._fd: int | None = None

    def seat(self) -> str:
        return f"{socket.gethostname()}/{self._home_id()}"

    def _home_id(self) -> str:
        path = self.home / "controlplane.id"
        if not path.exists():
            temp = self.home / f".controlplane.id.{os.getpid()}.tmp"
            temp.write_text(secrets.token_hex(8) + "\n")
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(temp, path)
            temp.unlink()
        return path.read_text().strip()

    def acquire(self) -> bool:
        """Take the lock if free (never waits); True while this process holds it."""
        if self._fd is not None:
            return True
        import fcntl

        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.home / "controlplane.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


class LeaseTable:
    """The compare-and-set operations on the lease row, each in its own short transaction."""

    def __init__(self, db: Database, name: str = LEASE_NAME, timeout: float = 5.0) -> None:
        self.db = db
        self.name = name
        self.timeout = timeout
        self.table = cast(sa.Table, ControlPlaneLeaseRow.__table__)

    def _now(self) -> sa.ColumnElement[float]:
        if self.db.is_sqlite:
            return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float)
        return sa.cast(sa.extract("epoch", sa.func.clock_timestamp()), sa.Float)

    def _begin(self, session: Session) -> None:
        if not self.db.is_sqlite:  # a short transaction: never queue behind a stuck one for long
            ms = int(self.timeout * 1000)
            session.execute(sa.text(f"SET LOCAL statement_timeout = {ms}"))
            session.execute(sa.text(f"SET LOCAL lock_timeout = {ms}"))

    def _read(self, session: Session) -> LeaseRecord:
        t = self.table
        row = session.execute(
            sa.select(
                t.c.holder, t.c.holder_url, t.c.seat, t.c.term, t.c.expires_at, self._now()
            ).where(t.c.name == self.name)
        ).one_or_none()
        if row is None:
            raise ModelyardError(
                "the control_plane_lease row is missing: run the migrations (modelyard migrate)"
            )
        return LeaseRecord(row[0], row[1], row[2], int(row[3]), float(row[4]), float(row[5]))

    def read(self) -> LeaseRecord:
        with self.db.read() as session:
            return self._read(session)

    def acquire(
        self,
        holder: str,
        url: str | None,
        duration: float,
        seat: str | None = None,
        gone: tuple[str, int] | None = None,
    ) -> tuple[int | None, LeaseRecord]:
        """Take the lease if nobody holds it, it expired, or it is still held by ``gone`` (holder,
        term), known dead: (the new term, the row after), or (None, the row as it is)."""
        t, now = self.table, self._now()
        free = sa.or_(t.c.holder.is_(None), t.c.expires_at < now)
        if gone is not None:
            free = sa.or_(free, sa.and_(t.c.holder == gone[0], t.c.term == gone[1]))
        with self.db.write(fenced=False) as session:
            self._begin(session)
            term = session.execute(
                sa.update(t)
                .where(t.c.name == self.name, free)
                .values(
                    holder=holder,
                    holder_url=url,
                    seat=seat,
                    term=t.c.term + 1,
                    duration_seconds=duration,
                    acquired_at=now,
                    renewed_at=now,
                    expires_at=now + duration,
                )
                .returning(t.c.term)
            ).scalar_one_or_none()
            return (None if term is None else int(term)), self._read(session)

    def renew(self, holder: str, term: int, url: str | None, duration: float) -> LeaseRecord | None:
        """Extend the lease while it is still ours (this holder, this term); None when not."""
        t, now = self.table, self._now()
        with self.db.write(fenced=False) as session:
            self._begin(session)
            renewed = session.execute(
                sa.update(t)
                .where(t.c.name == self.name, t.c.holder == holder, t.c.term == term)
                .values(renewed_at=now, expires_at=now + duration, holder_url=url)
                .returning(t.c.term)
            ).scalar_one_or_none()
            return None if renewed is None else self._read(session)

    def fence(self, holder: str, term: int) -> Callable[[Session], None]:
        """The check the holder's write transactions begin with: the row still names ``holder``
        and ``term``, and stays so until the transaction ends; else `Unavailable`, before
        anything is written."""
        t = self.table
        query = sa.select(t.c.term).where(
            t.c.name == self.name, t.c.holder == holder, t.c.term == term
        )
        if not self.db.is_sqlite:  # SQLite: the write transaction holds the database's lock
            query = query.with_for_update(read=True)

        def check(session: Session) -> None:
            if session.execute(query).scalar_one_or_none() is None:
                raise Unavailable(
                    f"this control plane no longer holds the lease (term {term}): another took "
                    "it over, so nothing was written; send the request to the leader"
                )

        return check

    def release(self, holder: str, term: int) -> bool:
        """Hand the lease back at once (a standby takes it on its next try); False when it was
        not ours any more."""
        t, now = self.table, self._now()
        with self.db.write(fenced=False) as session:
            self._begin(session)
            released = session.execute(
                sa.update(t)
                .where(t.c.name == self.name, t.c.holder == holder, t.c.term == term)
                .values(holder=None, holder_url=None, seat=None, renewed_at=now, expires_at=now)
                .returning(t.c.term)
            ).scalar_one_or_none()
            return released is not None


class Lease:
    """Waits for the lease, holds it, and says so: ``on_acquired`` starts what only the holder may
    run, ``on_lost`` stops it (called once, from a lease thread). See the module docstring."""

    def __init__(
        self,
        table: LeaseTable,
        *,
        duration: float,
        retry: float,
        on_acquired: Callable[[], None],
        on_lost: Callable[[str], None],
        url: Callable[[], str | None] = lambda: None,
        home: Path | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``home``: the control plane's folder, for a restart there to take over at once from
        a dead predecessor (see the module docstring)."""
        self.table = table
        self.duration = duration
        self.retry = retry
        self.renew_deadline = duration * RENEW_DEADLINE
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.url = url
        self.monotonic = monotonic
        self.identity = identity()
        self._lock = threading.Lock()
        self._state = LeaseState.STANDBY
        self._term: int | None = None
        self._deadline = 0.0
        self._seen: LeaseRecord | None = None
        self._seen_at = 0.0
        self._told: tuple[str | None, int] | None = None
        self._home = HomeLock(home) if home is not None else None
        self.loop = Loop("lease", self._round, interval=retry, join_timeout=2 * table.timeout)
        self.watch = Loop("lease.deadline", self._watch)

    # what the control plane asks ----------------------------------------------------------------
    @property
    def state(self) -> LeaseState:
        return self._state

    @property
    def leading(self) -> bool:
        """Holding the lease now: the state says so and the renew deadline has not passed."""
        with self._lock:
            return self._state is LeaseState.LEADER and self.monotonic() < self._deadline

    @property
    def term(self) -> int | None:
        return self._term

    def start(self) -> None:
        """Try once now (a lone control plane starts its controllers before it serves), then
        keep trying, or renewing, in the lease loop."""
        with self._lock:
            self._state, self._term, self._told = LeaseState.STANDBY, None, None
            self.identity = identity()
        self._round()
        self.watch.start()
        self.loop.wait_first = True
        self.loop.start()

    def stop(self, stop_held: Callable[[], None] = lambda: None) -> None:
        """Stop what the lease guards with ``stop_held`` (renewals go on meanwhile, so nobody
        starts beside it), stop trying, and hand the lease back at once when held."""
        with self._lock:
            leading = self._state is LeaseState.LEADER
            if not leading:  # an acquisition that succeeds from now on is handed back
                self._state = LeaseState.RELEASED
        if leading:
            stop_held()
        with self._lock:
            self._state = LeaseState.RELEASED
            term, self._term = self._term, None
        self.loop.stop()
        self.watch.stop()
        if term is not None:
            self._hand_back(term)
            log.info("handed the control plane lease back (term %d)", term)
        if self._home is not None:
            self._home.release()

    def expires_in(self) -> float | None:
        """Seconds until the lease last seen expires (by the database's clock), None if unseen."""
        with self._lock:
            seen, at = self._seen, self._seen_at
        if seen is None:
            return None
        return seen.expires_at - seen.now - (self.monotonic() - at)

    def seen(self) -> LeaseRecord | None:
        return self._seen

    def health(self) -> dict[str, Any]:
        seen, left = self._seen, self.expires_in()
        holds = seen is not None and seen.holder is not None and left is not None and left > 0
        return {
            "state": self._state.value,
            "identity": self.identity,
            "term": self._term if self._term is not None else (seen.term if seen else None),
            "holder": seen.holder if holds and seen else None,
            "holder_url": seen.holder_url if holds and seen else None,
            "expires_in_seconds": round(left, 3) if holds and left is not None else None,
            "loops": [self.loop.health().to_dict(), self.watch.health().to_dict()],
        }

    # the loops -----------------------------------------------------------------------------------
    def _observe(self, record: LeaseRecord, at: float) -> None:
        with self._lock:
            self._seen, self._seen_at = record, at

    def _round(self) -> float:
        state = self._state
        if state is LeaseState.LEADER:
            return self._renew()
        if state is LeaseState.STANDBY:
            self._acquire()
            return self.retry
        return FOREVER  # lost or released: only a new start() tries again

    def _seat(self) -> str | None:
        """This process's seat while it holds its home's lock (else None: no fast takeover)."""
        try:
            return self._home.seat() if self._home is not None and self._home.acquire() else None
        except OSError as exc:
            log.warning("no lock on the home %s: %s", self._home and self._home.home, exc)
            return None

    def _acquire(self) -> None:
        started = self.monotonic()
        seat = self._seat()
        try:
            term, record = self.table.acquire(self.identity, self.url(), self.duration, seat)
            if term is None and seat is not None and record.seat == seat and record.holder:
                # The holder sat here and kept this lock while it lived; we hold it now.
                gone = (record.holder, record.term)
                term, record = self.table.acquire(
                    self.identity, self.url(), self.duration, seat, gone
                )
                if term is not None:
                    log.info("%s ran on this home and is gone: taking its lease over", gone[0])
        except ModelyardError as exc:
            log.warning("could not try the control plane lease: %s", exc)
            return
        self._observe(record, started)
        if term is None:
            told = (record.holder, record.term)
            if told != self._told:
                self._told = told
                log.info(
                    "standby: the control plane %s (%s) holds the lease (term %d) for %.1f s "
                    "more; the controllers start here when it ends",
                    record.holder,
                    record.holder_url or "no URL",
                    record.term,
                    record.expires_at - record.now,
                )
            return
        with self._lock:
            taken = self._state is LeaseState.STANDBY
            if taken:
                self._state, self._term = LeaseState.LEADER, term
                self._deadline = started + self.renew_deadline
                self.table.db.fence = self.table.fence(self.identity, term)
        if not taken:  # stopped meanwhile
            self._hand_back(term)
            return
        log.info("acquired the control plane lease (term %d): starting the controllers", term)
        self.watch.wake()
        try:
            self.on_acquired()
        except Exception:
            log.exception("the controllers did not start: handing the lease back")
            with self._lock:
                if self._state is not LeaseState.LEADER:
                    return
                self._state, self._term, self._told = LeaseState.STANDBY, None, None
            self._hand_back(term)

    def _hand_back(self, term: int) -> None:
        """Release the lease, handed back on purpose: this process's writes are no longer fenced
        (what it writes from now on, as it shuts down, is not a controller's)."""
        self.table.db.fence = None
        try:
            self.table.release(self.identity, term)
        except ModelyardError as exc:
            log.warning("could not release the lease; it expires by itself: %s", exc)

    def _renew(self) -> float:
        started = self.monotonic()
        term = self._term
        assert term is not None
        try:
            record = self.table.renew(self.identity, term, self.url(), self.duration)
        except ModelyardError as exc:
            log.warning("could not renew the control plane lease (term %d): %s", term, exc)
            return self.retry  # the deadline loop steps down if this goes on
        if record is None:
            self._lose(f"another control plane took the lease (term {term} is over)")
            return FOREVER
        self._observe(record, started)
        with self._lock:
            if self._state is LeaseState.LEADER:
                self._deadline = max(self._deadline, started + self.renew_deadline)
        return self.retry

    def _watch(self) -> float:
        with self._lock:
            if self._state is not LeaseState.LEADER:
                return FOREVER
            left = self._deadline - self.monotonic()
        if left > 0:
            return left
        self._lose(f"no renewal succeeded for {self.renew_deadline:.1f} s")
        return FOREVER

    def _lose(self, why: str) -> None:
        with self._lock:
            if self._state is not LeaseState.LEADER:
                return
            self._state = LeaseState.LOST
        log.error("lost the control plane lease: %s; stopping the controllers", why)
        self.on_lost(why)


def retry_after(lease: Lease) -> int:
    """Seconds a client should wait before it tries a standby again: until the lease it saw ends
    (at least one, at most one lease)."""
    left = lease.expires_in()
    return max(
        1, min(math.ceil(left if left is not None else lease.retry), math.ceil(lease.duration))
    )
