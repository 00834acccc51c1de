"""The model server: one process per replica, speaking KServe's Open Inference Protocol v2 and v1.

At start it binds its socket (so liveness answers at once), pulls its model version from the
repository with every digest verified (the init step: one generic server, no image per model),
loads the runtime the version names, and only then reports ready. SIGTERM stops accepting, lets
the requests in flight finish, then exits. A ``predict`` that raises answers 500 with an error id
that is also in the log; the server keeps serving.

Only the gateway may call it (`modelyard.serving.replica_headers`): it starts only with a token in
``MODELYARD_REPLICA_TOKEN`` (which it takes out of its environment), and every request but the
health probes must carry that token in ``x-modelyard-replica-token``, else 401.

Each inference answer (OIP v2 infer, v1 predict) reports in ``x-modelyard-service-ms`` what this
process spent on the request: from its body fully received to its answer encoded (decoding,
predict, encoding, which run without yielding to other requests), less the time its predict waited
for the worker thread or for a batch to form (with batching, predict's part is the whole batch's
call). Not in it: the wait before the server reads the request (the kernel's queue, an event loop
busy with other requests), receiving the body and sending the answer. It is wall-clock time, so
CPU contention (other processes, the worker thread holding the GIL) stretches it.

It is a bare ASGI application rather than a framework route table: this is the hot path, and every
microsecond here is a microsecond of every inference.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import hmac
import logging
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import orjson

from modelyard import __version__
from modelyard.errors import (
    InvalidInput,
    ModelyardError,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
)
from modelyard.serving import binary, http, protocol
from modelyard.serving.asgi import Receive, Scope, Send, read_body
from modelyard.serving.batching import Batcher, timed
from modelyard.serving.logs import StampedWriter, run_logged
from modelyard.serving.replica_headers import (
    NOT_FROM_GATEWAY,
    OPEN_PATHS,
    SERVICE_HEADER,
    TOKEN_ENV,
    TOKEN_HEADER,
    service_value,
)
from modelyard.serving.runtimes import HttpRequest, Runtime, load_runtime

log = logging.getLogger("modelyard.serving.server")
Headers = list[tuple[bytes, bytes]]
JSON: Headers = [(b"content-type", b"application/json")]
EXTENSIONS = ["binary_tensor_data"]
EXIT_LOAD_FAILED = 3
INLINE_PREDICT_SECONDS = 0.005
SLOW_CALLS_TO_MOVE = 3
"""Consecutive predicts over ``INLINE_PREDICT_SECONDS`` that move the model to the worker thread:
one is no sign (a first call's lazy set-up, the process preempted by another)."""


class _Service:
    """What this process spent on one request (the module's docstring says what counts)."""

    __slots__ = ("began", "excluded", "predicted")

    def __init__(self) -> None:
        self.began = 0.0  # when its body was in
        self.excluded = 0.0  # predict's wait for the worker thread or a batch
        self.predicted = False


_service: ContextVar[_Service | None] = ContextVar("modelyard_service", default=None)
"""The request being handled: each ASGI request runs in a task of its own, with its own value."""


class ModelServer:
    """The ASGI application of one replica serving one model under the name ``name``."""

    def __init__(
        self,
        name: str,
        version: str | None = None,
        *,
        max_body_bytes: int = 16 * 1024 * 1024,
        batching: tuple[int, float] | None = None,
        token: str | None = None,
    ) -> None:
        """``token``: what every caller but a health probe must send; None answers anyone
        (a server in a test of its own)."""
        self.name = name
        self.version = version
        self.max_body_bytes = max_body_bytes
        self.batching = batching
        self.runtime: Runtime | None = None
        self.batcher: Batcher | None = None
        self._slow = False
        self._slow_calls = 0
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="predict")
        self.load_error: str | None = None
        self._token = token.encode() if token else None

    def load(self, runtime: Runtime, path: Path, signature: Mapping[str, Any]) -> None:
        runtime.load(path, signature)
        self.runtime = runtime
        if self.batching and runtime.batchable:
            size, wait = self.batching
            self.batcher = Batcher(runtime.predict_batch, size, wait)

    @property
    def ready(self) -> bool:
        return self.runtime is not None

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()

    # ASGI ---------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        service = _Service()
        _service.set(service)
        content = JSON
        try:
            if self._token is not None and path not in OPEN_PATHS:
                _check_token(scope, self._token)
            status, body, content = await self._route(method, path, receive, scope)
        except PayloadTooLarge as exc:
            status, body = 413, protocol.encode_error(exc.message)
        except InvalidInput as exc:
            status, body = 400, protocol.encode_error(exc.message)
        except ModelyardError as exc:
            status, body = exc.http_status, protocol.encode_error(exc.message)
        except Exception as exc:
            error_id = uuid.uuid4().hex[:12]
            log.error("error %s in %s %s\n%s", error_id, method, path, traceback.format_exc())
            status = 500
            body = protocol.encode_error(
                f"prediction failed (error id {error_id}): {type(exc).__name__}: {exc}"
            )
        headers = [*content, (b"content-length", str(len(body)).encode())]
        if service.predicted and service.began:
            spent = time.perf_counter() - service.began - service.excluded
            headers.append((SERVICE_HEADER, service_value(spent)))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(
        self, method: str, path: str, receive: Receive, scope: Scope
    ) -> tuple[int, bytes, Headers]:
        """The answer's status, body and headers (content type and length aside)."""
        handler = self.runtime.routes().get(path) if self.runtime is not None else None
        if handler is not None:
            request = HttpRequest(
                method=method,
                body=await self._body(receive),
                content_type=next(
                    (v.decode() for k, v in scope["headers"] if k == b"content-type"), ""
                ),
                query=dict(parse_qsl(scope.get("query_string", b"").decode())),
            )
            loop = asyncio.get_running_loop()
            status, answer = await loop.run_in_executor(self._worker, handler, request)
            return status, answer, JSON
        if method == "POST":
            if path.startswith("/v2/models/") and path.endswith("/infer"):
                model = path[len("/v2/models/") : -len("/infer")]
                model, versioned, version = model.partition("/versions/")
                self._check_model(model)
                if versioned:
                    self._check_version(model, version)
                return await self._infer(await self._body(receive), scope)
            if path.startswith("/v1/models/") and path.endswith(":predict"):
                self._check_model(path[len("/v1/models/") : -len(":predict")])
                return 200, await self._predict_v1(await self._body(receive)), JSON
            no_route = f"no route POST {path}: see the OIP v2 paths"
            return 404, protocol.encode_error(no_route), JSON
        if method in ("GET", "HEAD"):
            return (*self._get(path), JSON)
        return 405, protocol.encode_error(f"method {method} is not allowed on {path}"), JSON

    def _get(self, path: str) -> tuple[int, bytes]:
        if path == "/v2/health/live":
            return 200, orjson.dumps({"live": True})
        if path == "/v2/health/ready":
            return (200 if self.ready else 503), orjson.dumps({"ready": self.ready})
        if path == "/v2":
            return 200, orjson.dumps(
                {"name": "modelyard", "version": __version__, "extensions": EXTENSIONS}
            )
        if path == "/":
            return 200, orjson.dumps({"status": "alive"})  # KServe's v1 liveness
        if path.startswith("/v2/models/"):
            rest = path[len("/v2/models/") :]
            model, _, tail = rest.partition("/")
            self._check_model(model)
            if tail.startswith("versions/"):
                version, _, tail = tail[len("versions/") :].partition("/")
                self._check_version(model, version)
            if tail == "ready":
                return (200 if self.ready else 503), orjson.dumps(
                    {"name": self.name, "ready": self.ready}
                )
            if tail == "":
                return self._metadata()
        if path.startswith("/v1/models/"):
            self._check_model(path[len("/v1/models/") :])
            return (200 if self.ready else 503), orjson.dumps(
                {"name": self.name, "ready": self.ready}
            )
        return 404, protocol.encode_error(f"no route GET {path}")

    def _metadata(self) -> tuple[int, bytes]:
        runtime = self._runtime()
        return 200, orjson.dumps(
            {
                "name": self.name,
                "versions": [self.version] if self.version else [],
                "platform": runtime.platform,
                "inputs": [spec.to_dict() for spec in runtime.inputs],
                "outputs": [spec.to_dict() for spec in runtime.outputs],
            }
        )

    def _check_model(self, model: str) -> None:
        if model != self.name:
            raise NotFound(f"model {model!r} is not served here: this server serves {self.name!r}")

    def _check_version(self, model: str, version: str) -> None:
        if version != (self.version or ""):
            raise NotFound(f"model {model} has no version {version}: it serves {self.version}")

    def _runtime(self) -> Runtime:
        if self.runtime is None:
            raise _NotReady(
                f"model {self.name} is still loading: retry when /v2/health/ready is 200"
            )
        return self.runtime

    async def _body(self, receive: Receive) -> bytes:
        body = await read_body(receive, self.max_body_bytes, ": send fewer rows per request")
        service = _service.get()
        if service is not None:
            service.began = time.perf_counter()
        return body

    async def _predict(
        self, inputs: dict[str, np.ndarray], names: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The runtime's answer; ``names``: the outputs the request asked for, if it did."""
        runtime = self._runtime()
        service = _service.get()
        predict: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] = runtime.predict
        batcher = self.batcher
        if names is not None and _beyond(runtime.default_outputs, names):
            # Outputs computed only on request (a classifier's predict_proba) skip the batcher:
            # one batched call answers one set of outputs.
            predict = functools.partial(runtime.predict_outputs, names=names)
            batcher = None
        if batcher is not None or self._slow:
            submitted = time.perf_counter()
            if batcher is not None:
                outputs, ran = await batcher.submit_timed(inputs)
            else:
                loop = asyncio.get_running_loop()
                outputs, ran = await loop.run_in_executor(self._worker, timed, predict, inputs)
            if service is not None:
                # Waiting for the worker (or a batch) is a queue, not this request's work.
                service.excluded += time.perf_counter() - submitted - ran
                service.predicted = True
            return outputs
        started = time.perf_counter()
        try:
            outputs = predict(inputs)
        finally:
            # A fast model runs right on the event loop (a thread hop costs more than it does);
            # one that takes longer moves to the worker thread for good, so that health checks
            # and other requests are not held up behind it.
            if time.perf_counter() - started <= INLINE_PREDICT_SECONDS:
                self._slow_calls = 0
            else:
                self._slow_calls += 1
                self._slow = self._slow_calls >= SLOW_CALLS_TO_MOVE
        if service is not None:
            service.predicted = True
        return outputs

    async def _infer(self, body: bytes, scope: Scope) -> tuple[int, bytes, Headers]:
        runtime = self._runtime()
        header = next((v for k, v in scope["headers"] if k == binary.HEADER), None)
        length = None if header is None else binary.header_length(header, len(body))
        request = protocol.decode_infer_request(body, runtime.inputs, length)
        outputs = await self._predict(request.inputs, request.outputs)
        answer, length = protocol.encode_infer_answer(request, self.name, self.version, outputs)
        if length is None:
            return 200, answer, JSON
        return 200, answer, [(b"content-type", binary.CONTENT_TYPE), binary.header(length)]

    async def _predict_v1(self, body: bytes) -> bytes:
        runtime = self._runtime()
        outputs = await self._predict(protocol.decode_v1_request(body, runtime.inputs))
        return protocol.encode_v1_response(outputs)


class _NotReady(ModelyardError):
    http_status = 503
    code = "unavailable"


def _beyond(defaults: list[str] | None, names: list[str]) -> bool:
    """Whether a request for ``names`` asks for more than ``predict`` answers (its defaults)."""
    return defaults is not None and not set(names).issubset(defaults)


def _check_token(scope: Scope, token: bytes) -> None:
    """Raise 401 unless the request carries ``token`` (compared in constant time)."""
    for name, value in scope["headers"]:
        if name == TOKEN_HEADER:
            if hmac.compare_digest(value, token):
                return
            break
    raise Unauthenticated(NOT_FROM_GATEWAY)


# the replica process ---------------------------------------------------------------------------
def pull_model(ref: str) -> tuple[Path, str, dict[str, Any]]:
    """The init step: pull ``ref`` (verified) into the cache; its folder, runtime and signature."""
    from modelyard.client import Client

    with Client() as client:
        version = client.get_version(ref)
        if not version.runtime:
            raise InvalidInput(
                f"{version.ref} names no runtime: push it with a runtime "
                "(VersionSpec(runtime='sklearn'|'onnx'|'python'|'module:Class'))"
            )
        return client.pull(version.ref), version.runtime, dict(version.signature)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modelyard.serving.server")
    parser.add_argument("--model", help="namespace/name@version to pull from the repository")
    parser.add_argument("--model-dir", type=Path, help="serve this folder instead of pulling")
    parser.add_argument("--runtime", help="with --model-dir: the runtime to load it with")
    parser.add_argument("--name", required=True, help="the model name clients use (OIP)")
    parser.add_argument("--version", help="the version reported in responses")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--fd", type=int, help="serve on this inherited listening socket")
    parser.add_argument("--max-body-mb", type=float, default=16.0)
    parser.add_argument("--max-batch-size", type=int, default=0, help="0: no batching")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--grace-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    # Out of the environment at once: model code runs in this process and may start others.
    token = os.environ.pop(TOKEN_ENV, "")
    if not token:
        parser.error(
            f"{TOKEN_ENV} is not set: a replica answers only callers that send it in "
            f"{TOKEN_HEADER.decode()} (its gateway); for a server of your own, set any secret"
        )
    # A stream that stamps its lines (a local replica's) needs no time in the format.
    stamped = isinstance(sys.stderr, StampedWriter)
    logging.basicConfig(
        level=logging.INFO,
        format=("" if stamped else "%(asctime)s ") + "%(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
    else:
        sock = socket.create_server((args.host, args.port), reuse_port=False)
    version = args.version or (args.model.rpartition("@")[2] if args.model else None)
    app = ModelServer(
        args.name,
        version,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        batching=(args.max_batch_size, args.max_wait_ms / 1000) if args.max_batch_size else None,
        token=token,
    )

    def init() -> None:
        try:
            if args.model_dir is not None:
                path, runtime, signature = (
                    args.model_dir,
                    args.runtime or "python",
                    dict[str, Any](),
                )
            else:
                path, runtime, signature = pull_model(args.model)
            app.load(load_runtime(runtime), path, signature)
            # What exists now lives as long as the process: out of the collector's sight, a
            # full collection no longer walks the model and its libraries (a 100 ms stall).
            gc.freeze()
            log.info("model %s (%s) loaded from %s: ready", args.name, runtime, path)
        except BaseException:
            # The orchestrator reads this traceback from the log to say why the revision failed.
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(EXIT_LOAD_FAILED)

    threading.Thread(target=init, name="init", daemon=True).start()
    serve(app, sock, args.grace_seconds)


def run_forked(argv: list[str], env: dict[str, str], log_path: str, fd: int) -> None:
    """The body of a replica forked by the launcher: the server on the inherited socket ``fd``
    (see `run_logged`); never returns."""
    run_logged(main, argv, env, log_path, fd)


def serve(app: ModelServer, sock: socket.socket, grace_seconds: float) -> None:
    http.run(http.serve(app, sock, grace_s=grace_seconds))


if __name__ == "__main__":
    main()
