"""Plain Python models: a ``model.py`` in the version's folder with a ``predict`` function.

``model.py`` may define ``load(path)`` (called once, with the folder), must define
``predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray] | np.ndarray`` and may set
``batchable = False`` when its rows are not independent. It is imported as a package rooted at the
folder, under a name of its own, so two versions never share module state and ``model.py`` can
import files beside it relatively (``from .features import encode``) without touching ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from modelyard.errors import InvalidInput
from modelyard.serving.runtimes import Runtime, signature_specs
from modelyard.serving.signatures import describe


class PythonRuntime(Runtime):
    name = "python"
    platform = "python"
    model_file = ("model.py", ())

    def __init__(self) -> None:
        super().__init__()
        self.module: ModuleType | None = None
        self._predict: Callable[[dict[str, np.ndarray]], Any] | None = None

    def load(self, path: Path, signature: Mapping[str, Any]) -> None:
        file = path / "model.py"
        if not file.is_file():
            raise InvalidInput(
                f"the python runtime needs {file}: a model.py defining predict(inputs)"
            )
        self._inputs = signature_specs(signature, "inputs")
        self._outputs = signature_specs(signature, "outputs")
        module = _import(file)
        predict = getattr(module, "predict", None)
        if not callable(predict):
            raise InvalidInput(
                f"{file} defines no predict function: add "
                "def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]"
            )
        batchable = getattr(module, "batchable", True)
        if not isinstance(batchable, bool):
            raise InvalidInput(f"{file}: 'batchable' must be True or False, got {batchable!r}")
        load = getattr(module, "load", None)
        if callable(load):
            try:
                load(path)
            except Exception as exc:
                raise InvalidInput(f"{file}: load({path}) failed: {exc!r}") from exc
        self.module, self._predict, self.batchable = module, predict, batchable

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._predict is None:
            raise InvalidInput("the python runtime has no model: call load(path, signature) first")
        result = self._predict(inputs)
        if isinstance(result, Mapping):
            outputs = {str(name): np.asarray(value) for name, value in result.items()}
        else:
            outputs = {"output-0": np.asarray(result)}
        if not self._outputs:
            # Without a signature the first answer describes the outputs for model metadata.
            self._outputs = [
                describe(name, array, self.batchable) for name, array in outputs.items()
            ]
        return outputs


def _import(file: Path) -> ModuleType:
    name = f"modelyard_model_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(
        name, file, submodule_search_locations=[str(file.parent)]
    )
    if spec is None or spec.loader is None:
        raise InvalidInput(f"{file} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it, as a normal import would, so dataclasses, pickle and relative
    # imports inside model.py can find their own module.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise InvalidInput(f"{file} failed to import: {exc!r}") from exc
    return module
