"""Signatures inferred from a sample input, on real models (iris ships with scikit-learn)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelyard.errors import InvalidInput
from modelyard.serving.runtimes.sklearn import SklearnRuntime
from modelyard.serving.signatures import infer_signature
from tests.conftest import iris_model

IRIS_SIGNATURE = {
    "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}],
    "outputs": [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
    ],
    "default_outputs": ["predict"],
}
ROW = [6.8, 2.8, 4.8, 1.4]


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return iris_model(tmp_path_factory.mktemp("iris") / "iris")


def test_every_sample_format_gives_the_iris_signature(iris: Path, tmp_path: Path) -> None:
    oip = tmp_path / "request.json"
    oip.write_text(
        json.dumps({"inputs": [{"name": "input-0", "shape": [4], "datatype": "FP32", "data": ROW}]})
    )
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps({"instances": [ROW, ROW]}))
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([ROW]))
    npy = tmp_path / "rows.npy"
    np.save(npy, np.array([ROW], dtype=np.float32))
    npz = tmp_path / "rows.npz"
    arrays: dict[str, Any] = {"input-0": np.array([ROW, ROW])}
    np.savez(npz, **arrays)
    for sample in (oip, v1, rows, npy, npz):
        assert infer_signature(iris, "sklearn", sample) == IRIS_SIGNATURE, sample


def test_a_version_with_the_inferred_signature_answers_as_one_without(
    iris: Path, tmp_path: Path
) -> None:
    sample = tmp_path / "rows.json"
    sample.write_text(json.dumps([ROW]))
    runtime = SklearnRuntime()
    runtime.load(iris, infer_signature(iris, "sklearn", sample))
    assert runtime.default_outputs == ["predict"]
    assert list(runtime.predict({"input-0": np.array([ROW])})) == ["predict"]


def test_a_python_model_describes_its_own_outputs(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.py").write_text(
        "def predict(inputs):\n"
        "    x = inputs['x']\n"
        "    return {'doubled': x * 2, 'total': x.sum(axis=1)}\n"
    )
    sample = tmp_path / "sample.npz"
    np.savez(sample, x=np.array([[1, 2, 3]], dtype=np.int32))
    assert infer_signature(folder, "python", sample) == {
        "inputs": [{"name": "x", "datatype": "INT32", "shape": [-1, 3]}],
        "outputs": [
            {"name": "doubled", "datatype": "INT32", "shape": [-1, 3]},
            {"name": "total", "datatype": "INT64", "shape": [-1]},
        ],
    }


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("sample.csv", "1,2,3,4", r"write it as \.json .*\.npy .*\.npz"),
        ("sample.json", "{not json", "is not valid JSON"),
        ("sample.json", '[["a", "b", "c", "d"]]', "is FP64 but 'data' holds strings"),
        ("sample.json", "[[1, 2]]", r"has shape \[1, 2\] but the model takes \[any, 4\]"),
        ("missing.json", None, "does not exist"),
    ],
)
def test_a_sample_the_model_would_refuse_is_refused(
    iris: Path, tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    sample = tmp_path / name
    if content is not None:
        sample.write_text(content)
    with pytest.raises(InvalidInput, match=message):
        infer_signature(iris, "sklearn", sample)
