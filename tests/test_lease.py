"""One control plane at a time: the lease row's compare-and-set, and real `modelyard up` processes
on one database (SQLite in a tmp folder, and PostgreSQL) of which only the holder runs controllers,
a standby that takes over when the holder is killed, paused or stopped."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from modelyard.api.server import BackgroundServer
from modelyard.controlplane import ControlPlane
from modelyard.errors import ConfigError, Unavailable
from modelyard.lease import LeaseState, LeaseTable
from modelyard.settings import Settings, load_settings
from modelyard.store.db import Database
from modelyard.store.schema import NamespaceRow
from modelyard.testing import Platform, wait_for
from tests.pipelines import flows

LEASE = {"MODELYARD_LEASE_SECONDS": "6", "MODELYARD_LEASE_RETRY_SECONDS": "1"}
TAKEOVER = 6 + 30  # the lease, and a margin for two cores shared by several test runs


def test_the_lease_row_is_a_compare_and_set(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    table = LeaseTable(db)
    try:
        term, seen = table.acquire("a", "http://a", 60)
        assert term == 1 and seen.holder == "a" and seen.held
        assert table.acquire("b", "http://b", 60)[0] is None  # held, not expired
        assert table.renew("a", 1, "http://a", 60) is not None
        assert table.renew("b", 1, "http://b", 60) is None  # not the holder
        assert table.release("a", 1)
        assert not table.release("a", 1)
        term, seen = table.acquire("b", "http://b", 0.2)
        assert term == 2 and seen.holder_url == "http://b"  # the term never goes back
        assert table.renew("a", 1, "http://a", 60) is None  # an old term renews nothing
        wait_for(lambda: table.acquire("a", "http://a", 60)[0] == 3, 10, "the short lease to end")
        assert table.renew("b", 2, "http://b", 60) is None  # expired and taken: b lost it
        # a holder known gone (by its seat's lock) is replaced at once, by compare-and-set
        assert table.acquire("c", "http://c", 60, gone=("a", 2))[0] is None  # a's term is 3
        term, seen = table.acquire("c", "http://c", 60, seat="host/home", gone=("a", 3))
        assert term == 4 and seen.holder == "c" and seen.seat == "host/home"
    finally:
        db.dispose()


def _add_namespace(db: Database, name: str) -> None:
    with db.write() as session:
        session.add(NamespaceRow(name=name, created_at=dt.datetime.now(dt.UTC)))


def _namespaces(db: Database) -> set[str]:
    with db.read() as session:
        return set(session.scalars(sa.select(NamespaceRow.name)))


def _two_holders(url: str) -> tuple[Database, Database]:
    """Two processes' databases on one store, migrated."""
    old, new = Database(url), Database(url)
    old.migrate()
    return old, new


def _lead(db: Database, seconds: float) -> int:
    """Take the lease as "old" for ``seconds`` and fence ``db``'s writes, as `Lease` does."""
    term, _ = LeaseTable(db).acquire("old", None, seconds)
    assert term is not None
    db.fence = LeaseTable(db).fence("old", term)
    return term


def test_a_deposed_holders_writes_are_refused_and_change_nothing(database_url: str) -> None:
    """A holder that slept through its lease (a paused VM) and wakes after a takeover: its next
    write is refused by the term, before anything is written."""
    old, new = _two_holders(database_url)
    try:
        _lead(old, 0.3)
        _add_namespace(old, "written-while-held")
        taken = LeaseTable(new)
        wait_for(lambda: taken.acquire("new", None, 60)[0] is not None, 10, "the takeover")
        with pytest.raises(Unavailable, match="no longer holds the lease"):
            _add_namespace(old, "written-after-the-takeover")
        assert _namespaces(new) == {"written-while-held"}
    finally:
        old.dispose()
        new.dispose()


def test_a_takeover_waits_for_the_holders_checked_writes(pg_url: str) -> None:
    """PostgreSQL: a write that passed the fence holds the lease row until it ends, so a standby
    takes over only after it (never with an old holder's write still under way)."""
    old, new = _two_holders(pg_url)
    try:
        term = _lead(old, 0.2)
        got: list[int | None] = []
        with old.write() as session:  # fenced: passed the check, still open
            session.add(NamespaceRow(name="slow-write", created_at=dt.datetime.now(dt.UTC)))
            session.flush()
            taker = threading.Thread(
                target=lambda: got.append(LeaseTable(new).acquire("new", None, 60)[0])
            )
            wait_for(lambda: not LeaseTable(new).read().held, 10, "the old lease to expire")
            taker.start()

            def waiting() -> bool:
                with new.read() as check:
                    return bool(
                        check.scalar(
                            sa.text(
                                "SELECT count(*) FROM pg_stat_activity WHERE "
                                "wait_event_type = 'Lock' "
                                "AND query LIKE 'UPDATE control_plane_lease%'"
                            )
                        )
                    )

            wait_for(waiting, 10, "the takeover to wait on the holder's write")
            assert not got
        taker.join(10)
        assert got == [term + 1]
        assert "slow-write" in _namespaces(new)
    finally:
        old.dispose()
        new.dispose()


def test_a_retry_period_too_long_for_the_lease_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at most a third of lease_seconds"):
        load_settings({"home": tmp_path, "lease_seconds": 3, "lease_retry_seconds": 2})
    loaded = load_settings({"home": tmp_path, "lease_seconds": 30, "lease_retry_seconds": 5})
    assert loaded.settings.lease_seconds == 30 and loaded.origins["lease_seconds"] == "flag"


def test_a_second_control_plane_on_the_same_database_is_a_standby(
    database_url: str, tmp_path: Path
) -> None:
    """In one process, two control planes on one database: the second runs no controller,
    serves reads and refuses writes naming the first; once the first stops, it leads."""
    first = ControlPlane.build(Settings(home=tmp_path / "a", database_url=database_url))
    second = ControlPlane.build(Settings(home=tmp_path / "b", database_url=database_url))
    try:
        first.ensure_admin_key()
        token = first.settings.admin_key_path.read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        with BackgroundServer(first) as leader, BackgroundServer(second) as standby:
            assert second.lease.state == LeaseState.STANDBY
            assert not any(loop.health().alive for loop in second.loops())
            refused = httpx.post(
                f"{standby.url}/api/v1/namespaces", json={"name": "team"}, headers=auth
            )
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "unavailable"
            assert refused.json()["error"]["leader_url"] == leader.url
            assert "Retry-After" in refused.headers
            assert first.namespaces.list() == []  # nothing was written
            listed = httpx.get(f"{standby.url}/api/v1/namespaces", headers=auth)
            assert listed.status_code == 200
            created = httpx.post(
                f"{leader.url}/api/v1/namespaces", json={"name": "team"}, headers=auth
            )
            assert created.status_code == 201
        # the first stopped and handed the lease back: the second takes it on its next try
        with BackgroundServer(second) as standby:
            wait_for(lambda: second.lease.leading, 10, "the second to lead")
            assert all(loop.health().alive for loop in second.loops())
            health = httpx.get(f"{standby.url}/api/v1/health").json()
            assert health["role"] == "leader" and health["lease"]["term"] == 2
    finally:
        second.close()
        first.close()


def health(platform: Platform) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{platform.url}/api/v1/health").json()
    return body


def controllers_alive(platform: Platform) -> bool:
    return any(loop["alive"] for loop in health(platform)["loops"])


def pair(
    tmp_path: Path, database_url: str, platforms: list[Platform], lease: dict[str, str]
) -> tuple[Platform, Platform]:
    """Two `modelyard up` on one database and one blob folder, each with its own home and ports;
    the first is started first (it migrates), the second gets the admin key the first wrote."""
    shared = tmp_path / "shared"
    made = []
    for name in ("a", "b"):
        platform = Platform(tmp_path / name, database_url)
        platform.env.update(lease, MODELYARD_BLOB_URL=(shared / "blobs").as_uri())
        platforms.append(platform)
        made.append(platform)
    return made[0], made[1]


def start_second(first: Platform, second: Platform) -> None:
    second.home.mkdir(parents=True, exist_ok=True)
    shutil.copy(first.home / "admin.key", second.home / "admin.key")
    second.start().close()


@pytest.mark.slow
def test_a_standby_waits_then_takes_over_a_killed_leader_and_resumes_its_run_once(
    database_url: str, tmp_path: Path, platforms: list[Platform]
) -> None:
    a, b = pair(tmp_path, database_url, platforms, LEASE)
    client = a.start()
    start_second(a, b)

    assert health(a)["role"] == "leader"
    standby = health(b)
    assert standby["role"] == "standby"
    assert standby["lease"]["holder_url"] == a.url
    assert not controllers_alive(b)
    assert controllers_alive(a)
    assert httpx.get(f"{a.url}/api/v1/health/leader").status_code == 200

    # The standby serves reads and refuses writes, naming the leader.
    token = (a.home / "admin.key").read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    refused = httpx.post(f"{b.url}/api/v1/namespaces", json={"name": "other"}, headers=auth)
    assert refused.status_code == 503
    assert 1 <= int(refused.headers["Retry-After"]) <= 6
    assert a.url in refused.json()["error"]["message"]
    assert refused.json()["error"]["leader_url"] == a.url
    assert httpx.get(f"{b.url}/api/v1/namespaces", headers=auth).status_code == 200
    assert httpx.get(f"{b.url}/api/v1/health/leader").status_code == 503

    client.create_namespace("team")
    client.register_pipeline("team", flows.gated)
    ledger, release = tmp_path / "ledger", tmp_path / "release"
    run = client.run_pipeline("team", "gated", {"ledger": str(ledger), "release": str(release)})
    wait_for(lambda: ledger.exists() and "gate" in ledger.read_text(), 60, "the gate step")
    client.close()
    a.kill()

    wait_for(lambda: health(b)["role"] == "leader", TAKEOVER, "the standby to take over")
    assert health(b)["lease"]["term"] == 2
    with httpx.Client(base_url=f"{b.url}/api/v1", headers=auth) as api:
        release.write_text("go")

        def ended() -> bool:
            state = api.get(f"/namespaces/team/runs/{run.id}").json()["state"]
            return state in ("succeeded", "failed", "cancelled")

        wait_for(ended, 60, "the run to end on the new leader")
        final = api.get(f"/namespaces/team/runs/{run.id}").json()
    assert final["state"] == "succeeded", final
    assert ledger.read_text().splitlines().count("make 3") == 1  # not re-run by the new leader
    assert ledger.read_text().splitlines().count("gate") == 2  # once per leader's attempt


@pytest.mark.slow
def test_a_graceful_stop_hands_the_lease_over_at_once(
    database_url: str, tmp_path: Path, platforms: list[Platform]
) -> None:
    long_lease = {"MODELYARD_LEASE_SECONDS": "600", "MODELYARD_LEASE_RETRY_SECONDS": "0.5"}
    a, b = pair(tmp_path, database_url, platforms, long_lease)
    a.start().close()
    start_second(a, b)
    assert health(b)["role"] == "standby"
    a.interrupt()  # Ctrl-C
    # Far sooner than the 600 s lease: the leader released it as it stopped.
    wait_for(lambda: health(b)["role"] == "leader", 30, "the standby to take the released lease")
    wait_for(lambda: controllers_alive(b), 30, "the new leader's controllers")


@pytest.mark.slow
def test_a_paused_leader_finds_its_lease_taken_and_exits_without_running_controllers(
    tmp_path: Path, platforms: list[Platform]
) -> None:
    a, b = pair(tmp_path, f"sqlite:///{tmp_path / 'shared.db'}", platforms, LEASE)
    a.start().close()
    start_second(a, b)
    assert a.process is not None
    os.kill(a.process.pid, signal.SIGSTOP)  # a partition, a stalled VM: it cannot renew
    try:
        wait_for(lambda: health(b)["role"] == "leader", TAKEOVER, "the standby to take over")
    finally:
        os.kill(a.process.pid, signal.SIGCONT)
    # On waking, its deadline has passed: it stops its controllers and exits for a fresh start.
    assert a.process.wait(60) == 75
    assert health(b)["role"] == "leader"
    assert health(b)["lease"]["term"] == 2


@pytest.mark.slow
def test_a_restart_on_the_same_home_takes_over_from_its_killed_self_at_once(
    tmp_path: Path, platforms: list[Platform]
) -> None:
    long_lease = {"MODELYARD_LEASE_SECONDS": "600", "MODELYARD_LEASE_RETRY_SECONDS": "0.5"}
    a, _ = pair(tmp_path, f"sqlite:///{tmp_path / 'shared.db'}", platforms, long_lease)
    a.start().close()
    a.kill()
    # The dead process's lock on its home is gone, and the lease names this home: no 600 s wait.
    a.start().close()
    wait_for(lambda: health(a)["role"] == "leader", 30, "the restarted control plane to lead")
    assert health(a)["lease"]["term"] == 2
