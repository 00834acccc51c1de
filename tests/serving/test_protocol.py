"""The OIP v2 and v1 JSON codecs: round trips per datatype, and every way a body can be wrong."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from modelyard.errors import InvalidInput
from modelyard.serving.protocol import (
    DATATYPES,
    TensorSpec,
    decode_infer_request,
    decode_v1_request,
    encode_error,
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
