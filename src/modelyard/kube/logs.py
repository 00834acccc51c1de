"""A revision's replica logs from its pods: `Orchestrator.logs` on Kubernetes.

Each pod's ``server`` container log is read with ``timestamps=true`` (the kubelet stamps every
line), ``sinceTime`` and ``tailLines``, and the pods' lines are merged in time order. Following
opens one ``follow=true`` stream per pod, each read by a thread of its own into one queue, from
the time of the last line already sent (lines up to it are dropped, as ``sinceTime`` is
inclusive); pods that appear meanwhile (a scale-up) join, and a stream that ends while its pod
still exists (a restarted container) is opened again on the next round. Closing the iterator
closes every stream. `LogCopy` follows one pod's container into a file (a pipeline step's log,
as it runs).
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path

from modelyard.kube.api import KubeApi, KubeApiError, LogFollow
from modelyard.serving.logs import (
    FOLLOW_SECONDS,
    LogLine,
    by_time,
    keep_tail,
    split_stamp,
    stamp,
)

log = logging.getLogger(__name__)
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
    container: str = CONTAINER,
) -> Generator[list[LogLine], None, None]:
    """The pods' ``container`` lines merged in time order, then (``follow``) the new ones, in
    batches."""
    last: dict[str, dt.datetime] = {}
    per_pod = []
    for namespace, name in pods():
        try:
            # one line at least: a follower starts after the newest line there is
            text = api.read_log(
                namespace,
                name,
                container,
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
        yield from _follow(api, pods, last, since, container)


def _follow(
    api: KubeApi,
    pods: PodNames,
    last: dict[str, dt.datetime],
    since: dt.datetime | None,
    container: str,
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
                namespace, name, container, since=stamp(after) if after else None
            )
        except KubeApiError:
            stream = None
        if stream is not None:
            with lock:
                open_streams[name] = stream
            if closed.is_set():
                stream.close()
            # Lines up to `after` were sent already; once past them, a line stamped as the one
            # before it (the stamps are cut to microseconds) is a line of its own.
            skip = after
            for raw in stream.lines():
                for line in _lines(name, raw, skip):
                    skip = None
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


class LogCopy:
    """One pod container's log copied into a file as the container writes it (a thread follows
    it with `read`), so that whoever reads the file sees the lines while the pod runs; `finish`
    adds the lines the stream has not brought yet, each line once and in order, and stops.

    Lines are told apart by their kubelet stamps: a line stamped as the last one copied is
    skipped as often as lines of that stamp were copied already."""

    def __init__(self, api: KubeApi, namespace: str, pod: str, container: str, path: Path) -> None:
        self.api, self.namespace, self.pod, self.container = api, namespace, pod, container
        self.path = path
        self._lock = threading.Lock()
        self._last: dt.datetime | None = None
        self._at_last = 0
        """How many lines stamped ``_last`` were copied."""
        self._finished = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._copy, name=f"log-{pod}", daemon=True)

    def start(self) -> LogCopy:
        self._thread.start()
        return self

    def running(self) -> bool:
        return self._thread.is_alive()

    def finish(self, note: str | None = None) -> None:
        """Copy what the pod printed and was not copied yet, then ``note`` (why it could not
        run, say); nothing is copied after. A pod that never started or is gone adds nothing."""
        self._stop.set()
        try:
            text = self.api.read_log(
                self.namespace,
                self.pod,
                self.container,
                since=stamp(self._last) if self._last else None,
            )
        except KubeApiError:
            text = ""
        with self._lock:
            if self._finished:
                return
            self._write(_lines(self.pod, text), again=True)
            self._finished = True
            if note:
                with open(self.path, "a") as out:
                    out.write(f"{note}\n")

    def stop(self, wait: float = 0.0) -> None:
        """Copy no more (the lines not copied yet are lost); wait that long for the thread."""
        with self._lock:
            self._finished = True
        self._stop.set()
        if wait and self._thread.is_alive():
            self._thread.join(wait)

    def _copy(self) -> None:
        def pods() -> list[tuple[str, str]]:
            return [] if self._stop.is_set() else [(self.namespace, self.pod)]

        while not self._stop.is_set():
            with self._lock:
                since = self._last
            batches = read(self.api, pods, since=since, follow=True, container=self.container)
            try:
                for number, batch in enumerate(batches):
                    with self._lock:
                        if self._finished:
                            return
                        # the first batch is the log since the last line copied, that line too
                        self._write(batch, again=number == 0)
                    if self._stop.is_set():
                        return
            except KubeApiError as exc:  # a dropped connection, an overloaded API server
                log.info("following the log of pod %s again (%s)", self.pod, exc)
            finally:
                batches.close()
            self._stop.wait(FOLLOW_SECONDS)

    def _write(self, lines: list[LogLine], *, again: bool) -> None:
        """Append ``lines`` (call with the lock held); ``again``: they are the log read again
        since the last line copied, of which only the lines not copied yet are appended."""
        new: list[str] = []
        seen_at_last = 0
        for line in lines:
            if again and self._last is not None and line.time <= self._last:
                if line.time < self._last:
                    continue
                seen_at_last += 1
                if seen_at_last <= self._at_last:
                    continue
            if line.time == self._last:
                self._at_last += 1
            else:
                self._last, self._at_last = line.time, 1
            new.append(line.text + "\n")
        if new:
            with open(self.path, "a") as out:
                out.writelines(new)
