"""ONNX models on onnxruntime's CPU provider; the session itself describes inputs and outputs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import ConfigError, InvalidInput
from modelyard.serving.protocol import TensorSpec, numpy_dtype
from modelyard.serving.runtimes import Runtime, pick_file

ELEMENT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


class OnnxRuntime(Runtime):
    name = "onnx"
    platform = "onnxruntime"
    model_file = ("model.onnx", ("*.onnx",))

    def __init__(self) -> None:
        super().__init__()
        self.session: Any = None
        self._dtypes: dict[str, np.dtype[Any]] = {}
        self._output_names: list[str] = []
        self._invalid_argument: type[Exception] = ValueError

    def load(self, path: Path, signature: Mapping[str, Any]) -> None:
        """Open the session; ``signature`` is not needed: the graph states its own types."""
        try:
            import onnxruntime
            from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument
        except ImportError as exc:
            raise ConfigError(
                "the onnx runtime needs onnxruntime: pip install 'modelyard[onnx]'"
            ) from exc
        file = pick_file(path, *self.model_file)
        options = onnxruntime.SessionOptions()
        # A replica is one process; the orchestrator scales out with more processes, so threads
        # inside one would only compete with its neighbours for the same cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(
                str(file), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own unrelated classes for bad graphs
            raise InvalidInput(f"{file.name} is not a model onnxruntime can load: {exc}") from exc
        self._invalid_argument = InvalidArgument
        inputs = []
        for arg in self.session.get_inputs():
            datatype = ELEMENT_TYPES.get(arg.type)
            if datatype is None:
                raise InvalidInput(
                    f"ONNX input {arg.name!r} is {arg.type}: only tensor inputs can be served"
                )
            inputs.append(TensorSpec(arg.name, datatype, _shape(arg.shape)))
        # Non-tensor outputs (skl2onnx's ZipMap of class probabilities) have no OIP form.
        outputs = [
            TensorSpec(arg.name, ELEMENT_TYPES[arg.type], _shape(arg.shape))
            for arg in self.session.get_outputs()
            if arg.type in ELEMENT_TYPES
        ]
        if not outputs:
            raise InvalidInput(f"{file.name} has no tensor outputs: there is nothing to serve")
        self._dtypes = {spec.name: numpy_dtype(spec.datatype) for spec in inputs}
        self._output_names = [spec.name for spec in outputs]
        self._inputs, self._outputs = inputs, outputs

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {}
        for name, array in inputs.items():
            dtype = self._dtypes.get(name)
            if dtype is None:
                raise InvalidInput(
                    f"the model has no input {name!r}: use {', '.join(self._dtypes)}"
                )
            feed[name] = array if array.dtype == dtype else array.astype(dtype)
        try:
            results = self.session.run(self._output_names, feed)
        except self._invalid_argument as exc:
            raise InvalidInput(f"the model rejected the input: {exc}") from exc
        return dict(zip(self._output_names, results, strict=True))


def _shape(dims: list[Any]) -> tuple[int, ...]:
    # Symbolic ('batch') or unknown (None) dimensions take any size.
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims)
