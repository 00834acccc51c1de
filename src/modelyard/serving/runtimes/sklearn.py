"""scikit-learn models saved with joblib (or pickle): one input ``X``, outputs named by method.

Without a signature a model answers ``predict``, and a classifier also ``predict_proba`` when a
request names it in its ``outputs`` list (a request naming none gets ``predict`` alone, as before
the probabilities were offered). A signature's ``outputs`` list the methods it answers, all of them
by default unless its ``default_outputs`` names fewer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import ConfigError, InvalidInput
from modelyard.serving.protocol import TensorSpec, oip_datatype
from modelyard.serving.runtimes import (
    Runtime,
    pick_file,
    signature_default_outputs,
    signature_specs,
)

# The methods a signature may name as outputs: read-only ones, never ``fit``-like methods.
METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function", "transform")


class SklearnRuntime(Runtime):
    name = "sklearn"
    platform = "sklearn"
    model_file = ("model.joblib", ("*.joblib", "*.pkl"))

    def __init__(self) -> None:
        super().__init__()
        self.model: Any = None
        self._methods: dict[str, Callable[[Any], Any]] = {}
        self._defaults: list[str] = []
        self._cast_to: np.dtype[Any] | None = None

    def load(self, path: Path, signature: Mapping[str, Any]) -> None:
        try:
            import joblib
        except ImportError as exc:
            raise ConfigError(
                "the sklearn runtime needs scikit-learn and joblib: "
                "pip install 'modelyard[sklearn]'"
            ) from exc
        file = pick_file(path, *self.model_file)
        try:
            self.model = joblib.load(file)
        except Exception as exc:
            raise InvalidInput(
                f"cannot load {file.name} with joblib ({type(exc).__name__}: {exc}): push a "
                "model saved with joblib.dump by a compatible scikit-learn"
            ) from exc
        inputs = signature_specs(signature, "inputs")
        outputs = signature_specs(signature, "outputs")
        if len(inputs) > 1:
            raise InvalidInput(
                f"a scikit-learn model takes one input, but the signature lists {len(inputs)}: "
                "list one input (the feature matrix)"
            )
        features = getattr(self.model, "n_features_in_", None)
        if not inputs and features is not None:
            inputs = [TensorSpec("input-0", "FP64", (-1, int(features)))]
        if features is not None:
            # Fitted on float64 features: cast integer or boolean input the way fit saw it.
            self._cast_to = np.dtype(np.float64)
        inferred = not outputs
        if inferred:
            outputs = [self._predict_spec(), *self._probability_spec()]
        defaults = signature_default_outputs(signature, outputs)
        if defaults is None and inferred:
            defaults = ["predict"]
        self._methods = {}
        for spec in outputs:
            method = getattr(self.model, spec.name, None) if spec.name in METHODS else None
            if method is None:
                raise InvalidInput(
                    f"the signature lists output {spec.name!r}, but {type(self.model).__name__} "
                    f"has no such method: name outputs after one of "
                    f"{', '.join(m for m in METHODS if hasattr(self.model, m))}"
                )
            self._methods[spec.name] = method
        self._inputs, self._outputs = inputs, outputs
        self._defaults = defaults or [spec.name for spec in outputs]

    @property
    def default_outputs(self) -> list[str] | None:
        return self._defaults if len(self._defaults) < len(self._methods) else None

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._call(inputs, self._defaults)

    def predict_outputs(
        self, inputs: dict[str, np.ndarray], names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        unknown = [name for name in names if name not in self._methods]
        if unknown:
            raise InvalidInput(
                f"the model has no output {unknown[0]!r}: ask for "
                f"{' or '.join(map(repr, self._methods))}, or leave 'outputs' out"
            )
        return self._call(inputs, names)

    def _call(self, inputs: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        if len(inputs) != 1:
            raise InvalidInput(
                f"a scikit-learn model takes one input, got {len(inputs)}: send one tensor"
            )
        (x,) = inputs.values()
        if self._cast_to is not None and x.dtype.kind in "biu":
            x = x.astype(self._cast_to)
        try:
            return {name: np.asarray(self._methods[name](x)) for name in names}
        except ValueError as exc:
            # scikit-learn validates input with ValueError (wrong feature count, NaN, strings).
            raise InvalidInput(f"the model rejected the input: {exc}") from exc

    def _predict_spec(self) -> TensorSpec:
        """What ``predict`` returns: classifiers answer ``classes_`` values, regressors FP64."""
        classes = getattr(self.model, "classes_", None)
        if isinstance(classes, np.ndarray):
            return TensorSpec("predict", oip_datatype(classes.dtype), (-1,))
        if isinstance(classes, list) and classes:  # one label set per output
            return TensorSpec("predict", oip_datatype(classes[0].dtype), (-1, len(classes)))
        outputs = int(getattr(self.model, "n_outputs_", 1))
        return TensorSpec("predict", "FP64", (-1,) if outputs == 1 else (-1, outputs))

    def _probability_spec(self) -> list[TensorSpec]:
        """``predict_proba`` of a single-output classifier that has it (one column per class):
        the KServe sklearn server's other method. Multi-output classifiers answer a list of
        arrays, which is not one tensor."""
        classes = getattr(self.model, "classes_", None)
        if not isinstance(classes, np.ndarray) or not hasattr(self.model, "predict_proba"):
            return []
        return [TensorSpec("predict_proba", "FP64", (-1, len(classes)))]
