"""Sessions live in the database (only a hash of their token), expire when idle or old, and end
with their key, with an injected clock."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from modelyard.auth.keys import Principal
from modelyard.controlplane import ControlPlane
from modelyard.store.schema import UiSessionRow
from modelyard.types import Role
from modelyard.ui.sessions import TOUCH_SECONDS, Sessions
from tests.conftest import Clock


def test_sessions_are_random_stored_hashed_and_expire_when_idle_or_old(
    plane: ControlPlane,
) -> None:
    clock = Clock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    plane.namespaces.create("default")
    key, _ = plane.keys.create("viewer", {"default": Role.VIEWER})
    sessions = Sessions(plane.db, clock, idle_seconds=200, max_seconds=600)
    (one, first), (two, second) = sessions.open(key.id), sessions.open(key.id)
    assert one != two and first.csrf != second.csrf and len(one) >= 40
    with plane.db.read() as session:
        stored = session.scalars(sa.select(UiSessionRow)).all()
    assert {r.key_id for r in stored} == {key.id}
    assert not {one, two} & {v for r in stored for v in vars(r).values() if isinstance(v, str)}

    found = sessions.get(one)
    assert found is not None
    assert found[0].id == first.id and found[1].key_id == key.id
    assert found[1].roles == {"default": Role.VIEWER}
    assert sessions.get("guessed") is None and sessions.get(None) is None

    for _ in range(5):  # used every 119 s: alive until the absolute limit
        clock.now += dt.timedelta(seconds=119)
        assert sessions.get(one) is not None
    clock.now += dt.timedelta(seconds=119)
    assert sessions.get(one) is None  # 714 s after sign-in
    assert sessions.get(two) is None  # idle for 714 s
    assert len(sessions) == 0  # both deleted when met

    three, _ = sessions.open(key.id)
    clock.now += dt.timedelta(seconds=TOUCH_SECONDS / 2)
    assert sessions.get(three) is not None
    sessions.close(sessions.get(three)[0].id)  # type: ignore[index]
    assert sessions.get(three) is None


def test_expired_sessions_are_pruned_at_sign_in_and_a_revoked_key_ends_all_of_its_own(
    plane: ControlPlane,
) -> None:
    clock = Clock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    plane.namespaces.create("default")
    alice, _ = plane.keys.create("alice", {"default": Role.VIEWER})
    bob, _ = plane.keys.create("bob", {"default": Role.VIEWER})
    sessions = Sessions(plane.db, clock, idle_seconds=200, max_seconds=600)
    sessions.open(alice.id)
    clock.now += dt.timedelta(seconds=300)
    mine, _ = sessions.open(alice.id)  # the first one, expired, is deleted now
    other, _ = sessions.open(alice.id)
    bobs, _ = sessions.open(bob.id)
    assert len(sessions) == 3

    plane.keys.revoke(alice.id, Principal("root", "root", admin=True))
    assert sessions.get(mine) is None
    assert len(sessions) == 1  # alice's other session was deleted with it
    assert sessions.get(other) is None
    assert sessions.get(bobs) is not None
