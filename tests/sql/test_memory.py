"""Bounded memory: an import streams its result into parts whatever the row count.

The import runs in its own process (the SDK, as a user's script would), over a table far larger
than a part, and its peak resident memory is read as it exits. Before the ADBC engine moved bound
values out of the streamed statement, a query with a bound value (every incremental window, any
``:param``) was read whole into memory by the driver, twice over (libpq's result, then Arrow).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.api.server import BackgroundServer
from modelyard.sql.parts import prefetched
from tests.sql.conftest import Pg

ROWS = 400_000
TEXT_BYTES = 512  # per row: the table holds ~200 MB of text, a part 4 MB
# Growth of the peak RSS over the process's once its modules are loaded: a streamed import
# holds a few batches and a row group (about 120 MB here), the whole result read at once took
# about 480 MB.
BOUND = 220 << 20

SCRIPT = """
import json, resource, sys
import adbc_driver_manager, adbc_driver_postgresql, pyarrow.parquet
from modelyard.client import Client
from modelyard.settings import Settings
from modelyard.sql import parts
from modelyard.sql.connections import Connection
from modelyard.sql.source import Incremental, SqlSource
from modelyard.sql.snapshot import import_sql

parts.PART_BYTES = parts.ROW_GROUP_BYTES = 4 << 20
url, token, home, warehouse = sys.argv[1:5]
settings = Settings(home=home, url=url)
settings.connections["pg"] = Connection(url=warehouse)
source = SqlSource(
    connection="pg",
    query="SELECT * FROM wide WHERE id > :floor",
    params={"floor": 0},
    incremental=Incremental(column="id"),
    batch_rows=20_000,
)
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with Client(url, token, settings=settings, cache_dir=home + "/cache") as client:
    result = client.import_sql("team/wide", source)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
files = len(result.version.files)
print(json.dumps({"rows": result.rows, "files": files, "growth": peak - loaded}))
"""


def test_an_import_far_larger_than_a_part_stays_in_bounded_memory(
    server: BackgroundServer, pg: Pg, tmp_path: Path
) -> None:
    pg.execute(
        f"CREATE TABLE wide AS SELECT g::int8 AS id, repeat(md5(g::text), {TEXT_BYTES // 32}) "
        f"AS body FROM generate_series(1, {ROWS}) g"
    )
    token = server.plane.settings.admin_key_path.read_text().strip()
    args = [server.url, token, str(tmp_path / "home"), pg.url]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["rows"] == ROWS and outcome["files"] > 10
    assert outcome["growth"] < BOUND, f"the peak RSS grew by {outcome['growth'] >> 20} MB"


def test_batches_read_ahead_in_a_thread_keep_errors_and_stop_with_the_writer() -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("the driver failed")

    got: list[int] = []
    with pytest.raises(ValueError, match="the driver failed"):
        got.extend(prefetched(failing()))
    assert got == [1, 2]

    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            yield from itertools.count()
        finally:
            closed.set()

    reading = prefetched(endless(), ahead=2)
    assert [next(reading) for _ in range(3)] == [0, 1, 2]
    reading.close()  # what a failed or timed-out import does: the reader is gone on return
    assert closed.is_set()
    assert not any(t.name == "modelyard-sql-read" for t in threading.enumerate())
