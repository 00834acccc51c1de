"""The logs of local replicas: one stamped file per replica (``<folder>/<replica-id>.log``), read,
merged across replicas in time order, and followed.

Which replicas a revision had is written to ``<folder>/logs.jsonl`` (one line per replica, when it
is launched): log files outlive their replicas, so that a crashed replica's last words and a
stopped one's requests can still be read, and the index survives a restarted control plane.
Following polls the files every ``POLL_SECONDS`` from where the last read stopped (a line is read
once it is complete), and finds the replicas launched meanwhile in the index.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import os
import time
from collections.abc import Collection, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from modelyard.errors import NotFound
from modelyard.serving.logs import FOLLOW_SECONDS, LogLine, by_time, keep_tail, split_stamp

POLL_SECONDS = 0.2
INDEX = "logs.jsonl"
BLOCK = 65536


@dataclass
class _File:
    replica: str
    path: Path
    offset: int = 0
    last: dt.datetime | None = None
    """The time of the last stamped line read: the time of unstamped lines that follow it."""

    def read(self, since: dt.datetime | None, tail: int | None) -> list[LogLine]:
        """The complete lines from ``offset`` (the last ``tail`` of them when given), moving on."""
        try:
            with open(self.path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                start = (
                    self.offset
                    if tail is None
                    else max(self.offset, _tail_start(handle, size, tail))
                )
                handle.seek(start)
                data = handle.read(size - start)
                mtime = os.fstat(handle.fileno()).st_mtime
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset = start + end
        lines: list[LogLine] = []
        pending: list[str] = []  # unstamped lines before the first stamped one of this read
        for raw in data[:end].split(b"\n")[:-1]:
            when, text = split_stamp(raw.rstrip(b"\r"))
            if when is None and self.last is None:
                pending.append(text)
                continue
            if when is not None:
                self.last = when
                if pending:
                    lines.extend(LogLine(when, self.replica, p) for p in pending)
                    pending = []
            assert self.last is not None
            lines.append(LogLine(self.last, self.replica, text))
        if pending:  # no stamp at all: the file's last change is the best guess
            self.last = dt.datetime.fromtimestamp(mtime, dt.UTC)
            lines.extend(LogLine(self.last, self.replica, p) for p in pending)
        if since is not None:
            lines = [line for line in lines if line.time >= since]
        return keep_tail(lines, tail)


def _tail_start(handle: BinaryIO, size: int, lines: int) -> int:
    """The offset of the ``lines``-th complete line from the end (0 if the file has fewer)."""
    if lines <= 0:
        return size
    position, newlines, data = size, 0, b""
    while position > 0:
        position = max(0, position - BLOCK)
        handle.seek(position)
        data = handle.read(min(BLOCK, size - position)) + data
        # the last line counts when complete; one newline more marks where the lines start
        newlines = data.count(b"\n")
        if newlines > lines:
            break
    if newlines <= lines:
        return 0
    cut = len(data)
    for _ in range(lines + 1):
        cut = data.rfind(b"\n", 0, cut)
    # From the stamped line an unstamped one belongs to (a traceback's), so it gets its time;
    # the lines before the tail that this adds are dropped after parsing.
    while cut > 0 and split_stamp(data[cut + 1 : data.find(b"\n", cut + 1)])[0] is None:
        cut = data.rfind(b"\n", 0, cut)
    return position + cut + 1


class LogFiles:
    """The replica log files under ``folder`` and the index of whose revision each is."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, replica_id: str) -> Path:
        return self.folder / f"{replica_id}.log"

    def register(self, replica_id: str, revision_id: str) -> None:
        """Note that ``replica_id`` runs ``revision_id`` (before it writes its first line)."""
        record = json.dumps({"replica": replica_id, "revision": revision_id}) + "\n"
        # one write with O_APPEND: whole lines even with a reader at the same time
        fd = os.open(self.folder / INDEX, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, record.encode())
        finally:
            os.close(fd)

    def index(self, offset: int = 0) -> tuple[list[tuple[str, str]], int]:
        """The (replica, revision) records of the index after ``offset``, in launch order, and
        the offset to read on from."""
        try:
            with open(self.folder / INDEX, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1
        found = []
        for raw in data[:end].splitlines():
            try:
                record = json.loads(raw)
                found.append((str(record["replica"]), str(record["revision"])))
            except (ValueError, KeyError):
                continue
        return found, offset + end

    def read(
        self,
        revision_ids: Collection[str],
        *,
        replica: str | None = None,
        since: dt.datetime | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> Generator[list[LogLine], None, None]:
        """`modelyard.serving.orchestrator.Orchestrator.logs` for local replicas."""
        others, index_offset = self.index()
        known = [r for r, revision in others if revision in revision_ids]
        if replica is not None and replica not in known:
            raise NotFound(f"no replica {replica!r} in the revision's logs")
        files = {r: _File(r, self.path(r)) for r in known if replica in (None, r)}
        # Asked again each round: ``revision_ids`` may grow (a deployment's next revision).
        others = [(r, revision) for r, revision in others if r not in files]
        first = list(heapq.merge(*(f.read(since, tail) for f in files.values()), key=by_time))
        yield keep_tail(first, tail)
        last_batch = time.monotonic()
        while follow:
            time.sleep(POLL_SECONDS)
            if replica is None:
                more, index_offset = self.index(index_offset)
                others += more
                for new in [r for r, revision in others if revision in revision_ids]:
                    files.setdefault(new, _File(new, self.path(new)))
                others = [(r, revision) for r, revision in others if r not in files]
            batch = sorted(
                (line for f in files.values() for line in f.read(since, None)), key=by_time
            )
            if batch or time.monotonic() - last_batch >= FOLLOW_SECONDS:
                last_batch = time.monotonic()
                yield batch
