"""The one loop base: interval, deadline and woken loops, stop deadlines, errors in health."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from modelyard.loops import FOREVER, Loop
from modelyard.testing import wait_for


class Counting(Loop):
    """A real small loop: counts its rounds; ``fail`` rounds raise, ``wait`` is what it returns."""

    def __init__(self, *, interval: float | None = None, wait: float | None = None) -> None:
        super().__init__("counting", interval=interval, error_wait=0.01, join_timeout=5.0)
        self.rounds = 0
        self.fail = 0
        self.wait = wait
        self.gate = threading.Event()
        self.gate.set()

    def tick(self) -> float | None:
        self.gate.wait(10)
        self.rounds += 1
        if self.fail:
            self.fail -= 1
            raise RuntimeError(f"round {self.rounds} broke")
        return self.wait


@pytest.fixture
def loops() -> Iterator[list[Loop]]:
    made: list[Loop] = []
    yield made
    for loop in made:
        if isinstance(loop, Counting):
            loop.gate.set()
        loop.stop()


def test_an_interval_loop_ticks_again_and_again(loops: list[Loop]) -> None:
    loop = Counting(interval=0.01)
    loops.append(loop)
    loop.start()
    wait_for(lambda: loop.rounds >= 3, what="three rounds")
    assert loop.health().alive
    assert loop.health().last_tick is not None


def test_a_woken_loop_sleeps_until_woken(loops: list[Loop]) -> None:
    loop = Counting(interval=None)
    loops.append(loop)
    loop.start()
    wait_for(lambda: loop.rounds == 1, what="the first round")
    assert not loop.join(0.05)  # still asleep: no interval, nobody woke it
    assert loop.rounds == 1
    loop.wake()
    wait_for(lambda: loop.rounds == 2, what="the woken round")


def test_a_wake_during_a_round_is_not_lost(loops: list[Loop]) -> None:
    loop = Counting(interval=60.0)
    loops.append(loop)
    loop.gate.clear()
    loop.start()
    loop.wake()  # the first round is blocked on the gate: this wake comes during it
    loop.gate.set()
    wait_for(lambda: loop.rounds >= 2, what="a round right after the woken one")


def test_a_deadline_loop_sleeps_as_long_as_its_tick_says(loops: list[Loop]) -> None:
    loop = Counting(interval=0.001, wait=FOREVER)
    loops.append(loop)
    loop.start()
    wait_for(lambda: loop.rounds == 1, what="the first round")
    assert not loop.join(0.05)
    assert loop.rounds == 1  # FOREVER overrode the short interval
    loop.wait = 0.001
    loop.wake()
    wait_for(lambda: loop.rounds >= 3, what="rounds at the short deadline")


def test_wait_first_waits_one_interval_before_the_first_round(loops: list[Loop]) -> None:
    ticked = threading.Event()
    loop = Loop("later", lambda: ticked.set(), interval=60.0, wait_first=True)
    loops.append(loop)
    loop.start()
    assert not ticked.wait(0.05)
    loop.wake()
    assert ticked.wait(5)


def test_stop_joins_with_a_deadline(loops: list[Loop]) -> None:
    loop = Counting(interval=0.01)
    loops.append(loop)
    loop.gate.clear()
    loop.start()
    started = time.monotonic()
    assert not loop.stop(timeout=0.1)  # the round hangs: stop gives up at its deadline
    assert time.monotonic() - started < 2
    assert not loop.health().alive  # asked to stop: no longer counted as running
    loop.gate.set()
    assert loop.join(5)
    assert loop.rounds == 1  # it ended after the round it was in


def test_stop_ends_a_sleeping_loop_at_once(loops: list[Loop]) -> None:
    loop = Counting(interval=600.0)
    loops.append(loop)
    loop.start()
    wait_for(lambda: loop.rounds == 1, what="the first round")
    started = time.monotonic()
    assert loop.stop()
    assert time.monotonic() - started < 2
    assert not loop.health().alive


def test_a_round_that_raises_is_reported_and_the_loop_goes_on(loops: list[Loop]) -> None:
    loop = Counting(interval=0.01)
    loops.append(loop)
    loop.fail = 2
    loop.start()
    wait_for(lambda: loop.rounds >= 4, what="rounds after the failures")
    health = loop.health()
    assert health.alive
    assert health.errors == 2
    assert health.last_error == "RuntimeError: round 2 broke"
    assert health.last_error_at is not None
    assert health.to_dict()["name"] == "counting"


def test_a_shared_condition_wakes_the_loop_and_ready_skips_the_wait(loops: list[Loop]) -> None:
    condition = threading.Condition()
    pending: list[str] = []

    class Draining(Loop):
        def tick(self) -> float | None:
            with condition:
                if pending:
                    pending.pop()
            return FOREVER

        def ready(self) -> bool:
            return bool(pending)

    loop = Draining("draining", condition=condition)
    loops.append(loop)
    loop.start()
    wait_for(lambda: loop.health().last_tick is not None, what="the first round")
    with condition:
        pending.extend(["a", "b", "c"])
        condition.notify_all()
    wait_for(lambda: not pending, what="every pending item done")


def test_a_loop_starts_again_after_stop(loops: list[Loop]) -> None:
    loop = Counting(interval=0.01)
    loops.append(loop)
    loop.start()
    wait_for(lambda: loop.rounds >= 1, what="a round")
    assert loop.stop()
    rounds = loop.rounds
    loop.start()
    wait_for(lambda: loop.rounds > rounds, what="a round after the restart")


def test_started_and_finished_run_in_the_thread_around_the_rounds(loops: list[Loop]) -> None:
    seen: list[str] = []
    loop = Loop(
        "hooks",
        lambda: seen.append(f"tick in {threading.current_thread().name}"),
        started=lambda: seen.append("started"),
        finished=lambda: seen.append("finished"),
    )
    loops.append(loop)
    loop.start()
    wait_for(lambda: len(seen) == 2, what="the first round")
    assert loop.stop()
    assert seen == ["started", "tick in hooks", "finished"]


def test_a_failing_start_hook_is_reported_and_the_rounds_still_run(loops: list[Loop]) -> None:
    def broken() -> None:
        raise OSError("no resume today")

    ticked = threading.Event()
    loop = Loop("resuming", lambda: ticked.set(), started=broken)
    loops.append(loop)
    loop.start()
    assert ticked.wait(5)
    assert loop.health().last_error == "OSError: no resume today"
