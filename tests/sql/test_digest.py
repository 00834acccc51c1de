"""The content digest: the data's, not its batches' or buffers'."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pyarrow as pa

from modelyard.sql.digest import ContentDigest

TABLE = pa.table(
    {
        "i": pa.array([1, None, 3, 4, None, 6] * 50, pa.int64()),
        "s": pa.array(["a", None, "ccc", "", None, "x"] * 50),
        "b": pa.array([True, None, False, True, False, None] * 50),
        "d": pa.array([decimal.Decimal("1.10"), None] * 150, pa.decimal128(10, 2)),
        "t": pa.array(
            [dt.datetime(2024, 1, 1, tzinfo=dt.UTC), None] * 150, pa.timestamp("us", "UTC")
        ),
        "l": pa.array([[1, None], None, [], [3]] * 75, pa.list_(pa.int32())),
        "u": pa.array([uuid.UUID(int=5).bytes, None] * 150, pa.uuid()),
        "j": pa.array(['{"a": 1}', None] * 150, pa.json_()),
        "st": pa.array([{"x": 1, "y": "a"}, None, {"x": None, "y": None}] * 100),
    }
)


def digest(batches: list[pa.RecordBatch], schema: pa.Schema = TABLE.schema) -> str:
    running = ContentDigest(schema)
    for batch in batches:
        running.update(batch)
    return running.hexdigest()


def test_the_digest_does_not_depend_on_batch_boundaries() -> None:
    whole = digest(TABLE.to_batches())
    pieces = [b for k in range(0, 300, 13) for b in TABLE.slice(k, 13).to_batches()]
    assert digest(pieces) == whole
    assert digest(TABLE.slice(0, 7).to_batches() + TABLE.slice(7).to_batches()) == whole


def test_bytes_under_nulls_do_not_count_but_every_value_does() -> None:
    schema = pa.schema([pa.field("i", pa.int64())])
    validity = pa.py_buffer(bytes([0b101]))
    garbage = [
        pa.Array.from_buffers(
            pa.int64(), 3, [validity, pa.py_buffer(pa.array([7, x, 9]).buffers()[1])]
        )
        for x in (0, 12345)
    ]
    one, two = (digest([pa.record_batch([a], schema=schema)], schema) for a in garbage)
    assert one == two
    changed = pa.record_batch([pa.array([7, None, 10], pa.int64())], schema=schema)
    assert digest([changed], schema) != one
    renamed = pa.schema([pa.field("j", pa.int64())])
    assert digest([pa.record_batch([garbage[0]], schema=renamed)], renamed) != one
    fewer = TABLE.slice(0, 299)
    assert digest(fewer.to_batches()) != digest(TABLE.to_batches())
