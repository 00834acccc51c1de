"""The digest of a query's result: its schema and its values, not the bytes of any file.

Parquet bytes change with the writer's version, the compression and where row groups end, and an
Arrow buffer holds undefined bytes under its nulls and after its last bit; none of that is the
data. So each column is hashed in a canonical form, streamed batch by batch:

- validity: one byte per value (1 present, 0 null);
- fixed-width values (numbers, timestamps, decimals, UUIDs): their bytes, nulls set to zero;
- booleans: one byte per value;
- strings and binaries: each value's length (8 bytes), then the bytes of all values;
- lists: each list's length, then the values of the lists, recursively; structs: each field.

Every stream is one running sha256, and bytes fed in pieces hash as when fed at once, so the
digest does not depend on how the driver cut the result into batches. The digest covers the order
of the rows: a query that should digest the same after the table is rewritten needs an ORDER BY.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modelyard.errors import InvalidInput

VERSION = "modelyard-arrow-digest-1"


def schema_text(schema: pa.Schema) -> str:
    """Names and types, in order: what the digest and a version record of a schema."""
    return "\n".join(f"{f.name}\0{f.type}" for f in schema)


class ContentDigest:
    """A running digest of record batches of one schema."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.rows = 0
        self._streams: dict[str, Any] = {}

    def update(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        for i, field in enumerate(self.schema):
            self._column(f"{i}", batch.column(i), field.type)

    def hexdigest(self) -> str:
        total = hashlib.sha256(f"{VERSION}\n{schema_text(self.schema)}\n{self.rows}\n".encode())
        for key in sorted(self._streams):
            total.update(f"{key}\0{self._streams[key].hexdigest()}\n".encode())
        return total.hexdigest()

    def _feed(self, key: str, data: Any) -> None:
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = hashlib.sha256()
        stream.update(data)

    def _column(self, key: str, array: pa.Array, type: pa.DataType) -> None:
        if isinstance(type, pa.BaseExtensionType):
            array, type = array.storage, type.storage_type
        if pa.types.is_dictionary(type):
            array = array.dictionary_decode()
            type = array.type
        if array.null_count:
            self._feed(f"{key}/valid", _values(pc.cast(pc.is_valid(array), pa.uint8())))
        else:
            self._feed(f"{key}/valid", np.ones(len(array), np.uint8))
        if pa.types.is_null(type):
            return
        if pa.types.is_boolean(type):
            values = pc.cast(pc.fill_null(array, _zero(type)), pa.uint8())
            self._feed(f"{key}/values", _values(values))
        elif _variable_width(type):
            self._binary(key, array, type)
        elif pa.types.is_list(type) or pa.types.is_large_list(type):
            lengths = pc.list_value_length(array)
            lengths = pc.fill_null(lengths, _zero(lengths.type)).cast(pa.int64())
            self._feed(f"{key}/lengths", _values(lengths))
            self._column(f"{key}.item", pc.list_flatten(array), type.value_type)
        elif pa.types.is_fixed_size_list(type):
            self._column(f"{key}.item", pc.list_flatten(array), type.value_type)
        elif pa.types.is_struct(type):
            for i, child in enumerate(array.flatten()):
                self._column(f"{key}.{i}", child, type.field(i).type)
        elif _fixed_width(type):
            self._fixed(key, array, type)
        else:
            raise InvalidInput(f"cannot digest a column of type {type}")

    def _fixed(self, key: str, array: pa.Array, type: pa.DataType) -> None:
        if array.null_count:
            # Undefined bytes sit under nulls: replace the nulls by the all-zero value.
            array = pc.fill_null(array, _zero(type))
        self._feed(f"{key}/values", _values(array))

    def _binary(self, key: str, array: pa.Array, type: pa.DataType) -> None:
        if array.null_count:
            array = pc.fill_null(array, _zero(type))
        large = pa.types.is_large_string(type) or pa.types.is_large_binary(type)
        dtype = np.int64 if large else np.int32
        offsets = np.frombuffer(
            array.buffers()[1], dtype, len(array) + 1, array.offset * dtype().itemsize
        )
        self._feed(f"{key}/lengths", np.subtract(offsets[1:], offsets[:-1], dtype=np.int64))
        data = array.buffers()[2]
        if data is not None and len(array):
            self._feed(f"{key}/values", memoryview(data)[int(offsets[0]) : int(offsets[-1])])


def _values(array: pa.Array) -> memoryview:
    """The bytes of a fixed-width array without nulls (its values buffer, from its offset).
    Not ``to_numpy``: that imports pandas for booleans (a fifth of a second)."""
    width = array.type.byte_width
    start = array.offset * width
    return memoryview(array.buffers()[1])[start : start + len(array) * width]


def _zero(type: pa.DataType) -> pa.Scalar:
    """The all-zero value of a fixed-width type, False, or the empty string: what a null is
    hashed as. Made from buffers: ``pa.scalar`` would import pandas (a fifth of a second)."""
    if _variable_width(type):
        large = pa.types.is_large_string(type) or pa.types.is_large_binary(type)
        offsets = pa.py_buffer(bytes(16 if large else 8))
        return pa.Array.from_buffers(type, 1, [None, offsets, pa.py_buffer(b"")])[0]
    width = 1 if pa.types.is_boolean(type) else type.byte_width
    return pa.Array.from_buffers(type, 1, [None, pa.py_buffer(bytes(width))])[0]


def _variable_width(type: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(type)
        or pa.types.is_large_string(type)
        or pa.types.is_binary(type)
        or pa.types.is_large_binary(type)
    )


def _fixed_width(type: pa.DataType) -> bool:
    try:
        return bool(type.byte_width > 0)
    except ValueError:
        return False
