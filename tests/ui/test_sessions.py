"""Sessions expire when idle or old, with an injected clock."""

from __future__ import annotations

from modelyard.ui.sessions import Sessions


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_are_random_and_expire_when_idle_or_old() -> None:
    clock = Monotonic()
    sessions = Sessions(idle_seconds=60, max_seconds=300, monotonic=clock)
    one, two = sessions.open("my_a_b", "a"), sessions.open("my_a_b", "a")
    assert one.id != two.id and one.csrf != two.csrf and len(one.id) >= 40
    assert sessions.get(one.id) is one
    assert sessions.get("guessed") is None and sessions.get(None) is None

    for _ in range(5):  # used every 59 s: alive until the absolute limit
        clock.now += 59
        assert sessions.get(one.id) is one
    clock.now += 59
    assert sessions.get(one.id) is None  # 354 s after sign-in
    assert sessions.get(two.id) is None  # idle for 354 s
    assert len(sessions) == 0

    three = sessions.open("my_c_d", "c")
    sessions.close(three.id)
    assert sessions.get(three.id) is None
