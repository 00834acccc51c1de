"""``python -m modelyard.gateway``: the gateway process (``modelyard up`` starts it)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import socket
from pathlib import Path

from modelyard.gateway.app import Gateway
from modelyard.gateway.routes import Routes, Sync


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modelyard.gateway")
    parser.add_argument("--control-plane", required=True, help="URL of the control plane's API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8701)
    parser.add_argument("--fd", type=int, help="serve on this inherited listening socket")
    parser.add_argument("--state-dir", type=Path, help="where the last routing table is kept")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not args.access_log:
        logging.getLogger("modelyard.gateway.access").setLevel(logging.WARNING)
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
    else:
        sock = socket.create_server((args.host, args.port))
    state_file = None
    if args.state_dir is not None:
        args.state_dir.mkdir(parents=True, exist_ok=True)
        state_file = args.state_dir / "routes.json"
    run(args.control_plane, os.environ.get("MODELYARD_API_KEY"), sock, state_file)


def run(
    control_plane: str, api_key: str | None, sock: socket.socket, state_file: Path | None
) -> None:
    import uvicorn

    async def serve() -> None:
        routes = Routes(state_file)
        gateway = Gateway(routes)
        sync = Sync(routes, gateway.concurrency, gateway.window, control_plane, api_key)
        config = uvicorn.Config(
            gateway,
            log_level="warning",
            access_log=False,
            http="httptools",
            lifespan="on",
            timeout_graceful_shutdown=10,
            timeout_keep_alive=75,
        )
        sync.start()
        try:
            await uvicorn.Server(config).serve(sockets=[sock])
        finally:
            await sync.stop()

    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        uvloop.run(serve())
    else:
        asyncio.run(serve())


if __name__ == "__main__":
    main()
