"""Replica log lines: stamping, parsing, ``since`` values, and local log files read, merged,
tailed and followed (real files in a tmp dir)."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from modelyard.errors import BadRequest, NotFound
from modelyard.serving.deployment_logs import batches
from modelyard.serving.logfiles import LogFiles
from modelyard.serving.logs import LogLine, StampedWriter, parse_since, parse_time, stamp

T0 = dt.datetime(2026, 12, 6, 14, 0, 0, tzinfo=dt.UTC)
LINE = LogLine(T0, "r-1", "hello")


def at(seconds: float) -> str:
    return stamp(T0 + dt.timedelta(seconds=seconds))


def test_stamped_writer_starts_every_line_with_its_time() -> None:
    out = io.StringIO()
    writer = StampedWriter(out)
    writer.write("one\ntw")
    writer.write("o\nthree\n")
    lines = out.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["one", "two", "three"]
    for line in lines:
        parse_time(line.split(" ", 1)[0])  # RFC 3339


def test_line_format_round_trips_and_kubernetes_nanoseconds_parse() -> None:
    line = LogLine(T0, "iris-00001-ab12cd", "INFO model hello  world")
    assert LogLine.parse(line.format()) == line
    assert parse_time("2026-12-06T14:00:00.123456789Z") == T0.replace(microsecond=123456)
    assert parse_time("2026-12-06T14:00:00Z") == T0
    assert parse_time("2026-12-06T14:00:00") == T0  # naive: UTC


def test_since_takes_durations_and_times() -> None:
    assert parse_since("10m", T0) == T0 - dt.timedelta(minutes=10)
    assert parse_since("1.5h", T0) == T0 - dt.timedelta(minutes=90)
    assert parse_since("2026-12-06T13:00:00+01:00") == T0 - dt.timedelta(hours=2)
    for bad in ["yesterday", "10 minutes", "-5m", "", "99999999999999d", "0000-01-01T00:00:00"]:
        with pytest.raises(BadRequest, match="neither a duration"):
            parse_since(bad, T0)


def files(tmp_path: Path) -> LogFiles:
    logs = LogFiles(tmp_path)
    logs.register("a-1", "rev-a")
    logs.register("b-1", "rev-b")
    logs.register("a-2", "rev-a")
    (tmp_path / "a-1.log").write_text(
        f"{at(0)} first\n{at(2)} Traceback:\n  File x\nValueError\n{at(4)} after\n{at(5)} part"
    )
    (tmp_path / "a-2.log").write_text(f"{at(1)} second replica\n{at(3)} again\n")
    (tmp_path / "b-1.log").write_text(f"{at(1.5)} other revision\n")
    return logs


def texts(batch: list[LogLine]) -> list[str]:
    return [f"{line.replica}:{line.text}" for line in batch]


def test_merged_in_time_order_with_unstamped_lines_kept_in_place(tmp_path: Path) -> None:
    (batch,) = files(tmp_path).read(["rev-a"])
    assert texts(batch) == [
        "a-1:first",
        "a-2:second replica",
        "a-1:Traceback:",
        "a-1:  File x",  # the time of the line that announced it, and its place
        "a-1:ValueError",
        "a-2:again",
        "a-1:after",  # "part" is not complete yet
    ]
    (both,) = files(tmp_path).read(["rev-a", "rev-b"])
    assert "b-1:other revision" in texts(both)


def test_tail_since_and_replica(tmp_path: Path) -> None:
    logs = files(tmp_path)
    (batch,) = logs.read(["rev-a"], tail=2)
    assert texts(batch) == ["a-2:again", "a-1:after"]
    (batch,) = logs.read(["rev-a"], tail=4)
    assert texts(batch) == ["a-1:  File x", "a-1:ValueError", "a-2:again", "a-1:after"]
    (batch,) = logs.read(["rev-a"], since=T0 + dt.timedelta(seconds=2.5))
    assert texts(batch) == ["a-2:again", "a-1:after"]
    (batch,) = logs.read(["rev-a"], replica="a-2", tail=0)
    assert batch == []
    (batch,) = logs.read(["rev-a"], replica="a-2")
    assert texts(batch) == ["a-2:second replica", "a-2:again"]
    with pytest.raises(NotFound, match="b-1"):
        next(logs.read(["rev-a"], replica="b-1"))


def test_tail_reads_only_the_end_of_a_long_file(tmp_path: Path) -> None:
    logs = LogFiles(tmp_path)
    logs.register("big", "rev")
    (tmp_path / "big.log").write_text("".join(f"{at(n)} line {n}\n" for n in range(20000)))
    (batch,) = logs.read(["rev"], tail=3)
    assert texts(batch) == ["big:line 19997", "big:line 19998", "big:line 19999"]


def test_follow_sees_new_lines_and_new_replicas(tmp_path: Path) -> None:
    logs = files(tmp_path)
    following = logs.read(["rev-a"], tail=1, follow=True)
    assert texts(next(following)) == ["a-1:after"]
    with open(tmp_path / "a-1.log", "a") as out:
        out.write(f" done\n{at(6)} later\n")
    logs.register("a-3", "rev-a")
    (tmp_path / "a-3.log").write_text(f"{at(7)} newcomer\n")
    seen: list[str] = []
    for batch in following:
        seen += texts(batch)
        if len(seen) >= 3:
            break
    following.close()
    assert seen == ["a-1:part done", "a-1:later", "a-3:newcomer"]


def test_a_follower_stops_when_its_client_left_and_closes_the_iterator() -> None:
    closed: list[bool] = []
    asked: list[bool] = []

    def following() -> Iterator[list[LogLine]]:
        try:
            while True:
                yield []  # nothing written: what a quiet follower yields every second
        finally:
            closed.append(True)

    async def gone() -> bool:
        asked.append(True)
        return len(asked) == 3

    async def read() -> list[list[LogLine]]:
        return [batch async for batch in batches([LINE], following(), gone)]

    assert anyio.run(read) == [[LINE], [], []]
    assert closed == [True]
