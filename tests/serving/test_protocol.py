"""The OIP v2 and v1 codecs: round trips per datatype (JSON, and the binary tensor data extension
checked against Triton's own client codec), and every way a body can be wrong."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from modelyard.errors import InvalidInput
from modelyard.serving import binary
from modelyard.serving.protocol import (
    DATATYPES,
    TensorSpec,
    decode_infer_request,
    decode_v1_request,
    encode_error,
    encode_infer_answer,
    encode_infer_response,
    encode_v1_response,
    numpy_dtype,
    oip_datatype,
)

SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False], [False, True]]),
    "UINT8": np.array([[0, 255], [1, 2]], dtype=np.uint8),
    "UINT16": np.array([[0, 65535], [1, 2]], dtype=np.uint16),
    "UINT32": np.array([[0, 2**32 - 1], [1, 2]], dtype=np.uint32),
    "UINT64": np.array([[0, 2**64 - 1], [1, 2]], dtype=np.uint64),
    "INT8": np.array([[-128, 127], [0, 1]], dtype=np.int8),
    "INT16": np.array([[-(2**15), 2**15 - 1], [0, 1]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 2**31 - 1], [0, 1]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 2**63 - 1], [0, 1]], dtype=np.int64),
    "FP16": np.array([[0.5, -65504.0], [1.25, 2.0]], dtype=np.float16),
    "FP32": np.array([[0.1, -3.4e38], [1e-7, 2.0]], dtype=np.float32),
    "FP64": np.array([[0.1, -1.7e308], [5e-324, 2.0]], dtype=np.float64),
    "BYTES": np.array([["a", ""], ["ünï", "d e"]], dtype=object),
}


def body(*tensors: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": list(tensors), **extra})


def tensor(
    name: str = "x", datatype: str = "FP32", shape: Any = (2,), data: Any = None
) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(shape),
        "data": [1.0, 2.0] if data is None else data,
    }


def rejects(raw: bytes, specs: list[TensorSpec], *fragments: str) -> str:
    with pytest.raises(InvalidInput) as caught:
        decode_infer_request(raw, specs)
    for fragment in fragments:
        assert fragment in caught.value.message
    return caught.value.message


def test_samples_cover_every_datatype() -> None:
    assert set(SAMPLES) == set(DATATYPES)


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_response_then_request_round_trip_every_datatype(datatype: str) -> None:
    array = SAMPLES[datatype]
    response = orjson.loads(encode_infer_response("m", "3", "req-1", {"y": array}, None))
    (out,) = response["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("y", datatype, [2, 2])
    # orjson writes floats in their shortest exact form (FP32 0.1 as 0.1): compare as arrays.
    np.testing.assert_array_equal(np.array(out["data"], dtype=array.dtype), array.reshape(-1))
    out["name"] = "x"
    spec = TensorSpec("x", datatype, (-1, 2))
    request = decode_infer_request(body(out, id="req-1"), [spec])
    decoded = request.inputs["x"]
    assert decoded.dtype == numpy_dtype(datatype)
    assert decoded.shape == (2, 2)
    np.testing.assert_array_equal(decoded, array)
    assert request.id == "req-1"


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_nested_and_flat_data_decode_the_same(datatype: str) -> None:
    array = SAMPLES[datatype]
    flat = tensor(datatype=datatype, shape=(2, 2), data=array.reshape(-1).tolist())
    nested = tensor(datatype=datatype, shape=(2, 2), data=array.tolist())
    a = decode_infer_request(body(flat), []).inputs["x"]
    b = decode_infer_request(body(nested), []).inputs["x"]
    np.testing.assert_array_equal(a, b)
    assert a.dtype == b.dtype == numpy_dtype(datatype)


def test_bytes_stay_python_strings_in_object_arrays() -> None:
    decoded = decode_infer_request(body(tensor(datatype="BYTES", data=["a", "b"])), []).inputs["x"]
    assert decoded.dtype == object
    assert [type(item) for item in decoded] == [str, str]


def test_request_keeps_order_outputs_and_parameters() -> None:
    raw = body(
        tensor("b"),
        tensor("a", "INT64", (1,), [7]),
        outputs=[{"name": "predict"}],
        parameters={"priority": 1},
    )
    request = decode_infer_request(raw, [])
    assert list(request.inputs) == ["b", "a"]
    assert request.outputs == ["predict"]
    assert request.parameters == {"priority": 1}
    assert request.id is None


def test_specs_accept_matching_inputs_with_wildcards() -> None:
    specs = [TensorSpec("x", "FP64", (-1, 3)), TensorSpec("k", "INT32", (1,))]
    raw = body(tensor("x", "FP64", (2, 3), [1, 2, 3, 4, 5, 6]), tensor("k", "INT32", (1,), [9]))
    request = decode_infer_request(raw, specs)
    assert request.inputs["x"].shape == (2, 3)
    assert request.inputs["k"].tolist() == [9]


def test_empty_shape_holds_one_value() -> None:
    decoded = decode_infer_request(body(tensor(shape=(), data=[3.5])), []).inputs["x"]
    assert decoded.shape == ()
    assert float(decoded) == 3.5


def test_integral_floats_are_accepted_for_integer_types() -> None:
    decoded = decode_infer_request(body(tensor(datatype="INT32", data=[1.0, -2.0])), [])
    assert decoded.inputs["x"].tolist() == [1, -2]


def test_zero_sized_tensors() -> None:
    decoded = decode_infer_request(body(tensor(datatype="INT8", shape=(0, 4), data=[])), [])
    assert decoded.inputs["x"].shape == (0, 4)
    assert decoded.inputs["x"].dtype == np.int8


# -- bad requests --------------------------------------------------------------------------------


def test_malformed_json() -> None:
    rejects(b'{"inputs": [', [], "not valid JSON", "send an object like")


def test_body_not_an_object() -> None:
    rejects(b"[1, 2]", [], "must be a JSON object")


@pytest.mark.parametrize("raw", [b"{}", b'{"inputs": []}', b'{"inputs": {"x": 1}}'])
def test_missing_or_empty_inputs(raw: bytes) -> None:
    rejects(raw, [], "needs 'inputs'", '"datatype": "FP32"')


@pytest.mark.parametrize("field", ["shape", "datatype", "data"])
def test_tensor_missing_a_field(field: str) -> None:
    broken = tensor()
    del broken[field]
    rejects(body(broken), [], f"input 'x' has no '{field}'", "'name', 'shape', 'datatype'")


def test_tensor_without_name() -> None:
    broken = tensor()
    del broken["name"]
    rejects(body(broken), [], "has no 'name'")


def test_tensor_not_an_object() -> None:
    rejects(body([1, 2]), [], "each input must be an object")  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [[-1, 2], "2", [2.0], [True]])
def test_bad_request_shape(shape: Any) -> None:
    raw = orjson.dumps({"inputs": [{**tensor(), "shape": shape}]})
    rejects(raw, [], "input 'x' has shape", "non-negative integers")


def test_unknown_datatype() -> None:
    rejects(body(tensor(datatype="FLOAT")), [], "unknown datatype 'FLOAT'", "FP32", "BYTES")
    with pytest.raises(InvalidInput, match="unknown datatype 'FP128'"):
        numpy_dtype("FP128")


def test_element_count_must_match_the_shape() -> None:
    rejects(
        body(tensor(shape=(2, 2), data=[1, 2, 3])),
        [],
        "3 value(s) in 'data' but shape [2, 2] holds 4",
    )


def test_ragged_nested_data() -> None:
    rejects(body(tensor(shape=(2, 2), data=[[1, 2], [3]])), [], "different lengths")
    rejects(
        body(tensor(datatype="BYTES", shape=(2, 2), data=[["a", "b"], ["c"]])),
        [],
        "different lengths",
    )


@pytest.mark.parametrize(
    ("datatype", "data", "fragments"),
    [
        ("FP32", [1, "a"], ("is FP32", "strings (e.g. 'a')", "send numbers")),
        ("FP64", [1, None], ("is FP64", "null")),
        ("FP32", [True, False], ("true/false", "send numbers")),
        ("FP16", [1, 70000], ("beyond the FP16 range",)),
        ("FP32", [1, 1e39], ("beyond the FP32 range",)),
        ("UINT8", [1, 300], ("holds 300", "UINT8 range [0, 255]")),
        ("UINT8", [-1, 3], ("holds -1", "UINT8 range")),
        ("INT8", [128, 0], ("holds 128", "INT8 range [-128, 127]")),
        ("INT32", [2**31, 0], ("INT32 range",)),
        ("INT64", [2**63, 0], ("INT64 range",)),
        ("UINT64", [-1, 2**63], ("UINT64 range",)),
        ("INT64", [1.5, 2], ("non-integers", "send integers")),
        ("INT64", [1e17, 2], ("too large to be exact",)),
        ("INT16", ["1", "2"], ("strings",)),
        ("BOOL", [1, 0], ("BOOL", "send true/false")),
        ("BOOL", ["true", "false"], ("send true/false",)),
        ("BYTES", ["a", 1], ("is BYTES", "holds 1", "send strings")),
        ("BYTES", [None, "a"], ("holds None", "send strings")),
    ],
)
def test_values_that_do_not_fit_the_datatype(
    datatype: str, data: list[Any], fragments: tuple[str, ...]
) -> None:
    rejects(body(tensor(datatype=datatype, shape=(2,), data=data)), [], *fragments)


def test_unknown_input_name() -> None:
    specs = [TensorSpec("features", "FP32", (-1, 2))]
    rejects(body(tensor("x", shape=(1, 2))), specs, "no input 'x'", "'features' (FP32 [-1, 2])")


def test_missing_required_input() -> None:
    specs = [TensorSpec("a", "FP32", (2,)), TensorSpec("b", "FP32", (2,))]
    rejects(body(tensor("a")), specs, "missing input(s) 'b'", "'a' (FP32 [2])")


def test_duplicate_input() -> None:
    rejects(body(tensor(), tensor()), [], "given twice")


def test_datatype_must_match_the_spec() -> None:
    specs = [TensorSpec("x", "FP32", (2,))]
    rejects(body(tensor(datatype="FP64")), specs, "is FP64 but the model takes FP32")


@pytest.mark.parametrize("shape", [(4,), (1, 3), (2, 2, 1)])
def test_shape_must_fit_the_spec(shape: tuple[int, ...]) -> None:
    specs = [TensorSpec("x", "FP32", (-1, 2))]
    data = [0.0] * int(np.prod(shape))
    rejects(body(tensor(shape=shape, data=data)), specs, "but the model takes [any, 2]")


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"id": 5}, "'id' must be a string"),
        ({"parameters": [1]}, "'parameters' must be an object"),
        ({"outputs": "predict"}, "'outputs' must be a list"),
        ({"outputs": [{"nom": "predict"}]}, 'must be {"name": "..."}'),
    ],
)
def test_bad_request_fields(extra: dict[str, Any], fragment: str) -> None:
    rejects(body(tensor(), **extra), [], fragment)


# -- specs ---------------------------------------------------------------------------------------


def test_tensor_spec_round_trip() -> None:
    spec = TensorSpec("input-0", "FP64", (-1, 4))
    assert spec.to_dict() == {"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}
    assert TensorSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ([1], "must be an object"),
        ({"datatype": "FP32", "shape": [1]}, "non-empty string 'name'"),
        ({"name": "x", "datatype": "FLOAT", "shape": [1]}, "unknown datatype 'FLOAT'"),
        ({"name": "x", "datatype": "FP32", "shape": [-2]}, "-1 for any size"),
        ({"name": "x", "datatype": "FP32"}, "needs 'shape'"),
    ],
)
def test_bad_tensor_specs(raw: Any, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment.replace("(", r"\(")):
        TensorSpec.from_dict(raw)


def test_oip_datatype_of_numpy_dtypes() -> None:
    for name, dtype in DATATYPES.items():
        assert oip_datatype(dtype) == name
    assert oip_datatype(np.dtype("<U5")) == "BYTES"
    assert oip_datatype(np.dtype(">f4")) == "FP32"


# -- responses -----------------------------------------------------------------------------------


def test_response_fields_and_requested_outputs() -> None:
    outputs = {"predict": np.array([1, 2]), "proba": np.array([[0.5, 0.5], [0.1, 0.9]])}
    everything = orjson.loads(encode_infer_response("iris", None, None, outputs, None))
    assert everything["model_name"] == "iris"
    assert "model_version" not in everything
    assert "id" not in everything
    assert [o["name"] for o in everything["outputs"]] == ["predict", "proba"]
    picked = orjson.loads(encode_infer_response("iris", "2", "r", outputs, ["proba"]))
    assert picked["model_version"] == "2"
    assert picked["id"] == "r"
    assert picked["outputs"] == [
        {"name": "proba", "datatype": "FP64", "shape": [2, 2], "data": [0.5, 0.5, 0.1, 0.9]}
    ]
    with pytest.raises(InvalidInput, match=r"no output 'labels': ask for one of 'predict', 'pr"):
        encode_infer_response("iris", "2", None, outputs, ["labels"])


def test_response_of_non_contiguous_and_byte_outputs() -> None:
    column = np.arange(6, dtype=np.int32).reshape(2, 3)[:, 1]
    raw = np.array([b"ab", "c"], dtype=object)
    response = orjson.loads(encode_infer_response("m", None, None, {"c": column, "b": raw}, None))
    assert response["outputs"][0]["data"] == [1, 4]
    assert response["outputs"][1] == {
        "name": "b",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["ab", "c"],
    }


def test_error_body() -> None:
    assert orjson.loads(encode_error('bad "input"')) == {"error": 'bad "input"'}


# -- v1 ------------------------------------------------------------------------------------------


def test_v1_instances_use_the_first_spec() -> None:
    specs = [TensorSpec("features", "FP32", (-1, 2))]
    arrays = decode_v1_request(b'{"instances": [[1, 2], [3, 4.5]]}', specs)
    assert list(arrays) == ["features"]
    assert arrays["features"].dtype == np.float32
    np.testing.assert_array_equal(arrays["features"], [[1, 2], [3, 4.5]])


def test_v1_inputs_key_and_no_spec() -> None:
    arrays = decode_v1_request(b'{"inputs": [[1, 2]]}', [])
    assert arrays["input-0"].dtype == np.float64
    text = decode_v1_request(b'{"instances": ["a b", "c"]}', [])
    assert text["input-0"].dtype == object
    assert text["input-0"].tolist() == ["a b", "c"]


def test_v1_bytes_spec() -> None:
    specs = [TensorSpec("text", "BYTES", (-1,))]
    assert decode_v1_request(b'{"instances": ["a"]}', specs)["text"].tolist() == ["a"]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"nope", "not valid JSON"),
        (b'"x"', "must be a JSON object"),
        (b"{}", "needs 'instances'"),
        (b'{"instances": []}', "needs 'instances': a non-empty list"),
        (b'{"instances": {"a": 1}}', "non-empty list"),
        (b'{"instances": [[1, 2], [3]]}', "same shape"),
        (b'{"instances": [{"a": 1}]}', "not objects"),
        (b'{"instances": [[1, "x"]]}', "strings (e.g. 'x')"),
        (b'{"instances": [[1, 2, 3]]}', "has shape [1, 3] but the model takes [any, 2]"),
        (b'{"instances": [[300, 2]]}', "outside the UINT8 range"),
    ],
)
def test_bad_v1_requests(raw: bytes, fragment: str) -> None:
    specs = [TensorSpec("x", "UINT8", (-1, 2))]
    with pytest.raises(InvalidInput) as caught:
        decode_v1_request(raw, specs)
    assert fragment in caught.value.message


def test_v1_response_is_the_first_output() -> None:
    outputs = {"predict": np.array([[1.5, 2.0]], dtype=np.float32), "other": np.array([0])}
    assert orjson.loads(encode_v1_response(outputs)) == {"predictions": [[1.5, 2.0]]}
    labels = {"predict": np.array([["a"], [b"b"]], dtype=object)}
    assert orjson.loads(encode_v1_response(labels)) == {"predictions": [["a"], ["b"]]}


# -- the binary tensor data extension ------------------------------------------------------------


def triton_body(
    arrays: dict[str, np.ndarray], *, binary_data: bool = True, **kwargs: Any
) -> tuple[bytes, int | None]:
    """A request body as Triton's HTTP client builds it (and its header length)."""
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else oip_datatype(array.dtype)
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary_data)
        inputs.append(tensor)
    body, length = triton.InferenceServerClient.generate_request_body(inputs, **kwargs)
    return (body if isinstance(body, bytes) else body.encode()), length


def binary_request(*tensors: tuple[dict[str, Any], bytes], **extra: Any) -> tuple[bytes, int]:
    """A body with each tensor's JSON and, after the whole JSON document, its raw bytes."""
    document = orjson.dumps({"inputs": [t for t, _ in tensors], **extra})
    return document + b"".join(raw for _, raw in tensors), len(document)


def binary_tensor(name: str, datatype: str, shape: list[int], raw: bytes) -> dict[str, Any]:
    parameters = {"binary_data_size": len(raw)}
    return {"name": name, "datatype": datatype, "shape": shape, "parameters": parameters}


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_binary_requests_from_triton_decode_every_datatype(datatype: str) -> None:
    array = SAMPLES[datatype]
    body, length = triton_body({"x": array})
    assert length is not None and len(body) > length
    request = decode_infer_request(body, [TensorSpec("x", datatype, (-1, 2))], length)
    decoded = request.inputs["x"]
    assert decoded.dtype == numpy_dtype(datatype)
    assert decoded.flags.writeable  # a model may work on its input in place
    np.testing.assert_array_equal(decoded, array)
    if datatype == "BYTES":  # text arrives as str, as it does in JSON
        assert [type(item) for item in decoded.flat] == [str] * 4
    raw, length = triton_body({"x": array}, binary_data=False)
    assert length is None
    np.testing.assert_array_equal(decode_infer_request(raw, [], length).inputs["x"], decoded)


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_binary_outputs_read_back_by_triton_every_datatype(datatype: str) -> None:
    array = SAMPLES[datatype]
    body, length = triton_body({"x": np.zeros(1, np.float32)})  # asks for binary outputs
    request = decode_infer_request(body, [], length)
    answer, header_length = encode_infer_answer(request, "m", "1", {"y": array})
    assert header_length is not None
    document = orjson.loads(answer[:header_length])
    (out,) = document["outputs"]
    assert "data" not in out
    assert out["parameters"] == {"binary_data_size": len(answer) - header_length}
    result = triton.InferenceServerClient.parse_response_body(answer, header_length=header_length)
    got = result.as_numpy("y")
    if datatype == "BYTES":  # Triton's client hands BYTES back as bytes
        got = np.vectorize(bytes.decode, otypes=[object])(got)
    assert got.shape == array.shape
    np.testing.assert_array_equal(got, array)


def test_binary_layout_is_the_specs() -> None:
    """Little-endian values, BOOL as one byte, BYTES as 4-byte length-prefixed elements."""
    outputs = {
        "i": np.array([1, -2], dtype=np.int32),
        "b": np.array([True, False]),
        "s": np.array(["ab", b"\xff"], dtype=object),
        "h": np.array([1.0], dtype=np.float16),
    }
    request = decode_infer_request(body(tensor(), parameters={"binary_data_output": True}), [])
    answer, length = encode_infer_answer(request, "m", None, outputs)
    assert length is not None
    assert answer[length:] == (
        b"\x01\x00\x00\x00\xfe\xff\xff\xff"
        + b"\x01\x00"
        + b"\x02\x00\x00\x00ab\x01\x00\x00\x00\xff"
        + b"\x00\x3c"
    )


def test_binary_bytes_that_are_not_text_stay_bytes() -> None:
    raw = b"\x02\x00\x00\x00hi\x02\x00\x00\x00\xff\xd8"
    request, length = binary_request((binary_tensor("x", "BYTES", [2], raw), raw))
    decoded = decode_infer_request(request, [], length)
    assert decoded.inputs["x"].tolist() == [b"hi", b"\xff\xd8"]


def test_binary_and_json_inputs_mix_in_order() -> None:
    a = np.array([1.5, 2.5], dtype=np.float32)
    c = np.array([7, 8, 9], dtype=np.int64)
    raw, length = binary_request(
        (binary_tensor("a", "FP32", [2], a.tobytes()), a.tobytes()),
        (tensor("b", "FP64", (2,), [0.25, 0.5]), b""),
        (binary_tensor("c", "INT64", [3], c.tobytes()), c.tobytes()),
    )
    inputs = decode_infer_request(raw, [], length).inputs
    assert list(inputs) == ["a", "b", "c"]
    np.testing.assert_array_equal(inputs["a"], a)
    np.testing.assert_array_equal(inputs["b"], [0.25, 0.5])
    np.testing.assert_array_equal(inputs["c"], c)


def test_outputs_go_binary_only_when_asked() -> None:
    outputs = {"p": np.array([1, 2]), "q": np.array([0.5])}
    plain = decode_infer_request(body(tensor()), [])
    answer, length = encode_infer_answer(plain, "m", None, outputs)
    assert length is None
    assert answer == encode_infer_response("m", None, None, outputs, None)
    # the request's binary_data_output, overridden by an output's own binary_data
    mixed = decode_infer_request(
        body(
            tensor(),
            parameters={"binary_data_output": True},
            outputs=[{"name": "q", "parameters": {"binary_data": False}}, {"name": "p"}],
        ),
        [],
    )
    answer, length = encode_infer_answer(mixed, "m", None, outputs)
    assert length is not None
    q, p = orjson.loads(answer[:length])["outputs"]
    assert q == {"name": "q", "datatype": "FP64", "shape": [1], "data": [0.5]}
    assert p["parameters"] == {"binary_data_size": 16}
    assert answer[length:] == np.array([1, 2], dtype="<i8").tobytes()


def test_binary_sizes_that_do_not_add_up() -> None:
    x = np.arange(4, dtype=np.float32).tobytes()
    raw, length = binary_request((binary_tensor("x", "FP32", [4], x), x))
    decode_infer_request(raw, [], length)  # fine as it is
    rejects_binary(
        raw + b"\x00\x00",
        length,
        f"the body has 18 bytes after the JSON document (Inference-Header-Content-Length {length})",
        "binary_data_size add up to 16",
    )
    rejects_binary(raw[:-4], length, "binary_data_size 16 but only 12 bytes of binary data")
    wrong_size = {**binary_tensor("x", "FP32", [4], x), "parameters": {"binary_data_size": 12}}
    rejects_binary(
        *binary_request((wrong_size, x[:12])),
        "is FP32 of shape [4], which is 16 bytes of binary data, but its binary_data_size is 12",
    )


def rejects_binary(raw: bytes, length: int | None, *fragments: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_infer_request(raw, [], length)
    for fragment in fragments:
        assert fragment in caught.value.message


def test_header_length_must_be_within_the_body() -> None:
    with pytest.raises(InvalidInput, match="is 500 but the body has only 40 bytes"):
        binary.header_length(b"500", 40)
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length is '-3'"):
        binary.header_length(b"-3", 40)
    assert binary.header_length(b"40", 40) == 40


@pytest.mark.parametrize(
    ("tensors", "fragments"),
    [
        (
            [(binary_tensor("x", "BOOL", [2], b"\x01\x02"), b"\x01\x02")],
            ("BOOL but its binary data holds bytes other than 0 and 1",),
        ),
        (
            [(binary_tensor("x", "BYTES", [1], b"\x05\x00\x00\x00ab"), b"\x05\x00\x00\x00ab")],
            ("BYTES element of 5 bytes",),
        ),
        (
            [(binary_tensor("x", "BYTES", [2], b"\x01\x00\x00\x00a"), b"\x01\x00\x00\x00a")],
            ("holds 2 BYTES element(s)",),
        ),
        (
            [({**tensor(), "parameters": {"binary_data_size": 8}}, b"\x00" * 8)],
            ("both 'data' and parameters.binary_data_size",),
        ),
        (
            [
                (
                    binary_tensor("x", "FP32", [1], b"") | {"parameters": {"binary_data_size": -4}},
                    b"",
                )
            ],
            ("binary_data_size -4",),
        ),
    ],
)
def test_bad_binary_tensors(tensors: list[tuple[dict[str, Any], bytes]], fragments: Any) -> None:
    rejects_binary(*binary_request(*tensors), *fragments)


def test_binary_data_without_the_header() -> None:
    x = np.zeros(2, dtype=np.float32).tobytes()
    raw, _ = binary_request((binary_tensor("x", "FP32", [2], x), x))
    rejects_binary(raw, None, "not valid JSON", "needs the Inference-Header-Content-Length header")
    document, _ = binary_request((binary_tensor("x", "FP32", [2], x), b""))
    rejects_binary(document, None, "no Inference-Header-Content-Length header")


# -- lossless upcasts and one flat row -----------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "wanted"),
    [("FP32", "FP64"), ("FP16", "FP32"), ("INT32", "INT64"), ("INT8", "FP16"), ("UINT8", "INT16")],
)
def test_lossless_upcasts_are_accepted(given: str, wanted: str) -> None:
    values = np.array([1, 2.5 if given.startswith("FP") else 3], dtype=DATATYPES[given])
    specs = [TensorSpec("x", wanted, (-1,))]
    for raw, length in (
        triton_body({"x": values}, binary_data=False),
        triton_body({"x": values}),
    ):
        decoded = decode_infer_request(raw, specs, length).inputs["x"]
        assert decoded.dtype == DATATYPES[wanted]
        np.testing.assert_array_equal(decoded, values.astype(DATATYPES[wanted]))


def test_fp32_values_upcast_as_the_fp32_the_client_meant() -> None:
    specs = [TensorSpec("x", "FP64", (1,))]
    decoded = decode_infer_request(body(tensor(datatype="FP32", shape=(1,), data=[0.1])), specs)
    assert decoded.inputs["x"][0] == float(np.float32(0.1))


@pytest.mark.parametrize(
    ("given", "wanted"),
    [("INT64", "FP64"), ("UINT64", "FP64"), ("INT32", "FP32"), ("BOOL", "INT8"), ("FP64", "FP32")],
)
def test_lossy_casts_are_refused(given: str, wanted: str) -> None:
    data = [True, False] if given == "BOOL" else [1, 2]
    specs = [TensorSpec("x", wanted, (2,))]
    rejects(
        body(tensor(datatype=given, shape=(2,), data=data)),
        specs,
        f"is {given} but the model takes {wanted}",
    )


def test_one_flat_row_for_a_batch_of_rows() -> None:
    specs = [TensorSpec("x", "FP64", (-1, 4))]
    decoded = decode_infer_request(
        body(tensor(datatype="FP64", shape=(4,), data=[1, 2, 3, 4])), specs
    )
    assert decoded.inputs["x"].shape == (1, 4)
    x = np.arange(4, dtype=np.float32).reshape(4)
    raw, length = triton_body({"x": x})
    assert decode_infer_request(raw, specs, length).inputs["x"].shape == (1, 4)
    # ambiguous (rows of any length) or not one row: refused as before
    rejects(
        body(tensor(shape=(4,), data=[1, 2, 3, 4])),
        [TensorSpec("x", "FP32", (-1, -1))],
        "has shape [4] but the model takes [any, any]",
    )
    rejects(
        body(tensor(shape=(8,), data=[0] * 8)),
        [TensorSpec("x", "FP32", (-1, 4))],
        "has shape [8] but the model takes [any, 4]",
    )
