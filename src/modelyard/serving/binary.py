"""The Open Inference Protocol's binary tensor data extension: tensors as raw bytes after the JSON.

A body that carries tensor data this way starts with the JSON document, whose length in bytes
the ``Inference-Header-Content-Length`` HTTP header gives; each tensor sent as binary has
``"parameters": {"binary_data_size": n}`` instead of ``data``, and the tensors' bytes follow the
JSON, in the order of the tensors. Values are little-endian and row-major without padding; a BOOL
is one byte (0 or 1); a BYTES element is its length as a 4-byte little-endian unsigned integer
followed by its bytes. Triton's and KServe's Python clients send tensors this way by default, and
it is the only way to send FP16 values or bytes that are not text exactly.

This module converts one tensor and hands a request's binary data to its inputs in order;
`modelyard.serving.protocol` decodes and encodes whole bodies with it.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from modelyard.errors import InvalidInput

HEADER = b"inference-header-content-length"
"""The HTTP header (lower-case, as ASGI gives header names) with the JSON document's length."""
CONTENT_TYPE = b"application/octet-stream"
"""The content type of a response with binary outputs, as Triton sends it."""
_LENGTH = struct.Struct("<I")


def header_length(value: bytes, body_size: int) -> int:
    """The JSON document's length from the header's ``value``, checked against the body."""
    if not value.isdigit():
        raise InvalidInput(
            f"Inference-Header-Content-Length is {value.decode(errors='replace')!r}: "
            "it must be the length in bytes of the JSON document at the start of the body"
        )
    length = int(value)
    if length > body_size:
        raise InvalidInput(
            f"Inference-Header-Content-Length is {length} but the body has only {body_size} "
            "bytes: it must be the length in bytes of the JSON document at the start of the body"
        )
    return length


def header(length: int) -> tuple[bytes, bytes]:
    """The response header that says the JSON document is ``length`` bytes long."""
    return HEADER, str(length).encode()


def decode(
    raw: memoryview, dtype: np.dtype[Any], datatype: str, shape: list[int], what: str
) -> np.ndarray:
    """The tensor of ``shape`` whose binary data is ``raw``: ``dtype`` in native byte order,
    writable (a model may change its input in place, as it may a JSON one's)."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return _decode_bytes(bytes(raw), count, what).reshape(shape)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"{what} is {datatype} of shape {shape}, which is {expected} bytes of binary data, "
            f"but its binary_data_size is {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
    if datatype == "BOOL" and count and array.view(np.uint8).max() > 1:
        raise InvalidInput(f"{what} is BOOL but its binary data holds bytes other than 0 and 1")
    return array.astype(dtype).reshape(shape)  # a copy: native order, writable


def encode(array: np.ndarray, datatype: str) -> bytes:
    """``array``'s binary data as an output of ``datatype`` (its OIP datatype)."""
    if datatype != "BYTES":
        return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    parts: list[bytes] = []
    for item in array.reshape(-1).tolist():
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


class Tail:
    """A request's binary data, after its JSON document, handed to its inputs in their order."""

    def __init__(self, data: memoryview, header_length: int | None) -> None:
        self.data = data
        self.header_length = header_length
        self.offset = 0

    def take(self, size: Any, what: str) -> memoryview:
        """The next ``size`` bytes, the binary data of the input ``what``."""
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(
                f"{what} has binary_data_size {size!r}: send the length in bytes of its binary data"
            )
        if self.header_length is None:
            raise InvalidInput(
                f"{what} has binary_data_size but the request has no "
                "Inference-Header-Content-Length header: send the JSON document's length in "
                "bytes in it, and the inputs' binary data after the JSON"
            )
        end = self.offset + size
        if end > len(self.data):
            raise InvalidInput(
                f"{what} has binary_data_size {size} but only {len(self.data) - self.offset} "
                "bytes of binary data are left for it after the JSON document "
                f"(Inference-Header-Content-Length {self.header_length}) and the inputs before it"
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def finish(self) -> None:
        """Check that the inputs took all of the binary data."""
        if self.offset != len(self.data):
            raise InvalidInput(
                f"the body has {len(self.data)} bytes after the JSON document "
                f"(Inference-Header-Content-Length {self.header_length}) but the inputs' "
                f"binary_data_size add up to {self.offset}: send each binary input's exact "
                "size, and nothing else after the JSON"
            )


def _decode_bytes(raw: bytes, count: int, what: str) -> np.ndarray:
    """BYTES elements as ``str`` when every one is UTF-8 (as a JSON request gives them, so a
    model sees the same input whichever way the client sent it), else as ``bytes``."""
    items: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + _LENGTH.size > end or len(items) == count:
            break
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > end:
            raise InvalidInput(
                f"{what} has a BYTES element of {length} bytes at byte {offset} but its binary "
                f"data ends at byte {end}: each element is a 4-byte little-endian length, then "
                "that many bytes"
            )
        items.append(raw[offset : offset + length])
        offset += length
    if len(items) != count or offset != end:
        raise InvalidInput(
            f"{what} holds {count} BYTES element(s) by its shape but its {end} bytes of binary "
            "data do not hold exactly that many: each element is a 4-byte little-endian length, "
            "then that many bytes"
        )
    values: list[Any]
    try:
        values = [item.decode() for item in items]
    except UnicodeDecodeError:
        values = items
    array = np.empty(count, dtype=object)
    array[:] = values
    return array
