"""A tour of the model repository on the embedded defaults (SQLite, a local blob folder).

Starts ``modelyard up`` as a real process, pushes two versions of a small model, moves the
``production`` alias, pulls the version back and checks every byte, prints the event log, and
stops the platform. Run it with ``make tour``; its data stays in ``.modelyard-tour`` (or
``$MODELYARD_HOME``), apart from the image search demo's.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from modelyard import Client, VersionSpec

console = Console()
HOME = Path(os.environ.get("MODELYARD_HOME", ".modelyard-tour")).resolve()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_platform(port: int) -> subprocess.Popen[bytes]:
    # Its gateway on a free port too, so the tour runs beside `make demo` or `modelyard up`.
    env = {
        **os.environ,
        "MODELYARD_HOME": str(HOME),
        "MODELYARD_API_PORT": str(port),
        "MODELYARD_GATEWAY_PORT": str(free_port()),
    }
    HOME.mkdir(parents=True, exist_ok=True)
    log = open(HOME / "platform.log", "ab")  # noqa: SIM115 - the child process keeps it open
    process = subprocess.Popen(
        [sys.executable, "-m", "modelyard", "up"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"modelyard up exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health").is_success:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit("the control plane did not answer within 30 s")


def train(folder: Path, seed: int) -> Path:
    """A stand-in training job: a linear model's weights and its label map."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    weights = [[round(rng.gauss(0, 1), 4) for _ in range(16)] for _ in range(3)]
    (folder / "weights.json").write_text(json.dumps({"weights": weights, "bias": [0.0] * 3}))
    (folder / "labels.txt").write_text("setosa\nversicolor\nvirginica\n")
    return folder


def main() -> None:
    port = free_port()
    console.rule("[bold]modelyard registry tour")
    console.print(
        f"home {HOME} (SQLite + local blob folder), API on port {port}, "
        f"platform log in {HOME / 'platform.log'}"
    )
    platform = start_platform(port)
    try:
        client = Client(
            f"http://127.0.0.1:{port}",
            (HOME / "admin.key").read_text().strip(),
            cache_dir=HOME / "cache",
        )
        if "demo" not in {n.name for n in client.list_namespaces()}:
            client.create_namespace("demo", "the registry tour")
        with tempfile.TemporaryDirectory() as tmp:
            v1 = client.push(
                "demo/iris",
                train(Path(tmp) / "v1", seed=1),
                VersionSpec(runtime="python", metrics={"accuracy": 0.91}),
                alias="production",
            )
            console.print(
                f"pushed and committed [bold]{v1.ref}[/], alias production -> {v1.number}"
            )
            v2 = client.push(
                "demo/iris",
                train(Path(tmp) / "v2", seed=2),
                VersionSpec(runtime="python", metrics={"accuracy": 0.95}),
                alias="candidate",
            )
            console.print(f"pushed and committed [bold]{v2.ref}[/], alias candidate -> {v2.number}")
            change = client.set_alias(v2.ref, "production")
            console.print(f"moved production: {change.previous} -> {change.version}")
            folder = client.pull("demo/iris@production")
            expected = train(Path(tmp) / "check", seed=2)
            same = all((folder / f.name).read_bytes() == f.read_bytes() for f in expected.iterdir())
            console.print(
                f"pulled demo/iris@production into {folder}: "
                f"{'every byte matches' if same else 'MISMATCH'}"
            )
            again = client.pull("demo/iris@production")
            console.print(f"pulled again: {'reused the cache' if again == folder else 'copied'}")
        table = Table(title="event log (newest 8)", title_justify="left")
        for column in ("id", "type", "subject"):
            table.add_column(column)
        for event in list(client.events(after=0, follow=False))[-8:]:
            table.add_row(str(event.id), event.type, event.subject)
        console.print(table)
        client.close()
        if not same:
            raise SystemExit(1)
    finally:
        platform.terminate()
        platform.wait(15)
    console.print("[green]done[/]: the platform stopped; its data stays in", HOME)


if __name__ == "__main__":
    main()
