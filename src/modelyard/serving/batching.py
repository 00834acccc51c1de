"""Adaptive batching: concurrent requests share one ``predict_batch`` call.

The policy is work-conserving. Waiting to fill a batch only pays while the model is busy, because
then the requests have to wait anyway; when the model is idle, every moment spent waiting is added
latency and an idle model. So:

- While a batch is being predicted, new requests queue. The moment it returns, the queued requests
  leave together (up to ``max_batch_size`` rows), without any further wait. Under load, batches
  therefore grow by themselves to what the model can absorb.
- When the model is idle, a request does not wait ``max_wait_s``. The batcher only lets the event
  loop run while each turn of it brings more requests (a burst arriving together: many connections
  became readable at once), and stops at the first turn that brings none, at ``max_batch_size``
  rows, or ``max_wait_s`` after the first request, whichever comes first. A lone request is
  dispatched after one turn of the loop.

``predict_batch`` runs in one dedicated worker thread, one call at a time, so the event loop keeps
parsing requests while the model computes and the model never sees concurrent calls. When a
stacked call raises, each of its requests is predicted alone: only those that fail by themselves
get the error.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from modelyard.errors import InvalidInput, ModelyardError

PredictBatch = Callable[[list[dict[str, np.ndarray]]], list[dict[str, np.ndarray]]]
A = TypeVar("A")
R = TypeVar("R")


def timed(function: Callable[[A], R], argument: A) -> tuple[R, float]:
    """``function(argument)`` and the seconds it ran: run in a worker thread, the time excludes
    the wait for the thread."""
    started = time.perf_counter()
    result = function(argument)
    return result, time.perf_counter() - started


@dataclass
class _Pending:
    inputs: dict[str, np.ndarray]
    rows: int
    arrived: float
    future: asyncio.Future[dict[str, np.ndarray]] = field(repr=False)
    seconds: float = 0.0
    """How long the ``predict_batch`` call that computed it ran."""


class Batcher:
    """Queue requests, run them in batches on one worker thread, hand each caller its rows."""

    def __init__(self, predict_batch: PredictBatch, max_batch_size: int, max_wait_s: float) -> None:
        if max_batch_size < 1:
            raise InvalidInput(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise InvalidInput(f"max_wait_s must not be negative, got {max_wait_s}")
        self.predict_batch = predict_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelyard-predict")
        self._closing = False

    @property
    def queued(self) -> int:
        """Requests waiting for a batch (not counting the one being predicted): a load signal."""
        return len(self._queue)

    @property
    def closed(self) -> bool:
        """True once ``close`` was called: new requests are refused, queued ones still finish."""
        return self._closing

    async def submit(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs for these inputs, computed in a batch with whatever else is queued."""
        return (await self.submit_timed(inputs))[0]

    async def submit_timed(
        self, inputs: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], float]:
        """`submit`, and the seconds the ``predict_batch`` call that computed the outputs ran
        (the whole call: its rows were computed together; the wait in the queue is not in it)."""
        if self._closing:
            raise ModelyardError("the batcher is closed: the server is shutting down")
        loop = asyncio.get_running_loop()
        pending = _Pending(inputs, _rows(inputs), loop.time(), loop.create_future())
        self._queue.append(pending)
        self._queued_rows += pending.rows
        if self._task is None:
            self._task = loop.create_task(self._run(), name="modelyard-batcher")
        self._wakeup.set()
        outputs = await pending.future
        return outputs, pending.seconds

    async def close(self) -> None:
        """Predict everything already queued, then stop the worker thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        idle = True
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                idle = True
                continue
            if idle and not self._closing:
                await self._gather_burst(loop)
            batch = self._take()
            if not batch:
                continue
            await self._predict(loop, batch)
            # Whatever queued meanwhile waited for a busy model: it leaves at once.
            idle = False

    async def _gather_burst(self, loop: asyncio.AbstractEventLoop) -> None:
        deadline = self._queue[0].arrived + self.max_wait_s
        while self._queued_rows < self.max_batch_size and loop.time() < deadline:
            before = len(self._queue)
            await asyncio.sleep(0)
            if len(self._queue) == before:
                return

    def _take(self) -> list[_Pending]:
        """The oldest requests that fit in one batch; a request over the limit goes alone."""
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # the caller gave up (cancelled): do not compute it
                self._queue.popleft()
                self._queued_rows -= head.rows
                continue
            if batch and rows + head.rows > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued_rows -= head.rows
            batch.append(head)
            rows += head.rows
        return batch

    async def _predict(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        try:
            results, seconds = await loop.run_in_executor(
                self._executor, timed, self.predict_batch, [p.inputs for p in batch]
            )
            if len(results) != len(batch):
                raise ModelyardError(
                    f"predict_batch returned {len(results)} results for {len(batch)} requests"
                )
        except asyncio.CancelledError:
            for pending in batch:
                pending.future.cancel()
            raise
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            # One bad request must not fail the requests it happened to share a batch with: run
            # each alone, so that only the ones that fail by themselves get the error.
            for pending in batch:
                await self._predict(loop, [pending])
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.seconds = seconds
                pending.future.set_result(result)


def _rows(inputs: dict[str, np.ndarray]) -> int:
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 1
