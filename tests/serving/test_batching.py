"""The batcher, driven by a real ``predict_batch`` that records every call it gets."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from modelyard.errors import InvalidInput, ModelyardError
from modelyard.serving.batching import Batcher

DEADLINE_S = 10.0


class Model:
    """Doubles its input row by row; can be held at a gate so requests queue behind a busy call."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []  # rows of each request, per call
        self.threads: set[int] = set()
        self.started = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self._active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def predict_batch(self, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        with self._lock:
            self._active += 1
            self.max_active = max(self.max_active, self._active)
        try:
            self.threads.add(threading.get_ident())
            self.calls.append([len(inputs["x"]) for inputs in batch])
            self.started.set()
            if not self.gate.wait(DEADLINE_S):
                raise TimeoutError("the test never opened the gate")
            if any((inputs["x"] < 0).any() for inputs in batch):
                raise ValueError("negative input")
            return [{"y": inputs["x"] * 2} for inputs in batch]
        finally:
            with self._lock:
                self._active -= 1


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def hold_the_model(model: Model, batcher: Batcher) -> asyncio.Task[dict[str, np.ndarray]]:
    """Start one request and keep the model busy with it until ``model.gate`` is set."""
    model.gate.clear()
    model.started.clear()
    first = asyncio.create_task(batcher.submit({"x": np.array([[100.0]])}))
    assert await asyncio.to_thread(model.started.wait, DEADLINE_S)
    return first


def request(i: int, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.arange(rows * 2, dtype=np.float64).reshape(rows, 2) + 10 * i}


def test_concurrent_submits_match_one_by_one_and_respect_the_size() -> None:
    model = Model()

    async def main() -> None:
        batcher = Batcher(model.predict_batch, max_batch_size=8, max_wait_s=0.05)
        first = await hold_the_model(model, batcher)
        tasks = [asyncio.create_task(batcher.submit(request(i, rows=1 + i % 3))) for i in range(30)]
        await wait_until(lambda: batcher.queued == 30, "30 queued requests")
        model.gate.set()
        results = await asyncio.gather(first, *tasks)
        await batcher.close()
        for i, result in enumerate(results[1:]):
            np.testing.assert_array_equal(result["y"], request(i, rows=1 + i % 3)["x"] * 2)

    asyncio.run(main())
    assert model.calls[0] == [1]
    assert all(sum(call) <= 8 for call in model.calls)
    assert sum(len(call) for call in model.calls) == 31
    # Everything queued behind the busy model left in full batches, in arrival order.
    assert [rows for call in model.calls[1:] for rows in call] == [1 + i % 3 for i in range(30)]
    assert len(model.calls) < 31
    assert model.max_active == 1
    assert len(model.threads) == 1


def test_burst_on_an_idle_model_shares_batches() -> None:
    model = Model()

    async def main() -> list[dict[str, np.ndarray]]:
        batcher = Batcher(model.predict_batch, max_batch_size=64, max_wait_s=1.0)
        results = await asyncio.gather(*(batcher.submit(request(i)) for i in range(40)))
        await batcher.close()
        return results

    results = asyncio.run(main())
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], request(i)["x"] * 2)
    assert sum(len(call) for call in model.calls) == 40
    assert len(model.calls) < 40


def test_a_lone_request_on_an_idle_model_does_not_wait_max_wait() -> None:
    model = Model()

    async def main() -> float:
        batcher = Batcher(model.predict_batch, max_batch_size=32, max_wait_s=60.0)
        started = time.monotonic()
        result = await asyncio.wait_for(batcher.submit(request(1)), DEADLINE_S)
        elapsed = time.monotonic() - started
        np.testing.assert_array_equal(result["y"], request(1)["x"] * 2)
        await batcher.close()
        return elapsed

    assert asyncio.run(main()) < DEADLINE_S
    assert model.calls == [[1]]


def test_a_request_larger_than_the_limit_goes_alone() -> None:
    model = Model()

    async def main() -> None:
        batcher = Batcher(model.predict_batch, max_batch_size=4, max_wait_s=0.01)
        first = await hold_the_model(model, batcher)
        small = asyncio.create_task(batcher.submit(request(1, rows=1)))
        big = asyncio.create_task(batcher.submit(request(2, rows=10)))
        after = asyncio.create_task(batcher.submit(request(3, rows=2)))
        await wait_until(lambda: batcher.queued == 3, "3 queued requests")
        model.gate.set()
        await asyncio.gather(first, small, big, after)
        assert big.result()["y"].shape == (10, 2)
        await batcher.close()

    asyncio.run(main())
    assert model.calls == [[1], [1], [10], [2]]


def test_an_exception_fails_only_the_request_that_causes_it() -> None:
    model = Model()

    async def main() -> None:
        batcher = Batcher(model.predict_batch, max_batch_size=8, max_wait_s=0.01)
        first = await hold_the_model(model, batcher)
        doomed = [asyncio.create_task(batcher.submit(request(i))) for i in range(3)]
        doomed.append(asyncio.create_task(batcher.submit({"x": -np.ones((1, 2))})))
        await wait_until(lambda: batcher.queued == 4, "4 queued requests")
        model.gate.set()
        await first
        outcomes = await asyncio.gather(*doomed, return_exceptions=True)
        for i, outcome in enumerate(outcomes[:3]):
            assert isinstance(outcome, dict)
            np.testing.assert_array_equal(outcome["y"], request(i)["x"] * 2)
        assert isinstance(outcomes[3], ValueError) and str(outcomes[3]) == "negative input"
        result = await batcher.submit(request(7))
        np.testing.assert_array_equal(result["y"], request(7)["x"] * 2)
        await batcher.close()

    asyncio.run(main())
    # the stacked call failed, so each of its requests ran alone
    assert model.calls == [[1], [1, 1, 1, 1], [1], [1], [1], [1], [1]]


def test_a_wrong_number_of_results_fails_the_batch() -> None:
    async def main() -> None:
        batcher = Batcher(lambda batch: [], max_batch_size=4, max_wait_s=0.0)
        with pytest.raises(ModelyardError, match="returned 0 results for 1 requests"):
            await batcher.submit(request(1))
        await batcher.close()

    asyncio.run(main())


def test_a_cancelled_request_is_not_predicted() -> None:
    model = Model()

    async def main() -> None:
        batcher = Batcher(model.predict_batch, max_batch_size=8, max_wait_s=0.01)
        first = await hold_the_model(model, batcher)
        gone = asyncio.create_task(batcher.submit(request(1, rows=3)))
        kept = asyncio.create_task(batcher.submit(request(2, rows=2)))
        await wait_until(lambda: batcher.queued == 2, "2 queued requests")
        gone.cancel()
        model.gate.set()
        await asyncio.gather(first, kept)
        assert gone.cancelled()
        await batcher.close()

    asyncio.run(main())
    assert model.calls == [[1], [2]]


def test_close_flushes_the_queue_then_refuses() -> None:
    model = Model()

    async def main() -> None:
        batcher = Batcher(model.predict_batch, max_batch_size=2, max_wait_s=0.01)
        first = await hold_the_model(model, batcher)
        queued = [asyncio.create_task(batcher.submit(request(i))) for i in range(5)]
        await wait_until(lambda: batcher.queued == 5, "5 queued requests")
        closing = asyncio.create_task(batcher.close())
        await wait_until(lambda: batcher.closed, "close to start")
        model.gate.set()
        await closing
        assert all(task.done() and not task.exception() for task in [first, *queued])
        with pytest.raises(ModelyardError, match="closed"):
            await batcher.submit(request(9))

    asyncio.run(main())
    assert model.calls == [[1], [1, 1], [1, 1], [1]]


def test_closing_an_unused_batcher() -> None:
    async def main() -> None:
        await Batcher(Model().predict_batch, max_batch_size=1, max_wait_s=0).close()

    asyncio.run(main())


@pytest.mark.parametrize(("size", "wait"), [(0, 0.01), (4, -1.0)])
def test_bad_settings(size: int, wait: float) -> None:
    with pytest.raises(InvalidInput):
        Batcher(Model().predict_batch, max_batch_size=size, max_wait_s=wait)


def test_the_time_reported_is_the_call_that_computed_a_request_not_its_wait() -> None:
    model = Model()

    async def main() -> tuple[float, float, float]:
        batcher = Batcher(model.predict_batch, max_batch_size=8, max_wait_s=0.05)
        model.gate.clear()
        model.started.clear()
        held = asyncio.create_task(batcher.submit_timed(request(0)))
        assert await asyncio.to_thread(model.started.wait, DEADLINE_S)
        began = time.perf_counter()
        queued = asyncio.create_task(batcher.submit_timed(request(1)))
        await wait_until(lambda: batcher.queued == 1, "a queued request")
        await asyncio.sleep(0.2)  # the model is busy: the second request waits this long
        model.gate.set()
        (_, first), (result, second) = await asyncio.gather(held, queued)
        waited = time.perf_counter() - began
        np.testing.assert_array_equal(result["y"], request(1)["x"] * 2)
        await batcher.close()
        return first, second, waited

    first, second, waited = asyncio.run(main())
    assert first >= 0.2  # held at the gate inside the call
    assert waited >= 0.2 and second < 0.1  # its own call was quick, whatever it waited for
