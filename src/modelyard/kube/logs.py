"""A revision's replica logs from its pods: `Orchestrator.logs` on Kubernetes.

Each pod's ``server`` container log is read with ``timestamps=true`` (the kubelet stamps every
line), ``sinceTime`` and ``tailLines``, and the pods' lines are merged in time order. Following
opens one ``follow=true`` stream per pod, each read by a thread of its own into one queue, from
the time of the last line already sent (lines up to it are dropped, as ``sinceTime`` is
inclusive); pods that appear meanwhile (a scale-up) join, and a stream that ends while its pod
still exists (a restarted container) is opened again on the next round. Closing the iterator
closes every stream.
"""

from __future__ import annotations

import datetime as dt
import heapq
import queue
import threading
import time
from collections.abc import Callable, Generator

from modelyard.kube.api import KubeApi, KubeApiError, LogFollow
from modelyard.serving.logs import (
    FOLLOW_SECONDS,
    LogLine,
    by_time,
    keep_tail,
    split_stamp,
    stamp,
)

CONTAINER = "server"
GONE = frozenset({400, 404})
"""A container that has not started (400) or a pod that is gone (404): no log, not an error."""

PodNames = Callable[[], list[tuple[str, str]]]
"""The (Kubernetes namespace, pod name) of the pods whose logs are read, now."""


def _lines(pod: str, text: str, after: dt.datetime | None = None) -> list[LogLine]:
    found: list[LogLine] = []
    last = after
    for raw in text.splitlines():
        when, line = split_stamp(raw.encode())
        if when is None:
            when = last  # a continuation: the time of the line before
        elif after is not None and when <= after:
            continue
        if when is None:
            continue
        last = when
        found.append(LogLine(when, pod, line))
    return found


def read(
    api: KubeApi,
    pods: PodNames,
    *,
    since: dt.datetime | None = None,
    tail: int | None = None,
    follow: bool = False,
) -> Generator[list[LogLine], None, None]:
    """The pods' lines merged in time order, then (``follow``) the new ones, in batches."""
    last: dict[str, dt.datetime] = {}
    per_pod = []
    for namespace, name in pods():
        try:
            # one line at least: a follower starts after the newest line there is
            text = api.read_log(
                namespace,
                name,
                CONTAINER,
                since=stamp(since) if since else None,
                tail=None if tail is None else max(tail, 1),
            )
        except KubeApiError as exc:
            if exc.status in GONE:
                continue
            raise
        lines = _lines(name, text)
        if lines:
            last[name] = lines[-1].time
        per_pod.append(keep_tail(lines, tail))
    first = list(heapq.merge(*per_pod, key=by_time))
    yield keep_tail(first, tail)
    if follow:
        yield from _follow(api, pods, last, since)


def _follow(
    api: KubeApi, pods: PodNames, last: dict[str, dt.datetime], since: dt.datetime | None
) -> Generator[list[LogLine], None, None]:
    lines: queue.Queue[LogLine | None] = queue.Queue()
    lock = threading.Lock()
    open_streams: dict[str, LogFollow | None] = {}  # None: opening
    ended: dict[str, float] = {}  # when a pod's stream ended: opened again a round later
    closed = threading.Event()

    def pump(namespace: str, name: str) -> None:
        with lock:
            after = last.get(name, since)
        try:
            stream = api.follow_log(
                namespace, name, CONTAINER, since=stamp(after) if after else None
            )
        except KubeApiError:
            stream = None
        if stream is not None:
            with lock:
                open_streams[name] = stream
            if closed.is_set():
                stream.close()
            previous = after
            for raw in stream.lines():
                for line in _lines(name, raw, previous):
                    previous = line.time
                    with lock:
                        last[name] = line.time
                    lines.put(line)
        with lock:
            open_streams.pop(name, None)
            ended[name] = time.monotonic()
        lines.put(None)  # a stream ended: the next round looks at the pods again

    try:
        while True:
            now, found = time.monotonic(), pods()
            with lock:
                start = [
                    (ns, n)
                    for ns, n in found
                    if n not in open_streams
                    and now - ended.get(n, -FOLLOW_SECONDS) >= FOLLOW_SECONDS
                ]
                for _, name in start:
                    open_streams[name] = None
            for namespace, name in start:
                threading.Thread(
                    target=pump, args=(namespace, name), name=f"log-{name}", daemon=True
                ).start()
            batch: list[LogLine] = []
            try:
                item = lines.get(timeout=FOLLOW_SECONDS)
                while True:
                    if item is not None:
                        batch.append(item)
                    item = lines.get_nowait()
            except queue.Empty:
                pass
            yield sorted(batch, key=by_time)
    finally:
        closed.set()
        with lock:
            streams = [s for s in open_streams.values() if s is not None]
        for stream in streams:
            stream.close()
