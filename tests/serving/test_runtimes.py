"""Runtimes load real models trained here (iris ships with scikit-learn) and agree with them."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression

from modelyard.errors import InvalidInput
from modelyard.serving.protocol import TensorSpec, decode_infer_request, encode_infer_response
from modelyard.serving.runtimes import Runtime, load_runtime, runtime_names
from modelyard.serving.runtimes.onnx import OnnxRuntime
from modelyard.serving.runtimes.python import PythonRuntime
from modelyard.serving.runtimes.sklearn import SklearnRuntime


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    data = load_iris()
    return np.asarray(data.data), np.asarray(data.target)


@pytest.fixture(scope="module")
def classifier(iris: tuple[np.ndarray, np.ndarray]) -> LogisticRegression:
    x, y = iris
    return LogisticRegression(max_iter=1000).fit(x, y)


@pytest.fixture
def sklearn_dir(tmp_path: Path, classifier: LogisticRegression) -> Path:
    folder = tmp_path / "sklearn"
    folder.mkdir()
    joblib.dump(classifier, folder / "model.joblib")
    return folder


@pytest.fixture
def onnx_dir(tmp_path: Path, classifier: LogisticRegression) -> Path:
    from skl2onnx import to_onnx

    folder = tmp_path / "onnx"
    folder.mkdir()
    onx = to_onnx(classifier, np.zeros((1, 4), dtype=np.float32), target_opset=15)
    (folder / "model.onnx").write_bytes(onx.SerializeToString())
    return folder


MODEL_PY = """
from __future__ import annotations

import numpy as np

from .scale import factor

state = {}


def load(path):
    state["offset"] = float((path / "offset.txt").read_text())


def predict(inputs):
    x = inputs["x"]
    return {"scaled": x * factor + state["offset"], "total": x.sum(axis=1)}
"""


@pytest.fixture
def python_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "python"
    folder.mkdir()
    (folder / "model.py").write_text(MODEL_PY)
    (folder / "scale.py").write_text("factor = 2.0\n")
    (folder / "offset.txt").write_text("0.5")
    return folder


def rows(x: np.ndarray, *sizes: int) -> list[np.ndarray]:
    bounds = np.cumsum(sizes)[:-1]
    return np.split(x[: sum(sizes)], bounds)


def assert_batch_matches(runtime: Runtime, name: str, parts: list[np.ndarray]) -> None:
    batch = [{name: part} for part in parts]
    batched = runtime.predict_batch(batch)
    assert len(batched) == len(batch)
    for request, result in zip(batch, batched, strict=True):
        alone = runtime.predict(request)
        assert list(result) == list(alone)
        for key in alone:
            np.testing.assert_allclose(result[key], alone[key], rtol=1e-6)


# -- sklearn -------------------------------------------------------------------------------------


def test_sklearn_infers_specs_and_predicts_like_the_model(
    sklearn_dir: Path, classifier: LogisticRegression, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = iris
    runtime = load_runtime("sklearn")
    assert isinstance(runtime, SklearnRuntime)
    runtime.load(sklearn_dir, {})
    assert runtime.inputs == [TensorSpec("input-0", "FP64", (-1, 4))]
    assert runtime.outputs == [
        TensorSpec("predict", "INT64", (-1,)),
        TensorSpec("predict_proba", "FP64", (-1, 3)),
    ]
    assert runtime.default_outputs == ["predict"]
    assert runtime.platform == "sklearn"
    assert runtime.batchable
    out = runtime.predict({"input-0": x})
    assert list(out) == ["predict"]
    np.testing.assert_array_equal(out["predict"], classifier.predict(x))


def test_sklearn_classifier_answers_predict_proba_on_request(
    sklearn_dir: Path, classifier: LogisticRegression, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x = iris[0][:5]
    runtime = SklearnRuntime()
    runtime.load(sklearn_dir, {})
    out = runtime.predict_outputs({"input-0": x}, ["predict_proba"])
    assert list(out) == ["predict_proba"]
    np.testing.assert_allclose(out["predict_proba"], classifier.predict_proba(x))
    both = runtime.predict_outputs({"input-0": x}, ["predict", "predict_proba"])
    assert list(both) == ["predict", "predict_proba"]
    with pytest.raises(InvalidInput, match=r"no output 'transform'.*'predict' or 'predict_proba'"):
        runtime.predict_outputs({"input-0": x}, ["transform"])


def test_sklearn_signature_default_outputs(
    sklearn_dir: Path, classifier: LogisticRegression, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x = iris[0][:5]
    outputs = [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
    ]
    runtime = SklearnRuntime()
    runtime.load(sklearn_dir, {"outputs": outputs, "default_outputs": ["predict_proba"]})
    assert runtime.default_outputs == ["predict_proba"]
    assert list(runtime.predict({"input-0": x})) == ["predict_proba"]
    with pytest.raises(InvalidInput, match=r"default_outputs name 'label'"):
        SklearnRuntime().load(sklearn_dir, {"outputs": outputs, "default_outputs": ["label"]})


def test_sklearn_signature_adds_probabilities(
    sklearn_dir: Path, classifier: LogisticRegression, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = iris
    signature = {
        "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
        ],
    }
    runtime = SklearnRuntime()
    runtime.load(sklearn_dir, signature)
    assert [spec.name for spec in runtime.inputs] == ["features"]
    assert runtime.default_outputs is None  # a signature's outputs are all answered by default
    out = runtime.predict({"features": x[:5]})
    np.testing.assert_allclose(out["predict_proba"], classifier.predict_proba(x[:5]))
    np.testing.assert_array_equal(out["predict"], classifier.predict(x[:5]))


def test_sklearn_casts_integer_input(
    sklearn_dir: Path, classifier: LogisticRegression, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    whole = np.rint(iris[0]).astype(np.int64)
    runtime = SklearnRuntime()
    runtime.load(sklearn_dir, {})
    out = runtime.predict({"input-0": whole})
    np.testing.assert_array_equal(out["predict"], classifier.predict(whole.astype(np.float64)))


def test_sklearn_batch_equals_one_by_one(
    sklearn_dir: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    runtime = SklearnRuntime()
    runtime.load(sklearn_dir, {})
    assert_batch_matches(runtime, "input-0", rows(iris[0], 1, 7, 3, 20))


def test_sklearn_regressor_and_a_pickle_file(
    tmp_path: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = iris
    model = LinearRegression().fit(x[:, :3], x[:, 3])
    joblib.dump(model, tmp_path / "regressor.pkl")
    runtime = SklearnRuntime()
    runtime.load(tmp_path, {})
    assert runtime.inputs == [TensorSpec("input-0", "FP64", (-1, 3))]
    assert runtime.outputs == [TensorSpec("predict", "FP64", (-1,))]
    assert runtime.default_outputs is None
    np.testing.assert_allclose(
        runtime.predict({"input-0": x[:, :3]})["predict"], model.predict(x[:, :3])
    )


def test_sklearn_model_file_must_be_unambiguous(
    tmp_path: Path, classifier: LogisticRegression
) -> None:
    (tmp_path / "README.md").write_text("no model here")
    with pytest.raises(InvalidInput, match=r"no model file .*model.joblib.*found README.md"):
        SklearnRuntime().load(tmp_path, {})
    joblib.dump(classifier, tmp_path / "a.joblib")
    joblib.dump(classifier, tmp_path / "b.pkl")
    with pytest.raises(InvalidInput, match=r"several model files .*\(a.joblib, b.pkl\)"):
        SklearnRuntime().load(tmp_path, {})


def test_sklearn_rejects_unknown_output_and_bad_input(
    sklearn_dir: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    signature = {"outputs": [{"name": "fit", "datatype": "FP64", "shape": [-1]}]}
    with pytest.raises(InvalidInput, match=r"no such method.*predict, predict_proba"):
        SklearnRuntime().load(sklearn_dir, signature)
    runtime = SklearnRuntime()
    runtime.load(sklearn_dir, {})
    with pytest.raises(InvalidInput, match="the model rejected the input"):
        runtime.predict({"input-0": iris[0][:, :2]})


# -- onnx ----------------------------------------------------------------------------------------


def test_onnx_specs_come_from_the_session_and_zipmap_is_skipped(
    onnx_dir: Path, classifier: LogisticRegression, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x = iris[0].astype(np.float32)
    runtime = load_runtime("onnx")
    assert isinstance(runtime, OnnxRuntime)
    runtime.load(onnx_dir, {})
    assert runtime.platform == "onnxruntime"
    assert runtime.inputs == [TensorSpec("X", "FP32", (-1, 4))]
    assert runtime.outputs == [TensorSpec("output_label", "INT64", (-1,))]
    out = runtime.predict({"X": x})
    np.testing.assert_array_equal(out["output_label"], classifier.predict(x))


def test_onnx_batch_equals_one_by_one(onnx_dir: Path, iris: tuple[np.ndarray, np.ndarray]) -> None:
    runtime = OnnxRuntime()
    runtime.load(onnx_dir, {})
    assert_batch_matches(runtime, "X", rows(iris[0].astype(np.float32), 2, 1, 30))


def test_onnx_rejects_wrong_input(onnx_dir: Path) -> None:
    runtime = OnnxRuntime()
    runtime.load(onnx_dir, {})
    with pytest.raises(InvalidInput, match="no input 'x'"):
        runtime.predict({"x": np.zeros((1, 4), dtype=np.float32)})
    with pytest.raises(InvalidInput, match="the model rejected the input"):
        runtime.predict({"X": np.zeros((1, 3), dtype=np.float32)})


def test_onnx_needs_a_model_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"expected model.onnx or one \*.onnx"):
        OnnxRuntime().load(tmp_path, {})
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    with pytest.raises(InvalidInput, match=r"broken\.onnx is not a model onnxruntime can load"):
        OnnxRuntime().load(tmp_path, {})


# -- python --------------------------------------------------------------------------------------


def test_python_model_loads_imports_siblings_and_predicts(python_dir: Path) -> None:
    runtime = load_runtime("python")
    assert isinstance(runtime, PythonRuntime)
    runtime.load(python_dir, {})
    assert runtime.inputs == []
    assert runtime.outputs == []  # described by the first answer
    x = np.arange(6, dtype=np.float64).reshape(3, 2)
    out = runtime.predict({"x": x})
    np.testing.assert_array_equal(out["scaled"], x * 2.0 + 0.5)
    np.testing.assert_array_equal(out["total"], x.sum(axis=1))
    assert runtime.outputs == [
        TensorSpec("scaled", "FP64", (-1, 2)),
        TensorSpec("total", "FP64", (-1,)),
    ]
    assert_batch_matches(runtime, "x", rows(np.arange(20.0).reshape(10, 2), 1, 4, 5))


def test_two_python_models_do_not_share_module_state(python_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    for name in ("model.py", "scale.py"):
        (other / name).write_text((python_dir / name).read_text())
    (other / "offset.txt").write_text("100")
    first, second = PythonRuntime(), PythonRuntime()
    first.load(python_dir, {})
    second.load(other, {})
    x = {"x": np.ones((1, 2))}
    assert first.predict(x)["scaled"].tolist() == [[2.5, 2.5]]
    assert second.predict(x)["scaled"].tolist() == [[102.0, 102.0]]


def write_model(folder: Path, source: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "model.py").write_text(textwrap.dedent(source))
    return folder


def test_python_array_result_signature_and_opt_out_of_batching(tmp_path: Path) -> None:
    folder = write_model(
        tmp_path / "m",
        """
        import numpy as np

        batchable = False
        calls = []


        def predict(inputs):
            calls.append(len(inputs["text"]))
            # Not row-wise: one answer for the whole request.
            return np.array([" ".join(inputs["text"])], dtype=object)
        """,
    )
    signature = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "output-0", "datatype": "BYTES", "shape": [1]}],
    }
    runtime = PythonRuntime()
    runtime.load(folder, signature)
    assert not runtime.batchable
    assert runtime.inputs == [TensorSpec("text", "BYTES", (-1,))]
    batch = [
        {"text": np.array(["a", "b"], dtype=object)},
        {"text": np.array(["c"], dtype=object)},
    ]
    results = runtime.predict_batch(batch)
    assert [r["output-0"].tolist() for r in results] == [["a b"], ["c"]]
    assert runtime.module is not None
    assert runtime.module.calls == [2, 1]  # one call per request, never stacked


def test_batch_falls_back_when_outputs_are_not_one_row_per_input(tmp_path: Path) -> None:
    folder = write_model(
        tmp_path / "m",
        """
        def predict(inputs):
            return inputs["x"].sum(axis=0, keepdims=True)
        """,
    )
    runtime = PythonRuntime()
    runtime.load(folder, {})
    assert runtime.batchable
    parts = [np.ones((2, 3)), np.full((3, 3), 2.0)]
    results = runtime.predict_batch([{"x": part} for part in parts])
    assert [r["output-0"].tolist() for r in results] == [[[2.0] * 3], [[6.0] * 3]]


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        (None, "needs .*model.py"),
        ("x = 1\n", "defines no predict function"),
        ("raise RuntimeError('boom')\n", "failed to import: RuntimeError"),
        ("batchable = 'no'\ndef predict(inputs):\n    return inputs\n", "'batchable' must be"),
        (
            "def load(path):\n    raise OSError('gone')\ndef predict(inputs):\n    return inputs\n",
            r"load\(.*\) failed: OSError\('gone'\)",
        ),
    ],
)
def test_python_model_errors(tmp_path: Path, source: str | None, fragment: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    if source is not None:
        (folder / "model.py").write_text(source)
    with pytest.raises(InvalidInput, match=fragment):
        PythonRuntime().load(folder, {})


# -- choosing a runtime --------------------------------------------------------------------------


def test_runtime_names_and_unknown_runtime() -> None:
    assert runtime_names()[:3] == ["onnx", "python", "sklearn"]
    with pytest.raises(InvalidInput, match="unknown runtime 'tensorflow': use one of onnx, python"):
        load_runtime("tensorflow")


def test_runtime_by_module_path() -> None:
    runtime = load_runtime("modelyard.serving.runtimes.sklearn:SklearnRuntime")
    assert isinstance(runtime, SklearnRuntime)
    with pytest.raises(InvalidInput, match=r"cannot be loaded from 'no\.such\.module:Thing'"):
        load_runtime("no.such.module:Thing")
    with pytest.raises(InvalidInput, match="is not a subclass of"):
        load_runtime("pathlib:Path")


def test_importing_runtimes_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import modelyard.serving.runtimes as r; r.load_runtime('onnx');"
        "r.load_runtime('sklearn'); print(sorted(m for m in ('sklearn', 'onnxruntime', 'joblib')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- end to end through the protocol -------------------------------------------------------------


def test_request_to_response_through_a_runtime(
    sklearn_dir: Path, classifier: LogisticRegression, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x = iris[0][:3]
    runtime = SklearnRuntime()
    runtime.load(sklearn_dir, {})
    raw = orjson.dumps(
        {
            "id": "r1",
            "inputs": [
                {"name": "input-0", "shape": [3, 4], "datatype": "FP64", "data": x.tolist()}
            ],
        }
    )
    request = decode_infer_request(raw, runtime.inputs)
    outputs = runtime.predict(request.inputs)
    response: dict[str, Any] = orjson.loads(
        encode_infer_response("iris", "1", request.id, outputs, request.outputs)
    )
    assert response["outputs"] == [
        {
            "name": "predict",
            "datatype": "INT64",
            "shape": [3],
            "data": classifier.predict(x).tolist(),
        }
    ]
