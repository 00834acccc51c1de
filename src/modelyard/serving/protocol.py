"""KServe's Open Inference Protocol (v2) and the v1 ``:predict`` protocol: the body codecs.

This is the hot path of the model server, so values are checked with numpy on whole arrays: orjson
parses the body, ``np.asarray`` turns each ``data`` list into one array, and the datatype checks
(kind, integer bounds, float overflow) run vectorised. Only BYTES tensors are checked element by
element, because numpy silently turns numbers into strings when they are mixed with strings.

Tensors may also travel as raw bytes after the JSON document (the binary tensor data extension,
`modelyard.serving.binary`), in requests and, when the request asks, in responses. A request may
send a lossless widening of a model's datatype (FP32 for FP64, INT32 for INT64), and one row of a
model that takes ``[-1, 4]`` as a flat ``[4]``, as KServe's servers accept them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from modelyard.errors import InvalidInput, ModelyardError
from modelyard.serving import binary

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_BY_DTYPE: dict[np.dtype[Any], str] = {dtype: name for name, dtype in DATATYPES.items()}
_KNOWN = ", ".join(DATATYPES)
# Integers beyond 2**53 are not exact as doubles: a float in an integer tensor is only taken when
# it is whole and below this, so accepting "1.0" never silently changes a value.
_EXACT_FLOAT_INT = 2.0**53
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
# Shared by the requests without binary data: its `take` raises before it changes anything.
_NO_BINARY_DATA = binary.Tail(memoryview(b""), None)
# The datatypes a request may send for a model's: numpy's safe casts, less those from BOOL (true
# is not a number here) and from 64-bit integers to FP64 (not exact beyond 2**53).
_UPCASTS = frozenset(
    (given, wanted)
    for given, given_dtype in DATATYPES.items()
    for wanted, wanted_dtype in DATATYPES.items()
    if given not in (wanted, "BOOL", "BYTES", "INT64", "UINT64")
    and wanted != "BYTES"
    and np.can_cast(given_dtype, wanted_dtype, "safe")
)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model, as OIP model metadata describes it."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Any) -> TensorSpec:
        if not isinstance(d, dict):
            raise InvalidInput(
                f"a tensor spec must be an object like "
                f'{{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}}, got {_show(d)}'
            )
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"tensor spec {_show(d)} needs a non-empty string 'name'")
        datatype = d.get("datatype")
        if not isinstance(datatype, str) or datatype not in DATATYPES:
            raise InvalidInput(
                f"tensor spec {name!r} has unknown datatype {_show(datatype)}: use one of {_KNOWN}"
            )
        shape = d.get("shape")
        if not isinstance(shape, list) or not all(_is_int(n) and n >= -1 for n in shape):
            raise InvalidInput(
                f"tensor spec {name!r} needs 'shape' as a list of integers "
                f"(-1 for any size), got {_show(shape)}"
            )
        return cls(name=name, datatype=datatype, shape=tuple(shape))


@dataclass
class InferRequest:
    """A decoded OIP inference request: inputs are arrays, in the order the request gave them."""

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[str] | None
    parameters: dict[str, Any]
    binary_outputs: dict[str, bool] = field(default_factory=dict)
    """Per requested output, its ``binary_data`` parameter, where it has one."""

    def binary(self, output: str) -> bool:
        """Whether ``output`` goes back as binary data: its own ``binary_data`` parameter, else
        the request's ``binary_data_output``."""
        wanted = self.binary_outputs.get(output)
        return self.parameters.get("binary_data_output") is True if wanted is None else wanted


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype an OIP datatype decodes to (BYTES: ``object`` arrays of ``str``)."""
    dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInput(f"unknown datatype {_show(datatype)}: use one of {_KNOWN}")
    return dtype


def oip_datatype(dtype: np.dtype[Any]) -> str:
    """The OIP datatype of a numpy dtype; strings and objects are BYTES."""
    dtype = np.dtype(dtype)
    name = _BY_DTYPE.get(dtype.newbyteorder("="))
    if name is not None:
        return name
    if dtype.kind in "OUS":
        return "BYTES"
    # Only a model's own outputs reach here, so this is the server's fault, not the client's.
    raise ModelyardError(f"numpy dtype {dtype} has no Open Inference Protocol datatype")


def decode_infer_request(
    body: bytes, inputs: Sequence[TensorSpec], header_length: int | None = None
) -> InferRequest:
    """Decode and validate an OIP ``/infer`` body against the model's input specs.

    ``header_length`` (the ``Inference-Header-Content-Length`` header, see `binary.header_length`)
    says the JSON document is that long and binary tensor data follows it. With no specs (a model
    that describes itself at predict time) any input is accepted.
    """
    if header_length is None:
        document, data = body, _NO_BINARY_DATA
    else:
        document = body[:header_length]
        data = binary.Tail(memoryview(body)[header_length:], header_length)
    request = _load_object(
        document, '{"inputs": [{"name": ..., "shape": ..., "datatype": ..., ...}]}'
    )
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f"'id' must be a string, got {_show(request_id)}")
    parameters = request.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(f"'parameters' must be an object, got {_show(parameters)}")
    tensors = request.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise InvalidInput(
            "the request needs 'inputs': a non-empty list of tensors like "
            '{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}'
        )
    specs = {spec.name: spec for spec in inputs}
    arrays: dict[str, np.ndarray] = {}
    for tensor in tensors:
        name, array = _decode_tensor(tensor, specs, data)
        if name in arrays:
            raise InvalidInput(f"input {name!r} is given twice: send each input once")
        arrays[name] = array
    data.finish()
    missing = [name for name in specs if name not in arrays]
    if missing:
        raise InvalidInput(
            f"missing input(s) {', '.join(map(repr, missing))}: the model takes {_describe(inputs)}"
        )
    outputs, binary_outputs = _requested_outputs(request.get("outputs"))
    return InferRequest(request_id, arrays, outputs, parameters, binary_outputs)


def encode_infer_response(
    model: str,
    version: str | None,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    requested: list[str] | None,
) -> bytes:
    """Encode model outputs as an OIP response; ``requested`` picks (and orders) the outputs."""
    return _encode_response(model, version, request_id, outputs, requested, None)[0]


def encode_infer_answer(
    request: InferRequest, model: str, version: str | None, outputs: Mapping[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """The response to ``request``, with the outputs it asked for as binary data after the JSON
    document; the JSON document's length when there are such outputs (the response's
    ``Inference-Header-Content-Length``), else None."""
    wants_binary = request.binary if request.binary_outputs or request.parameters else None
    return _encode_response(model, version, request.id, outputs, request.outputs, wants_binary)


def decode_v1_request(body: bytes, inputs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Decode a v1 ``{"instances": [...]}`` body into one array for the model's first input."""
    request = _load_object(body, '{"instances": [[1.0, 2.0], [3.0, 4.0]]}')
    key = "instances" if "instances" in request else "inputs"
    rows = request.get(key)
    if not isinstance(rows, list) or not rows:
        raise InvalidInput(
            "a v1 request needs 'instances': a non-empty list of rows, "
            'e.g. {"instances": [[1.0, 2.0], [3.0, 4.0]]}'
        )
    if any(isinstance(row, dict) for row in rows):
        raise InvalidInput(
            "v1 instances must be rows of values, not objects: send "
            '{"instances": [[...], [...]]}, or use the v2 /infer endpoint for named inputs'
        )
    spec = inputs[0] if inputs else None
    name = spec.name if spec is not None else "input-0"
    what = f"input {name!r}"
    try:
        array = np.asarray(rows)
        if spec is None:
            # No signature: numbers become FP64; text stays text (BYTES) rather than failing.
            datatype = "BYTES" if array.dtype.kind == "U" else "FP64"
        else:
            datatype = spec.datatype
        if datatype == "BYTES":
            array = np.asarray(rows, dtype=object)
    except ValueError:
        raise InvalidInput(
            f"v1 instances must all have the same shape: {what} got rows of different lengths"
        ) from None
    array = _typed(array, rows, datatype, what)
    if spec is not None:
        _check_shape(spec, array.shape)
    return {name: array}


def encode_v1_response(outputs: Mapping[str, np.ndarray]) -> bytes:
    """Encode the first output as v1 ``{"predictions": [...]}``, one entry per row."""
    for array in outputs.values():
        if array.dtype.kind in "biuf":
            data: Any = _native(array)
        else:
            data = _decoded(array).tolist()
        return orjson.dumps({"predictions": data}, option=_DUMPS_OPTIONS)
    raise ModelyardError("the model returned no outputs: a v1 response needs at least one")


def encode_error(message: str) -> bytes:
    """The OIP error body."""
    return orjson.dumps({"error": message})


# -- decoding helpers ----------------------------------------------------------------------------


def _load_object(body: bytes, example: str) -> dict[str, Any]:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        hint = (
            "; binary tensor data after the JSON needs the Inference-Header-Content-Length "
            "header, the JSON document's length in bytes"
            if b"binary_data_size" in body
            else ""
        )
        raise InvalidInput(
            f"the body is not valid JSON ({exc}): send an object like {example}{hint}"
        ) from None
    if not isinstance(request, dict):
        raise InvalidInput(f"the body must be a JSON object like {example}, got {_show(request)}")
    return request


def _decode_tensor(
    tensor: Any, specs: Mapping[str, TensorSpec], binary_data: binary.Tail
) -> tuple[str, np.ndarray]:
    if not isinstance(tensor, dict):
        raise InvalidInput(f"each input must be an object, got {_show(tensor)}")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"an input has no 'name' (a non-empty string): {_show(tensor)}")
    what = f"input {name!r}"
    parameters = tensor.get("parameters")
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    for field_name in ("shape", "datatype", "data"):
        if field_name not in tensor and (field_name != "data" or size is None):
            raise InvalidInput(
                f"{what} has no {field_name!r}: each input needs 'name', 'shape', 'datatype' and "
                "'data' (or parameters.binary_data_size, with binary tensor data)"
            )
    if size is not None and "data" in tensor:
        raise InvalidInput(
            f"{what} has both 'data' and parameters.binary_data_size: send its values one way"
        )
    shape = tensor["shape"]
    if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
        raise InvalidInput(
            f"{what} has shape {_show(shape)}: send a list of non-negative integers like [1, 4]"
        )
    datatype = tensor["datatype"]
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInput(f"{what} has unknown datatype {_show(datatype)}: use one of {_KNOWN}")
    spec = specs.get(name)
    if specs and spec is None:
        raise InvalidInput(f"the model has no input {name!r}: it takes {_describe(specs.values())}")
    fitted = shape
    if spec is not None:
        if datatype != spec.datatype and (datatype, spec.datatype) not in _UPCASTS:
            raise InvalidInput(f"{what} is {datatype} but the model takes {spec.datatype}")
        fitted = _fit_shape(spec, shape)
    if size is not None:
        raw = binary_data.take(size, what)
        array = binary.decode(raw, DATATYPES[datatype], datatype, shape, what)
    else:
        array = _from_json(tensor["data"], datatype, shape, what)
    if spec is not None and datatype != spec.datatype:
        array = array.astype(DATATYPES[spec.datatype])
    return name, array.reshape(fitted)


def _from_json(data: Any, datatype: str, shape: list[int], what: str) -> np.ndarray:
    try:
        array = np.asarray(data, dtype=object) if datatype == "BYTES" else np.asarray(data)
    except ValueError:
        raise InvalidInput(
            f"{what} has nested 'data' lists of different lengths: send a flat list in "
            "row-major order, or nested lists that form a full array"
        ) from None
    array = _typed(array, data, datatype, what)
    expected = math.prod(shape)
    if array.size != expected:
        raise InvalidInput(
            f"{what} has {array.size} value(s) in 'data' but shape {shape} holds {expected}: "
            "send exactly as many values as the shape says, row-major"
        )
    return array.reshape(shape)


def _typed(array: np.ndarray, data: Any, datatype: str, what: str) -> np.ndarray:
    """``array``, as numpy inferred it from ``data``, converted to ``datatype``, values checked."""
    kind = array.dtype.kind
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        return _strings(array, what)
    if kind in "OUS":
        raise InvalidInput(
            f"{what} is {datatype} but 'data' holds {_offender(array)}: send "
            + ("true/false values" if datatype == "BOOL" else "numbers")
        )
    if datatype == "BOOL":
        if kind != "b":
            raise InvalidInput(f"{what} is BOOL but 'data' holds numbers: send true/false values")
        return array
    if kind == "b":
        raise InvalidInput(f"{what} is {datatype} but 'data' holds true/false: send numbers")
    if dtype.kind == "f":
        with np.errstate(over="ignore"):  # overflow is reported below, as the client's error
            converted = array.astype(dtype, copy=False)
        if dtype.itemsize < 8 and array.size and not np.isfinite(converted).all():
            limit = float(np.finfo(dtype).max)
            raise InvalidInput(
                f"{what} holds values beyond the {datatype} range (±{limit:g}): "
                "send smaller values or use FP64"
            )
        return converted
    return _integers(array, data, dtype, datatype, what)


def _integers(
    array: np.ndarray, data: Any, dtype: np.dtype[Any], datatype: str, what: str
) -> np.ndarray:
    if not array.size:
        return array.astype(dtype)
    if array.dtype.kind == "f":
        if not (array == np.trunc(array)).all():
            raise InvalidInput(f"{what} is {datatype} but 'data' holds non-integers: send integers")
        if not (np.abs(array) < _EXACT_FLOAT_INT).all():
            # numpy went through float64 (it does when values beyond INT64 sit beside smaller
            # ones): redo it from the exact JSON values rather than accept rounded ones.
            return _large_integers(data, dtype, datatype, what)
    _check_range(array.min(), array.max(), dtype, datatype, what)
    return array.astype(dtype, copy=False)


def _large_integers(data: Any, dtype: np.dtype[Any], datatype: str, what: str) -> np.ndarray:
    values = np.asarray(data, dtype=object).reshape(-1).tolist()
    _check_range(min(values), max(values), dtype, datatype, what)
    if not all(type(value) is int for value in values):
        raise InvalidInput(
            f"{what} holds a number written as a float that is too large to be exact: "
            "write whole numbers without a decimal point or exponent"
        )
    return np.array(values, dtype=dtype)


def _check_range(low: Any, high: Any, dtype: np.dtype[Any], datatype: str, what: str) -> None:
    info = np.iinfo(dtype)
    # Python compares ints with floats exactly, so this holds for 2**63 as a float too.
    low, high = (v.item() if isinstance(v, np.generic) else v for v in (low, high))
    if low < info.min or high > info.max:
        bad = low if low < info.min else high
        raise InvalidInput(
            f"{what} holds {bad:.0f}, outside the {datatype} range [{info.min}, {info.max}]: "
            "send values in range or declare a wider datatype"
        )


def _strings(array: np.ndarray, what: str) -> np.ndarray:
    # np.asarray(dtype=object) accepts ragged lists (it makes an array of lists), so the element
    # check below is also what rejects those.
    for item in array.flat:
        if type(item) is not str:
            if isinstance(item, list):
                raise InvalidInput(
                    f"{what} has nested 'data' lists of different lengths: send a flat list in "
                    "row-major order, or nested lists that form a full array"
                )
            raise InvalidInput(f"{what} is BYTES but 'data' holds {_show(item)}: send strings")
    return array


def _check_shape(spec: TensorSpec, shape: tuple[int, ...]) -> None:
    if not _fits(spec.shape, shape):
        wanted = "[" + ", ".join("any" if n == -1 else str(n) for n in spec.shape) + "]"
        raise InvalidInput(
            f"input {spec.name!r} has shape {list(shape)} but the model takes {wanted}"
        )


def _fits(wanted: tuple[int, ...], shape: Sequence[int]) -> bool:
    return len(shape) == len(wanted) and all(
        want in (-1, got) for want, got in zip(wanted, shape, strict=True)
    )


def _fit_shape(spec: TensorSpec, shape: list[int]) -> list[int]:
    """The shape the model gets: ``shape``, or one row of it when the model takes a batch of
    rows of a fixed shape and ``shape`` is that row's (``[4]`` for ``[-1, 4]``)."""
    if not _fits(spec.shape, shape):
        rest = spec.shape[1:]
        if spec.shape[:1] == (-1,) and -1 not in rest and tuple(shape) == rest:
            return [1, *shape]
        _check_shape(spec, tuple(shape))
    return shape


def _requested_outputs(outputs: Any) -> tuple[list[str] | None, dict[str, bool]]:
    """The names of the requested outputs, and their ``binary_data`` parameters."""
    if outputs is None:
        return None, {}
    if not isinstance(outputs, list):
        raise InvalidInput(
            f'\'outputs\' must be a list like [{{"name": "predict"}}], got {_show(outputs)}'
        )
    names = []
    binary_outputs: dict[str, bool] = {}
    for item in outputs:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidInput(
                f'each requested output must be {{"name": "..."}}, got {_show(item)}'
            )
        names.append(name)
        parameters = item.get("parameters")
        wanted = parameters.get("binary_data") if isinstance(parameters, dict) else None
        if wanted is not None:
            if not isinstance(wanted, bool):
                raise InvalidInput(
                    f"output {name!r} has binary_data {_show(wanted)}: send true or false"
                )
            binary_outputs[name] = wanted
    return names, binary_outputs


def _offender(array: np.ndarray) -> str:
    if array.dtype.kind in "US":
        # numpy turned any numbers beside the strings into strings too: show a real string.
        texts = [str(item) for item in array.flat]
        return f"strings (e.g. {next((t for t in texts if not _numeric(t)), texts[0])!r})"
    for item in array.flat:
        if item is None:
            return "null"
        if not isinstance(item, int | float):
            return _show(item)
    return "values that are not numbers"


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- encoding helpers ----------------------------------------------------------------------------


def _encode_response(
    model: str,
    version: str | None,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    requested: list[str] | None,
    wants_binary: Callable[[str], bool] | None,
) -> tuple[bytes, int | None]:
    names = list(outputs) if requested is None else requested
    tensors = []
    tail: list[bytes] = []
    for name in names:
        array = outputs.get(name)
        if array is None:
            raise InvalidInput(
                f"the model has no output {name!r}: ask for one of "
                f"{', '.join(map(repr, outputs)) or '(none)'} or leave 'outputs' out"
            )
        datatype = oip_datatype(array.dtype)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if wants_binary is not None and wants_binary(name):
            raw = binary.encode(array, datatype)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            tensor["data"] = _json_ready(array.reshape(-1))
        tensors.append(tensor)
    response: dict[str, Any] = {"model_name": model}
    if version is not None:
        response["model_version"] = version
    if request_id is not None:
        response["id"] = request_id
    response["outputs"] = tensors
    document = orjson.dumps(response, option=_DUMPS_OPTIONS)
    if not tail:
        return document, None
    return b"".join([document, *tail]), len(document)


def _json_ready(flat: np.ndarray) -> Any:
    """A 1-d array as orjson serialises it fastest: numbers stay an array, the rest a list."""
    if flat.dtype.kind in "biuf":
        return _native(flat)
    return _decoded(flat).tolist()


def _native(array: np.ndarray) -> np.ndarray:
    # orjson serialises numeric arrays in C, but only C-contiguous ones in native byte order.
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array)


def _decoded(array: np.ndarray) -> np.ndarray:
    """An object array whose bytes are text, so BYTES outputs serialise as JSON strings."""
    if array.dtype.kind == "U":
        return array
    if array.dtype.kind == "S":
        return np.char.decode(array, "utf-8", "replace")
    return np.frompyfunc(_text, 1, 1)(array)  # type: ignore[no-any-return]


def _text(item: Any) -> Any:
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else item


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(specs: Sequence[TensorSpec] | Any) -> str:
    return ", ".join(f"{s.name!r} ({s.datatype} {list(s.shape)})" for s in specs) or "no inputs"


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
