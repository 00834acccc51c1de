"""The launcher: a pre-warmed process that forks one child per pipeline step or model replica.

Started as ``python -m modelyard.launcher MODULE...`` (so no parent main module is re-imported),
it imports the given modules once (a module written ``?name`` is skipped when not installed), then
reads one JSON request a line on stdin: ``{"id": n, "target": "module:function", "args": [...]}``,
forks, and the child calls ``function(*args)``, which must not return. With ``"listen": HOST`` the
launcher first binds a listening socket on a free port of HOST, and the child gets its file
descriptor as a last argument: ports are handed out by the kernel, never raced for. It answers
``{"id": n, "pid": p, "port": port}`` and reports ``{"pid": p, "exit": code}`` when the child ends
(a negative code is the signal that killed it). It alone reaps its children, so every exit status
is read exactly once. It exits when stdin closes (the control plane is gone).

Forking a warm process is what makes a step cost milliseconds and a replica start in a fraction of
a second: importing scikit-learn alone takes two seconds on a small machine.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any


def _reap(out: Any) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        out.write(json.dumps({"pid": pid, "exit": os.waitstatus_to_exitcode(status)}) + "\n")
        out.flush()


def serve() -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # Ctrl-C in a terminal signals the whole process group: the control plane shuts down and then
    # closes our stdin, which is how the launcher ends. Dying first would orphan its children.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    out = sys.stdout
    while True:
        for key, _ in selector.select():
            if key.fileobj == wake_r:
                os.read(wake_r, 4096)
                _reap(out)
                continue
            line = sys.stdin.readline()
            if not line:
                return
            request = json.loads(line)
            module, _, function = request["target"].partition(":")
            target = getattr(importlib.import_module(module), function)
            args = list(request["args"])
            listener = None
            if request.get("listen"):
                listener = socket.create_server((request["listen"], 0), backlog=1024)
                args.append(listener.fileno())
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                selector.close()
                os.close(wake_r)
                os.close(wake_w)
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.close(devnull)
                target(*args)  # never returns
                os._exit(70)
            answer = {"id": request["id"], "pid": pid}
            if listener is not None:
                answer["port"] = listener.getsockname()[1]
                listener.close()
            out.write(json.dumps(answer) + "\n")
            out.flush()


class Handle:
    """A launched child: its pid (and port), and its exit code once the launcher reported it."""

    def __init__(self, pid: int, port: int | None = None) -> None:
        self.pid = pid
        self.port = port
        self.exitcode: int | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[int], None]] = []

    def join(self, timeout: float | None = None) -> None:
        self._done.wait(timeout)

    def when_done(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(exit code)`` once the step ended (at once if it has)."""
        with self._lock:
            if self.exitcode is None:
                self._callbacks.append(callback)
                return
        callback(self.exitcode)

    def _finish(self, code: int) -> None:
        with self._lock:
            self.exitcode = code
            callbacks, self._callbacks = self._callbacks, []
        self._done.set()
        for callback in callbacks:
            callback(code)


class Launcher:
    """The control plane's side: starts the launcher lazily and routes its answers."""

    def __init__(self, preload: list[str]) -> None:
        self.preload = preload
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._handles: dict[int, Handle] = {}
        self._early: dict[int, int] = {}  # exits reported before the start answer was read
        self._started: dict[int, dict[str, int]] = {}
        self._answered = threading.Condition()
        self._next = 0

    def _ensure(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            if self._proc is not None:
                _close_stdin(self._proc)  # a dead launcher's pipe (its reader closes stdout)
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "modelyard.launcher", *self.preload],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
                close_fds=True,
            )
            threading.Thread(
                target=self._read, args=(self._proc,), name="launcher.reader", daemon=True
            ).start()
        return self._proc

    def warm(self) -> None:
        """Start the launcher now, so that the first child does not wait for its imports."""
        with self._lock:
            self._ensure()

    def start(self, target: str, *args: Any, listen: str | None = None) -> Handle:
        """Fork a child that calls ``target(*args)`` (plus a listening socket's fd with
        ``listen``)."""
        with self._lock:
            proc = self._ensure()
            self._next += 1
            request_id = self._next
            assert proc.stdin is not None
            request = {"id": request_id, "target": target, "args": list(args), "listen": listen}
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            with self._answered:
                self._answered.wait_for(
                    lambda: request_id in self._started or proc.poll() is not None, timeout=30
                )
                answer = self._started.pop(request_id, None)
                if answer is None:
                    raise OSError("the launcher did not answer; see the control plane log")
                pid = answer["pid"]
                handle = Handle(pid, answer.get("port"))
                self._handles[pid] = handle
                if pid in self._early:
                    handle._finish(self._early.pop(pid))
            return handle

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            message = json.loads(line)
            with self._answered:
                if "id" in message:
                    self._started[message["id"]] = message
                    self._answered.notify_all()
                    continue
                handle = self._handles.pop(message["pid"], None)
                if handle is None:
                    self._early[message["pid"]] = message["exit"]
                else:
                    handle._finish(message["exit"])
        proc.stdout.close()
        with self._answered:  # the launcher died: its children were killed with it
            self._answered.notify_all()
            for handle in self._handles.values():
                handle._finish(-signal.SIGKILL)
            self._handles.clear()

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                _close_stdin(self._proc)  # the launcher exits when its stdin closes
                if self._proc.poll() is None:
                    self._proc.wait(10)


def _close_stdin(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(OSError):  # a launcher already gone: nothing reads the pipe
        proc.stdin.close()


def preload(modules: list[str]) -> None:
    for name in modules:
        optional = name.startswith("?")
        name = name.lstrip("?")
        if optional and importlib.util.find_spec(name.partition(".")[0]) is None:
            continue
        importlib.import_module(name)


if __name__ == "__main__":
    preload(sys.argv[1:])
    # The preloaded libraries live as long as every child: out of the collector's sight, a full
    # collection in a replica does not walk them (a 100 ms stall), nor touch their pages, which
    # stay shared with the launcher instead of being copied into each child.
    gc.freeze()
    serve()
