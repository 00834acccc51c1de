"""A deployment's logs for the edges that show them (the API, the dashboard): which revisions,
since when, and following an orchestrator's log iterator from async code.

`Orchestrator.logs` is a blocking iterator of batches; `batches` runs each step in a worker
thread of a pool of its own (``FOLLOWERS`` threads: followers, which mostly wait, never take the
threads the API's other routes run in), notices that its client left on an empty batch (a
follower's iterator yields one at least every second), and closes the iterator at the end, which
releases what following holds (files, streams).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator

from anyio import CapacityLimiter, to_thread

from modelyard.errors import NotFound
from modelyard.serving.deployments import Deployments
from modelyard.serving.logs import LogLine, parse_since
from modelyard.serving.orchestrator import Orchestrator

FOLLOWERS = 200
REFRESH_SECONDS = 1.0
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def _pool() -> CapacityLimiter:
    """The followers' threads of the running event loop."""
    loop = asyncio.get_running_loop()
    found = _pools.get(loop)
    if found is None:
        found = _pools[loop] = CapacityLimiter(FOLLOWERS)
    return found


def open_logs(
    deployments: Deployments,
    orchestrator: Orchestrator,
    namespace: str,
    name: str,
    *,
    revision: int | None = None,
    replica: str | None = None,
    since: str | None = None,
    tail: int | None = None,
    follow: bool = False,
) -> tuple[list[LogLine], Iterator[list[LogLine]]]:
    """The first batch of lines and the iterator of the next ones, for the deployment's
    revisions (its revision ``revision`` only); `NotFound` for a deployment, revision or replica
    that does not exist, `BadRequest` for a ``since`` that is no time. Blocks: call it in a
    worker thread from async code."""
    after = parse_since(since) if since else None
    info = deployments.get(namespace, name)
    revisions = [r for r in info.revisions if revision in (None, r.number)]
    if revision is not None and not revisions:
        numbers = ", ".join(str(r.number) for r in info.revisions) or "none"
        raise NotFound(
            f"deployment {namespace}/{name} has no revision {revision} (revisions: {numbers})"
        )
    ids: Collection[str] = [r.id for r in revisions]
    if follow and revision is None:
        ids = _Revisions(deployments, namespace, name, set(ids))
    lines = orchestrator.logs(ids, replica=replica, since=after, tail=tail, follow=follow)
    return next(lines, []), lines


class _Revisions(Collection[str]):
    """The ids of a deployment's revisions, the new ones too (a follower of the deployment
    follows its next revision): looked up again, at most every ``REFRESH_SECONDS``, when asked
    about an id it does not know."""

    def __init__(self, deployments: Deployments, namespace: str, name: str, ids: set[str]):
        self._deployments, self._namespace, self._name = deployments, namespace, name
        self._ids, self._checked = ids, time.monotonic()

    def __contains__(self, item: object) -> bool:
        if item in self._ids:
            return True
        if time.monotonic() - self._checked >= REFRESH_SECONDS:
            self._checked = time.monotonic()
            try:
                info = self._deployments.get(self._namespace, self._name)
            except NotFound:  # deleted meanwhile: its logs are still there
                return False
            self._ids = {r.id for r in info.revisions}
        return item in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(set(self._ids))

    def __len__(self) -> int:
        return len(self._ids)


async def batches(
    first: list[LogLine], lines: Iterator[list[LogLine]], gone: Callable[[], Awaitable[bool]]
) -> AsyncIterator[list[LogLine]]:
    """``first``, then the iterator's batches (empty ones too), until it ends or ``gone()``
    says the client left (asked on every empty batch); the iterator is closed at the end."""
    try:
        yield first
        while True:
            batch = await to_thread.run_sync(next, lines, None, limiter=_pool())
            if batch is None or (not batch and await gone()):
                return
            yield batch
    finally:
        # No thread runs it now (a cancelled wait for a worker thread waits for the thread).
        close = getattr(lines, "close", None)
        if close is not None:
            await to_thread.run_sync(close)
