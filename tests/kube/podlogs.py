"""The fake API server's pod log options: ``timestamps``, ``sinceTime``, ``tailLines`` and
``follow`` over what its kubelet captured (`FakeApiServer.pod_log`).

A real kubelet stamps each line of a container's output as it reads it; the simulated one writes
the output straight to a file, so a line is stamped here the first time the log is read after it
was written (a follower reads every ``POLL_SECONDS``): the stamps are in line order and close to
when the lines were written. ``follow`` sends the lines there are, then the new ones, chunked,
until the pod is gone, the client leaves or the server stops.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

POLL_SECONDS = 0.05
_lock = threading.Lock()
_stamped: dict[tuple[int, str, str], list[tuple[dt.datetime, str]]] = {}


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"  # RFC 3339 with nanoseconds


def _parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def stamped(server: Any, namespace: str, name: str) -> list[tuple[dt.datetime, str]]:
    """The pod's complete lines with the time each was first seen; `ApiError` as ``pod_log``."""
    return _read(server, namespace, name)[0]


def _read(server: Any, namespace: str, name: str) -> tuple[list[tuple[dt.datetime, str]], str]:
    with server._cond:
        text: str = server.pod_log(namespace, name)
    *complete, rest = text.split("\n")
    with _lock:
        lines = _stamped.setdefault((id(server), namespace, name), [])
        for line in complete[len(lines) :]:
            # distinct and increasing, as a kubelet's nanosecond stamps are
            now = dt.datetime.now(dt.UTC)
            if lines and now <= lines[-1][0]:
                now = lines[-1][0] + dt.timedelta(microseconds=1)
            lines.append((now, line))
        return list(lines), rest


def _render(lines: list[tuple[dt.datetime, str]], timestamps: bool) -> bytes:
    return "".join(f"{_stamp(t)} {s}\n" if timestamps else f"{s}\n" for t, s in lines).encode()


def serve(
    handler: BaseHTTPRequestHandler, server: Any, ns: str, name: str, query: dict[str, str]
) -> None:
    """Answer ``GET pods/NAME/log`` with its options (`ApiError` before anything is sent)."""
    lines, rest = _read(server, ns, name)
    seen = len(lines)
    if query.get("sinceTime"):
        since = _parse(query["sinceTime"])
        lines = [line for line in lines if line[0] >= since]
    if query.get("tailLines"):
        lines = lines[-int(query["tailLines"]) :] if int(query["tailLines"]) else []
    timestamps = query.get("timestamps") in ("true", "1")
    if query.get("follow") not in ("true", "1"):
        if rest:  # a line not finished yet (a process that died mid-line) is shown too
            lines = [*lines, (dt.datetime.now(dt.UTC), rest)]
        data = _render(lines, timestamps)[: -1 if rest else None]
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
        return
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    try:
        data = _render(lines, timestamps)
        while True:
            if data:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                handler.wfile.flush()
            time.sleep(POLL_SECONDS)
            if server._closed:
                break
            try:
                now = stamped(server, ns, name)
            except Exception:  # the pod is gone: so is its log
                break
            data, seen = _render(now[seen:], timestamps), len(now)
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
    except OSError:
        pass
    handler.close_connection = True
