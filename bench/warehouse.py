"""Warehouse benchmark: a PostgreSQL table exported to Parquet by modelyard and by its peers.

The data: ``bench_events_<N>`` in the local PostgreSQL (``MODELYARD_TEST_PG``, default
postgresql://postgres@127.0.0.1:5432/test; the script makes its own database
``modelyard_bench_warehouse`` there and drops it at the end), made with ``generate_series``:
``id int8`` (primary key), ``user_id int4``, ``amount float8``, ``score float4``, ``kind text``
(``'kind-' || g % 16``), ``at timestamptz``, ``flag bool``; then ``VACUUM ANALYZE``. Each size in
``--rows`` (default 1,000,000 and 10,000,000) is measured in turn.

Every target reads ``SELECT * FROM bench_events_<N>`` and writes Parquet, each in its own process
(timed from spawn to exit; its peak RSS is the VmHWM it reports as it exits); the row count of
what it wrote is checked. Peers run in their own venvs, made under ``bench/.venvs/<peer>`` on first
use (minutes, not timed) with the pins in ``REQUIREMENTS``:

- ``pandas``: ``pandas.read_sql`` over SQLAlchemy + psycopg, then ``DataFrame.to_parquet``;
- ``pandas-chunks``: the same with ``chunksize=100_000`` on a streaming connection, each chunk
  appended to one ``pyarrow.parquet.ParquetWriter``;
- ``adbc``: ADBC's ``fetch_record_batch`` streamed into a ``ParquetWriter``, with the latest
  driver (1.13.0); ``adbc-1.8`` the same with 1.8.0, the release modelyard pins;
- ``connectorx``: ``connectorx.read_sql(..., return_type="arrow")`` then ``write_table``;
- ``duckdb``: DuckDB's postgres scanner (its extension from PyPI, since this machine reaches no
  other site), ``COPY (SELECT * FROM pg.public.t) TO 'x.parquet'``; skipped, saying why, when the
  extension cannot be loaded here.

modelyard (this venv): ``modelyard up`` on a temporary home (SQLite, local blobs), then one
``modelyard datasets import-sql`` per engine (``adbc``, ``psycopg``, ``sqlalchemy``), the default
engine through pgbouncer (transaction mode) and pgpool-II (query cache on), both started by the
script on free ports (tests/sql/poolers.py), the default engine with a split read (``--split-by id
--parallel 2``: two connections on one snapshot, as DuckDB's scanner reads on several), and an
incremental pair: a full import by watermark ``id``, then 1% new rows inserted and imported, twice
(the first increment recounts the first import's tail window for late rows; the second the first
increment). The default engine, the split read and the two poolers run ``--repeat`` times,
interleaved, and each keeps its median run: one run each varied from -0.3x to +1.6x over direct
between otherwise quiet runs. So does each peer that took under 30 s (all but pandas): one run of
DuckDB took 4.6 to 6.9 s on the same machine. A modelyard row times the whole CLI process: the
query, the Parquet parts, their digest, the upload and the commit.

Goals: the default engine at least 5x the rows/s of pandas ``read_sql`` and within 1.5x of the
fastest peer; its peak memory flat from the smallest to the largest size (at most 1.25x); the
incremental import of 1% new rows under 5% of the full import's time; through each pooler within
20% of direct.

Run it (10M rows take several minutes per target on 2 cores)::

    make bench BENCH=warehouse                   # = .venv/bin/python bench/warehouse.py
    .venv/bin/python bench/warehouse.py --rows 10000 --peers adbc,modelyard
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/sql/poolers.py starts the poolers, as in the tests

import psycopg  # noqa: E402
from _harness import argument_parser, ensure_venv, free_port, wait_for  # noqa: E402
from tests.sql.poolers import find_tool, start_pgbouncer, start_pgpool  # noqa: E402

BIN = Path(sys.executable).parent
PYARROW = "pyarrow==26.0.1"
REQUIREMENTS = {
    "pandas": ("pandas==2.3.3", "SQLAlchemy==2.0.43", "psycopg[binary]==3.3.9", PYARROW),
    "adbc": ("adbc-driver-postgresql==1.13.0", PYARROW),
    # The release modelyard's [sql] extra pins: the wheels after it decode with 2.3-2.9 times
    # the CPU (a build without inlining); both are run so that each is measured.
    "adbc-1.8": ("adbc-driver-postgresql==1.8.0", "adbc-driver-manager==1.13.0", PYARROW),
    "connectorx": ("connectorx==0.4.6", PYARROW),
    "duckdb": (
        "duckdb==1.5.5",
        "duckdb-extensions==1.5.5",
        "duckdb-extension-postgres-scanner==1.5.5",
    ),
}
VENV_OF = {"pandas": "pandas", "pandas-chunks": "pandas", "adbc": "adbc", "adbc-1.8": "adbc-1.8"}
VENV_OF |= {"connectorx": "connectorx", "duckdb": "duckdb"}
PEERS = ("pandas", "pandas-chunks", "adbc", "adbc-1.8", "connectorx", "duckdb")
ENGINES = ("adbc", "psycopg", "sqlalchemy")
DATABASE = "modelyard_bench_warehouse"
DEFAULT = "modelyard default engine"
SPLIT = 2  # connections of the split read: the cores of the machines it runs on
SPLIT_TARGET = f"modelyard split by id, {SPLIT} conns"
REPEAT_UNDER = 30.0  # seconds: peers faster than this run --repeat times, as modelyard does
SPEEDUP_GOAL, PEER_GOAL, MEMORY_GOAL, INCREMENTAL_GOAL, POOLER_GOAL = 5.0, 1.5, 1.25, 0.05, 0.2

# Each peer: argv[1] the libpq URL, argv[2] the table, argv[3] the Parquet file; prints the rows.
PEER_CODE = {
    "pandas": """
import sys, pandas as pd, sqlalchemy as sa
url, table, out = sys.argv[1:4]
engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
frame = pd.read_sql(f"SELECT * FROM {table}", engine)
frame.to_parquet(out)
print(len(frame))
""",
    "pandas-chunks": """
import sys, pandas as pd, pyarrow as pa, pyarrow.parquet as pq, sqlalchemy as sa
url, table, out = sys.argv[1:4]
engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
writer, rows = None, 0
with engine.connect().execution_options(stream_results=True) as conn:
    for chunk in pd.read_sql(f"SELECT * FROM {table}", conn, chunksize=100_000):
        part = pa.Table.from_pandas(chunk, preserve_index=False)
        writer = writer or pq.ParquetWriter(out, part.schema)
        writer.write_table(part)
        rows += len(chunk)
writer.close()
print(rows)
""",
    "adbc": """
import sys, adbc_driver_postgresql.dbapi as dbapi, pyarrow.parquet as pq
url, table, out = sys.argv[1:4]
rows = 0
with dbapi.connect(url) as conn, conn.cursor() as cursor:
    cursor.execute(f"SELECT * FROM {table}")
    reader = cursor.fetch_record_batch()
    with pq.ParquetWriter(out, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
print(rows)
""",
    "connectorx": """
import sys, connectorx as cx, pyarrow.parquet as pq
url, table, out = sys.argv[1:4]
result = cx.read_sql(url, f"SELECT * FROM {table}", return_type="arrow")
pq.write_table(result, out)
print(result.num_rows)
""",
    "duckdb": """
import sys, duckdb
url, table, out = sys.argv[1:4]
try:
    from duckdb_extensions import extension_importer
    extension_importer.import_extension("postgres_scanner")
except Exception as exc:
    print(f"unavailable: the postgres scanner extension did not install ({exc})", file=sys.stderr)
    sys.exit(3)
con = duckdb.connect()
try:
    con.execute("LOAD postgres_scanner")
except duckdb.Error as exc:
    print(f"unavailable: the postgres scanner extension did not load ({exc})", file=sys.stderr)
    sys.exit(3)
con.execute(f"ATTACH '{url}' AS pg (TYPE postgres, READ_ONLY)")
con.execute(f"COPY (SELECT * FROM pg.public.{table}) TO '{out}' (FORMAT parquet)")
print(con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0])
""",
}
PEER_CODE["adbc-1.8"] = PEER_CODE["adbc"]


@dataclass
class Measured:
    target: str
    rows: int
    seconds: float
    peak_mb: float
    note: str = ""
    inner: float | None = None  # modelyard: the import's own seconds, without the CLI's start

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


# Every timed process runs under this prelude, which writes its peak RSS (VmHWM) when it exits:
# the rusage of a child would count the RSS of this (larger) process it was forked from.
PEAK_PRELUDE = """
import atexit, os, runpy, sys
def _peak():
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    with open(os.environ["BENCH_PEAK_FILE"], "w") as out:
        out.write(str(kb))
atexit.register(_peak)
target, sys.argv = sys.argv[1], sys.argv[1:]
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def timed(
    python: str, argv: list[str], env: dict[str, str] | None = None
) -> tuple[float, float, str, str, int]:
    """Run ``python`` on ``argv`` (a script or a module, then its arguments); the wall seconds,
    the peak RSS in MB, stdout, stderr and exit code."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as peak,
    ):
        env = {**(env or os.environ), "BENCH_PEAK_FILE": peak.name}
        began = time.perf_counter()
        done = subprocess.run([python, "-c", PEAK_PRELUDE, *argv], stdout=out, stderr=err, env=env)
        seconds = time.perf_counter() - began
        out.seek(0)
        err.seek(0)
        text = peak.read().strip()
        return (
            seconds,
            int(text) / 1024 if text else 0.0,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            done.returncode,
        )


def parquet_rows(path: Path) -> int:
    import pyarrow.dataset as ds

    return int(ds.dataset(path, format="parquet").count_rows())


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def make_table(url: str, rows: int) -> str:
    table = f"bench_events_{rows}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(
            f"CREATE TABLE {table} (id int8 PRIMARY KEY, user_id int4, amount float8, "
            "score float4, kind text, at timestamptz, flag bool)"
        )
        conn.execute(
            f"INSERT INTO {table} SELECT g, (g * 7919) % 100000, g * 0.01, (g % 1000) / 7.0, "
            "'kind-' || (g % 16), timestamptz '2026-01-01' + g * interval '1 second', g % 3 = 0 "
            f"FROM generate_series(1::int8, {rows}) g"
        )
        conn.execute(f"VACUUM ANALYZE {table}")
    return table


class Modelyard:
    """``modelyard up`` on a temporary home; imports through the CLI of this venv."""

    def __init__(self, work: Path, connections: dict[str, dict[str, str]]) -> None:
        self.home, self.port = work / "home", free_port()
        self.env = {
            **os.environ,
            "MODELYARD_HOME": str(self.home),
            "MODELYARD_API_PORT": str(self.port),
            "MODELYARD_GATEWAY_PORT": str(free_port()),
            "MODELYARD_CONNECTIONS": json.dumps(connections),
        }
        self.process = subprocess.Popen(
            [str(BIN / "modelyard"), "up"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def created() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError("modelyard up did not start")
            argv = [str(BIN / "modelyard"), "namespaces", "create", "bench"]
            done = subprocess.run(argv, env=self.env, capture_output=True)
            return done.returncode in (0, 4)  # 4: it exists already

        wait_for(created, 60, "modelyard up to start", 0.5)
        self.env["MODELYARD_API_KEY"] = (self.home / "admin.key").read_text().strip()

    def run(self, target: str, dataset: str, connection: str, query: str, *extra: str) -> Measured:
        argv = ["modelyard", "datasets", "import-sql", f"bench/{dataset}"]
        argv += ["--connection", connection, "--query", query, "--json", *extra]
        seconds, peak, out, err, code = timed(sys.executable, argv, self.env)
        if code != 0:
            raise RuntimeError(f"{target}: {err.strip() or out.strip()}")
        result = json.loads(out)
        version = result["version"]
        note = result["engine"] + ("" if version and result["committed"] else ", nothing committed")
        return Measured(target, int(result["rows"]), seconds, peak, note, float(result["seconds"]))

    def folder(self, dataset: str) -> Path:
        """Where the latest version's parts are (pulled: the same check as for the peers)."""
        argv = [str(BIN / "modelyard"), "datasets", "pull", f"bench/{dataset}"]
        out = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=True)
        return Path(out.stdout.strip().rsplit(" is in ", 1)[1])

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


def run_peer(peer: str, url: str, table: str, work: Path) -> Measured | str:
    try:
        python, _ = ensure_venv(VENV_OF[peer], REQUIREMENTS[VENV_OF[peer]])
    except RuntimeError as exc:
        return f"not installable here: {exc}"
    script = work / f"peer-{peer}.py"  # not pandas.py: it would import itself
    script.write_text(PEER_CODE[peer])
    out = work / f"{peer}.parquet"
    seconds, peak, stdout, stderr, code = timed(str(python), [str(script), url, table, str(out)])
    if code == 3:
        return stderr.strip()
    if code != 0:
        return "failed: " + " | ".join(stderr.strip().splitlines()[-3:])
    rows = parquet_rows(out)
    out.unlink()
    assert rows == int(stdout.strip().splitlines()[-1]), (peer, rows, stdout)
    return Measured(peer, rows, seconds, peak)


def median(runs: list[Measured]) -> Measured:
    """The median run (of an even count, the slower of the middle two)."""
    return sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]


def show(rows: int, results: list[Measured], skipped: dict[str, str]) -> None:
    pandas = next((r for r in results if r.target == "pandas"), None)
    print(f"\n[{rows:,} rows] each target in its own process, timed from spawn to exit")
    print(
        f"  {'target':34} {'wall s':>8} {'rows/s':>12} {'peak MB':>9} {'vs pandas':>9} "
        f"{'import s':>9}  note"
    )
    for r in results:
        versus = f"{r.rate / pandas.rate:8.2f}x" if pandas and pandas.rate else f"{'-':>9}"
        inner = f"{r.inner:9.2f}" if r.inner is not None else f"{'':9}"
        print(
            f"  {r.target:34} {r.seconds:8.2f} {r.rate:12,.0f} {r.peak_mb:9.0f} {versus} "
            f"{inner}  {r.note}"
        )
    print("  (import s: the import's own time inside the CLI process, without its start-up)")
    for target, why in skipped.items():
        print(f"  {target:34} skipped: {why}")


def goal(label: str, value: float, limit: float, lower_is_better: bool, unit: str = "x") -> None:
    met = value <= limit if lower_is_better else value >= limit
    sign = "<=" if lower_is_better else ">="
    print(
        f"  {label:58} {value:8.2f}{unit}  goal {sign} {limit:g}{unit}  {'MET' if met else 'MISS'}"
    )


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--rows", default="1000000,10000000", help="sizes, comma-separated")
    parser.add_argument("--peers", default=",".join((*PEERS, "modelyard")))
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of the default engine, each pooler and each peer under 30 s",
    )
    parser.add_argument(
        "--database",
        default=os.environ.get("MODELYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.rows.split(",")]
    chosen = set(args.peers.split(","))
    print(
        f"modelyard warehouse benchmark: {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    with psycopg.connect(args.database, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
        version = conn.execute("SHOW server_version").fetchone()
        print(f"PostgreSQL {version[0] if version else '?'} at {args.database}")
    url = with_database(args.database, DATABASE)
    work = Path(tempfile.mkdtemp(prefix="modelyard-bench-warehouse-"))
    poolers = []
    platform_ = None
    by_size: dict[int, list[Measured]] = {}
    try:
        if "modelyard" in chosen:
            for name in ("pgbouncer", "pgpool"):
                if find_tool(name) is None:
                    print(f"{name}: not installed ('make tools'); its rows are skipped")
                    continue
                poolers.append(
                    start_pgbouncer(url, None) if name == "pgbouncer" else start_pgpool(url)
                )
            connections = {
                "wh": {"url": url},
                **{f"wh-{e}": {"url": url, "engine": e} for e in ("adbc", "psycopg")},
                "wh-sqlalchemy": {
                    "url": url.replace("postgresql://", "postgresql+psycopg://", 1),
                    "engine": "sqlalchemy",
                },
                **{f"wh-{p.name}": {"url": p.url(DATABASE)} for p in poolers},
            }
            platform_ = Modelyard(work, connections)
        for rows in sizes:
            table = make_table(url, rows)
            query = f"SELECT * FROM {table}"
            results: list[Measured] = []
            skipped: dict[str, str] = {}
            for peer in PEERS:
                if peer not in chosen:
                    continue
                print(f"  {rows:,} rows: {peer} ...", flush=True)
                outcome = run_peer(peer, url, table, work)
                if isinstance(outcome, str):
                    skipped[peer] = outcome
                    continue
                tries = [outcome]
                # A peer as fast as modelyard is run as often, and keeps its median too.
                while outcome.seconds < REPEAT_UNDER and len(tries) < args.repeat:
                    again = run_peer(peer, url, table, work)
                    assert not isinstance(again, str), again
                    tries.append(again)
                results.append(median(tries))
            if platform_ is not None:
                split = ("--split-by", "id", "--parallel", str(SPLIT))
                compared = [(DEFAULT, "wh", ()), (SPLIT_TARGET, "wh", split)]
                compared += [(f"modelyard via {p.name}", f"wh-{p.name}", ()) for p in poolers]
                engines = [(f"modelyard engine {e}", f"wh-{e}", ()) for e in ENGINES]
                runs: dict[str, list[Measured]] = {}
                rounds = [compared] * max(1, args.repeat) + [engines]
                for i, (target, connection, extra) in enumerate(t for r in rounds for t in r):
                    print(f"  {rows:,} rows: {target} ...", flush=True)
                    dataset = f"events-{rows}-{i}"
                    measured = platform_.run(target, dataset, connection, query, *extra)
                    assert parquet_rows(platform_.folder(dataset)) == rows, target
                    runs.setdefault(target, []).append(measured)
                for target, _, _ in compared + engines:
                    results.append(median(runs[target]))
                print(f"  {rows:,} rows: modelyard incremental ...", flush=True)
                full = platform_.run(
                    "modelyard incremental, full", f"inc-{rows}", "wh", query, "--watermark", "id"
                )
                more = max(1, rows // 100)
                results.append(full)
                # The first increment recounts the first import's tail window for late rows;
                # the next one the increment before it.
                for n, target in enumerate(("+1% rows", "+1% rows again")):
                    first = rows + n * more + 1
                    with psycopg.connect(url, autocommit=True) as conn:
                        conn.execute(
                            f"INSERT INTO {table} SELECT g, g % 100000, g * 0.01, 1.0, 'new', "
                            f"now(), true FROM generate_series({first}, {first + more - 1}) g"
                        )
                    new = platform_.run(
                        f"modelyard incremental, {target}",
                        f"inc-{rows}",
                        "wh",
                        query,
                        "--watermark",
                        "id",
                    )
                    assert new.rows == more, (new.rows, more)
                    results.append(new)
            show(rows, results, skipped)
            by_size[rows] = results
        summarize(by_size)
    finally:
        if platform_ is not None:
            platform_.stop()
        for pooler in poolers:
            pooler.stop()
        shutil.rmtree(work, ignore_errors=True)
        with psycopg.connect(args.database, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def summarize(by_size: dict[int, list[Measured]]) -> None:
    print("\ngoals")
    for rows, results in by_size.items():
        named = {r.target: r for r in results}
        default = named.get(DEFAULT)
        if default is None:
            continue
        peers = [r for r in results if r.target in PEERS]
        if "pandas" in named:
            goal(
                f"{rows:,} rows: default rows/s vs pandas read_sql",
                default.rate / named["pandas"].rate,
                SPEEDUP_GOAL,
                False,
            )
        if peers:
            fastest = max(peers, key=lambda r: r.rate)
            goal(
                f"{rows:,} rows: fastest peer ({fastest.target}) rows/s vs default",
                fastest.rate / default.rate,
                PEER_GOAL,
                True,
            )
            if SPLIT_TARGET in named:
                goal(
                    f"{rows:,} rows: fastest peer ({fastest.target}) vs default, split read",
                    fastest.rate / named[SPLIT_TARGET].rate,
                    PEER_GOAL,
                    True,
                )
        full = named.get("modelyard incremental, full")
        for which in ("+1% rows", "+1% rows again"):
            new = named.get(f"modelyard incremental, {which}")
            if not (full and new):
                continue
            goal(
                f"{rows:,} rows: {which} incremental / full, CLI process wall",
                new.seconds / full.seconds,
                INCREMENTAL_GOAL,
                True,
            )
            if full.inner and new.inner:
                goal(
                    f"{rows:,} rows: {which} incremental / full, the imports' own time",
                    new.inner / full.inner,
                    INCREMENTAL_GOAL,
                    True,
                )
        for name in ("pgbouncer", "pgpool"):
            pooled = named.get(f"modelyard via {name}")
            if pooled:
                goal(
                    f"{rows:,} rows: via {name}, time over direct - 1",
                    pooled.seconds / default.seconds - 1,
                    POOLER_GOAL,
                    True,
                )
    sizes = sorted(by_size)
    if len(sizes) > 1:
        peaks = [
            next((r.peak_mb for r in by_size[s] if r.target == DEFAULT), 0.0)
            for s in (sizes[0], sizes[-1])
        ]
        if all(peaks):
            goal(
                f"peak memory {sizes[-1]:,} rows / {sizes[0]:,} rows (default engine)",
                peaks[1] / peaks[0],
                MEMORY_GOAL,
                True,
            )


if __name__ == "__main__":
    main()
