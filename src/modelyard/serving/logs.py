"""Replica log lines: what a line is, how it is stamped and parsed, and ``--since`` values.

Every line of a replica's log carries the time it was written, in the form the Kubernetes API
answers with ``timestamps=true``: an RFC 3339 UTC time, one space, the text
(``2026-12-06T14:25:25.123456Z INFO model predicting 3 rows``). Kubernetes stamps pod logs
itself; a local replica stamps its own, as it writes them (`StampedWriter` replaces its
``sys.stdout`` and ``sys.stderr``), so that nothing is lost when it dies. What bypasses Python's
streams (a C library's output, a fault handler's dump) has no stamp: such a line takes the time of
the line before it, as a traceback's lines belong to the line that announced it.

The SDK reads `LogLine` too: this module imports nothing of the server's.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, NoReturn, TextIO

from modelyard.errors import BadRequest

_STAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)) ")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
FOLLOW_SECONDS = 1.0
"""A follower of an orchestrator's logs gets a batch (empty when nothing was written) at least
this often (`modelyard.serving.orchestrator.Orchestrator.logs`)."""


@dataclass(frozen=True)
class LogLine:
    """One line a replica wrote: when (UTC), which replica, and the text (no newline)."""

    time: dt.datetime
    replica: str
    text: str

    def format(self) -> str:
        """``TIME REPLICA TEXT``: how the API and the CLI show it (`parse` reads it back)."""
        return f"{stamp(self.time)} {self.replica} {self.text}"

    @classmethod
    def parse(cls, line: str) -> LogLine:
        when, replica, text = [*line.split(" ", 2), "", ""][:3]
        return cls(parse_time(when), replica, text)


def keep_tail(lines: list[LogLine], tail: int | None) -> list[LogLine]:
    """The last ``tail`` of ``lines``; all of them when ``tail`` is None."""
    return lines if tail is None else lines[max(0, len(lines) - tail) :]


def by_time(line: LogLine) -> dt.datetime:
    """The sort key of merged lines: a stable sort by time alone keeps a traceback's lines in
    their order."""
    return line.time


def stamp(time: dt.datetime) -> str:
    """RFC 3339 in UTC with microseconds: ``2026-12-06T14:25:25.123456Z``."""
    return time.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(value: str) -> dt.datetime:
    """An RFC 3339 / ISO 8601 time (nanoseconds are cut to microseconds); naive means UTC."""
    found = re.match(r"^(.*?\.\d{6})\d*(Z|[+-]\d\d:\d\d)?$", value)
    if found:
        value = found.group(1) + (found.group(2) or "")
    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when.astimezone(dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC)


def split_stamp(raw: bytes) -> tuple[dt.datetime | None, str]:
    """A stamped line's time and text; (None, the whole line) when it has no stamp."""
    found = _STAMP.match(raw)
    text = raw.decode("utf-8", "replace")
    if found is None:
        return None, text
    try:
        return parse_time(found.group(1).decode()), text[found.end() :]
    except ValueError:
        return None, text


def parse_since(value: str, now: dt.datetime | None = None) -> dt.datetime:
    """``10m``, ``30s``, ``2h``, ``1d`` (that long before ``now``) or an ISO 8601 time (naive
    means UTC); `BadRequest` for anything else."""
    value = value.strip()
    relative = _RELATIVE.match(value)
    try:
        if relative:
            seconds = float(relative.group(1)) * _UNITS[relative.group(2)]
            return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=seconds)
        return parse_time(value)
    except (ValueError, OverflowError):
        raise BadRequest(
            f"since={value!r} is neither a duration (30s, 10m, 2h, 1d) nor an ISO 8601 time "
            "(2026-12-06T14:00:00Z)"
        ) from None


class StampedWriter(io.TextIOBase):
    """A text stream that starts every line it writes with the time it was written.

    A replica's ``sys.stdout`` and ``sys.stderr`` (`modelyard.serving.server.run_forked`):
    ``print``, logging and tracebacks are stamped when written, with no thread and no buffer of
    its own, so the last lines before a crash are there and stamped.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._line_start = True
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        if not text:
            return 0
        with self._lock:
            now = stamp(dt.datetime.now(dt.UTC)) + " "
            out = []
            for piece in text.splitlines(keepends=True):
                if self._line_start:
                    out.append(now)
                out.append(piece)
                self._line_start = piece.endswith(("\n", "\r"))
            self.stream.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding

    @property
    def buffer(self) -> BinaryIO:
        """The raw stream: what is written to it directly is not stamped."""
        buffer: BinaryIO = self.stream.buffer
        return buffer


def log_to(log_path: str) -> None:
    """This process's stdout and stderr (its file descriptors 1 and 2, so its children's too)
    appended to ``log_path``, line by line: a forked process's log file."""
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]


def run_logged(
    main: Callable[[list[str]], None], argv: list[str], env: dict[str, str], log_path: str, fd: int
) -> NoReturn:
    """The body of a process forked by the launcher (a model server or a realtime worker): its
    own session (it outlives a control plane killed with -9), ``log_path`` as its stdout and
    stderr, each line stamped, ``env`` on top of the launcher's, then ``main`` with the listening
    socket ``fd``; exits with ``main``'s status and never returns."""
    os.setsid()
    log_to(log_path)
    sys.stdout, sys.stderr = StampedWriter(sys.stdout), StampedWriter(sys.stderr)
    os.environ.update(env)
    code = 1
    try:
        main([*argv, "--fd", str(fd)])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
