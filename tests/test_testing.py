"""The helpers the tests and the benchmarks share: a wait that names what it waited for, a free
port, closed-loop load that counts answers and failures."""

from __future__ import annotations

import contextlib
import itertools
import socket
from collections.abc import Callable, Iterator

import pytest

from modelyard.testing import ClosedLoop, WaitTimeout, free_port, wait_for


def test_a_wait_past_its_deadline_says_what_it_waited_for() -> None:
    with pytest.raises(WaitTimeout, match=r"timed out after 0\.05 s waiting for the moon"):
        wait_for(lambda: False, 0.05, "the moon")
    with pytest.raises(TimeoutError):  # scripts catch it as a timeout, pytest as an assertion
        wait_for(lambda: False, 0.01)
    ticks = itertools.count()
    wait_for(lambda: next(ticks) >= 3, 5, interval=0)


def test_a_free_port_can_be_listened_on() -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)) as server:
        assert server.getsockname()[1] == port


def test_closed_loop_load_counts_answers_failures_and_latencies() -> None:
    counter = itertools.count()
    opened: list[str] = []

    @contextlib.contextmanager
    def connect() -> Iterator[Callable[[], str | None]]:
        opened.append("open")

        def call() -> str | None:
            n = next(counter)
            if n % 10 == 9:
                raise ConnectionResetError("reset")
            return "500 oops" if n % 10 == 4 else None

        yield call
        opened.append("closed")

    with ClosedLoop(connect, clients=3) as load:
        wait_for(lambda: load.snapshot()[0] >= 100, 10, "100 answers")
    result = load.result()
    assert opened.count("open") == opened.count("closed") == 3
    assert result.answered == load.answered >= 100
    assert len(result.latencies) + len(result.errors) == result.answered
    assert set(result.errors) <= {"500 oops", "ConnectionResetError: reset"}
    assert len(result.errors) >= 10 and result.seconds > 0 and result.rate > 0
