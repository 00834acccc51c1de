"""History helpers: log order, windows on the trigger's clock, counts."""

from __future__ import annotations

from modelyard.realtime.history import History
from modelyard.realtime.streams import RawEvent


def ev(seq: int, type: str, time: float) -> RawEvent:
    return RawEvent(seq, f"e{seq}", "u", type, time, time, {})


def test_helpers() -> None:
    history = History(
        [ev(1, "view", 0), ev(2, "cart", 1800), ev(3, "view", 3000), ev(4, "cart", 3600)]
    )
    assert history.now == 3600  # the trigger's time, not the wall clock
    assert history.trigger is not None and history.trigger.seq == 4
    assert [e.seq for e in history.last(2)] == [3, 4]
    assert [e.seq for e in history.within("30m")] == [2, 3, 4]
    assert history.counts() == {"view": 2, "cart": 2}
    assert history.count("view") == 2
    assert history.seconds_since("view") == 600
    assert history.seconds_since("buy") is None
    assert len(history.of_type("cart")) == 2
    assert [e.seq for e in history[1:3]] == [2, 3]
    assert History([]).last(3).trigger is None
