"""``python -m modelyard.gateway``: the gateway process (``modelyard up`` starts it)."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import socket
from pathlib import Path

from modelyard.gateway.app import Gateway
from modelyard.gateway.routes import Routes, Sync
from modelyard.serving import http


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
        # The saved table holds the replicas' tokens: only this user may read it.
        args.state_dir.chmod(0o700)
        state_file = args.state_dir / "routes.json"
    run(args.control_plane, os.environ.get("MODELYARD_API_KEY"), sock, state_file)


def run(
    control_plane: str, api_key: str | None, sock: socket.socket, state_file: Path | None
) -> None:
    async def serve() -> None:
        routes = Routes(state_file)
        gateway = Gateway(routes)
        sync = Sync(routes, gateway.concurrency, gateway.window, control_plane, api_key)
        sync.start()
        # Everything imported and built so far lives as long as the process: out of the
        # collector's sight, a full collection does not stall every request in flight.
        gc.freeze()
        try:
            await http.serve(gateway, sock, grace_s=10)
        finally:
            await sync.stop()

    http.run(serve())


if __name__ == "__main__":
    main()
