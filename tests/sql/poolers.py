"""pgbouncer and pgpool-II started on free ports before a PostgreSQL server, each with its own
config files in a temporary folder (never the system services); for the tests and
bench/warehouse.py. The binaries are the ones on PATH, else those ``make tools`` unpacked into
``.tools/bin``."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from modelyard.testing import free_port

ROOT = Path(__file__).resolve().parents[2]


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    local = ROOT / ".tools" / "bin" / name
    return str(local) if os.access(local, os.X_OK) else None


@dataclass
class Pooler:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    folder: Path

    def url(self, database: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        shutil.rmtree(self.folder, ignore_errors=True)


def _folder(name: str) -> Path:
    """A folder the pooler can read after dropping root (pgbouncer refuses to run as root)."""
    folder = Path(tempfile.mkdtemp(prefix=f"modelyard-{name}-"))
    folder.chmod(0o755)
    return folder


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o644)


def _start(
    name: str, argv: list[str], folder: Path, port: int, server: str, password: str | None
) -> Pooler:
    log = folder / f"{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True
        )
    pooler = Pooler(name, port, process, folder)
    parts = urlsplit(server)
    probe = f"postgresql://{parts.username}@127.0.0.1:{port}/{parts.path.lstrip('/')}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            text = log.read_text()[-2000:]
            pooler.stop()
            raise RuntimeError(f"{name} exited: {text}")
        try:
            with psycopg.connect(probe, password=password, connect_timeout=2):
                return pooler
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                pooler.stop()
                raise RuntimeError(f"{name} did not accept connections within 30 s") from None
            time.sleep(0.1)


def start_pgbouncer(server: str, password: str | None) -> Pooler:
    """pgbouncer in transaction mode before ``server`` (every database); clients log in with
    ``password`` (SCRAM), or without one when it is None."""
    binary = find_tool("pgbouncer")
    if binary is None:
        raise RuntimeError("pgbouncer is not installed: 'make tools' unpacks Debian's")
    folder, port = _folder("pgbouncer"), free_port()
    parts = urlsplit(server)
    _write(folder / "users.txt", f'"{parts.username}" "{password or ""}"\n')
    _write(
        folder / "pgbouncer.ini",
        f"""[databases]
* = host={parts.hostname} port={parts.port or 5432}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = {"scram-sha-256" if password else "trust"}
auth_file = {folder / "users.txt"}
pool_mode = transaction
max_client_conn = 50
default_pool_size = 4
ignore_startup_parameters = extra_float_digits
logfile =
pidfile =
""",
    )
    argv = [binary, *(["-u", "nobody"] if os.geteuid() == 0 else []), "pgbouncer.ini"]
    return _start("pgbouncer", argv, folder, port, server, password)


def start_pgpool(server: str) -> Pooler:
    """pgpool-II in raw mode before ``server``, its in-memory query cache on."""
    binary = find_tool("pgpool")
    if binary is None:
        raise RuntimeError("pgpool-II is not installed: 'make tools' unpacks Debian's")
    folder, port = _folder("pgpool"), free_port()
    parts = urlsplit(server)
    (folder / "oiddir").mkdir()
    _write(folder / "pcp.conf", "")
    _write(folder / "pool_hba.conf", "")
    _write(
        folder / "pgpool.conf",
        f"""backend_clustering_mode = 'raw'
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{folder}'
pcp_listen_addresses = ''
pcp_port = {free_port()}
pcp_socket_dir = '{folder}'
backend_hostname0 = '{parts.hostname}'
backend_port0 = {parts.port or 5432}
backend_weight0 = 1
backend_flag0 = 'ALWAYS_PRIMARY'
enable_pool_hba = off
pool_passwd = ''
num_init_children = 8
max_pool = 2
log_destination = 'stderr'
pid_file_name = '{folder / "pgpool.pid"}'
logdir = '{folder}'
health_check_period = 0
sr_check_period = 0
failover_on_backend_error = off
memory_cache_enabled = on
memqcache_method = 'shmem'
memqcache_total_size = 16MB
memqcache_max_num_cache = 1000
memqcache_cache_block_size = 1MB
memqcache_oiddir = '{folder / "oiddir"}'
""",
    )
    argv = [binary, "-n", "-f", "pgpool.conf", "-F", "pcp.conf", "-a", "pool_hba.conf"]
    return _start("pgpool", argv, folder, port, server, None)
