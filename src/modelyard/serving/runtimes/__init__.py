"""Runtimes: what turns a pulled model version's folder into a ``predict`` function.

Built-ins are ``sklearn``, ``onnx`` and ``python``; a package adds its own with an entry point in
the ``modelyard.runtimes`` group, and any ``package.module:ClassName`` works too. Each runtime
module imports its heavy library (scikit-learn, onnxruntime) inside ``load``, so importing this
package, or choosing a runtime, costs nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelyard.errors import InvalidInput
from modelyard.plugins import Family
from modelyard.serving.protocol import TensorSpec

ENTRY_POINT_GROUP = "modelyard.runtimes"
_BUILTINS = {
    "onnx": "modelyard.serving.runtimes.onnx:OnnxRuntime",
    "python": "modelyard.serving.runtimes.python:PythonRuntime",
    "sklearn": "modelyard.serving.runtimes.sklearn:SklearnRuntime",
}


@dataclass(frozen=True)
class HttpRequest:
    """A request to one of a runtime's own routes (beyond the inference protocol)."""

    method: str
    body: bytes
    content_type: str
    query: dict[str, str]


RouteHandler = Callable[[HttpRequest], tuple[int, bytes]]
"""Answers (status, JSON body); raise modelyard errors for client mistakes (400/404/413)."""


class Runtime(ABC):
    """A loaded model: its tensor specs and a ``predict`` over named numpy arrays."""

    name: ClassVar[str]
    platform: ClassVar[str]
    model_file: ClassVar[tuple[str, tuple[str, ...]] | None] = None
    """The file ``load`` reads from the version's top folder: a preferred name, else the only
    file matching the patterns (`pick_file`); a push checks it is there. None: not one file."""
    # Rows are independent, so requests may be stacked on axis 0. An instance attribute rather
    # than a ClassVar: the python runtime learns it from the model's own module at load time.
    batchable: bool = True

    def __init__(self) -> None:
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []

    @abstractmethod
    def load(self, path: Path, signature: Mapping[str, Any]) -> None:
        """Load the model version in ``path``; ``signature`` is OIP-metadata shaped, or empty."""

    @abstractmethod
    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for validated inputs by name: the `default_outputs`, where the runtime
        has some, else all it answers."""

    def predict_outputs(
        self, inputs: dict[str, np.ndarray], names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """The outputs ``names`` (a request's ``outputs`` list), for a request that asks for more
        than `default_outputs`. The default is ``predict``'s answer, from which the server picks
        ``names``; a runtime that computes some outputs only on request overrides it and raises
        `InvalidInput` for a name it does not answer."""
        return self.predict(inputs)

    @property
    def default_outputs(self) -> list[str] | None:
        """The outputs ``predict`` answers, where it answers fewer than `outputs` lists (the
        others only when a request names them); None: all of them."""
        return None

    def predict_batch(self, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """One ``predict`` over the requests stacked on axis 0, split back by their row counts.

        Falls back to one ``predict`` per request when stacking cannot work (scalars, differing
        names or trailing shapes) or the outputs do not have one row per input row, so a model that
        is not row-wise still answers correctly, only slower.
        """
        if len(batch) == 1:
            return [self.predict(batch[0])]
        if not self.batchable or not batch:
            return [self.predict(inputs) for inputs in batch]
        names = list(batch[0])
        counts = [count for inputs in batch if (count := _rows(inputs)) is not None]
        if not names or len(counts) != len(batch) or any(list(x) != names for x in batch):
            return [self.predict(inputs) for inputs in batch]
        try:
            stacked = {name: np.concatenate([inputs[name] for inputs in batch]) for name in names}
        except ValueError:
            return [self.predict(inputs) for inputs in batch]
        outputs = self.predict(stacked)
        if any(array.ndim == 0 or array.shape[0] != sum(counts) for array in outputs.values()):
            return [self.predict(inputs) for inputs in batch]
        bounds = np.cumsum(counts)[:-1]
        split = {name: np.split(array, bounds) for name, array in outputs.items()}
        return [{name: parts[i] for name, parts in split.items()} for i in range(len(batch))]

    def routes(self) -> Mapping[str, RouteHandler]:
        """Paths of the runtime's own API, served next to the inference protocol (an image
        search's ``/search``, say). Handlers run on the server's worker thread."""
        return {}

    @property
    def inputs(self) -> list[TensorSpec]:
        """Input specs; empty means any input is accepted. Callers must not mutate the list."""
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._outputs


RUNTIMES: Family[Runtime] = Family("runtime", ENTRY_POINT_GROUP, Runtime, _BUILTINS)


def load_runtime(name: str) -> Runtime:
    """A new, unloaded runtime: a built-in, an entry point, or ``package.module:ClassName``."""
    return RUNTIMES.load(name)()


def runtime_names() -> list[str]:
    """Built-in runtime names, then those that installed packages add, sorted."""
    return RUNTIMES.names()


def _rows(inputs: Mapping[str, np.ndarray]) -> int | None:
    counts = {array.shape[0] if array.ndim else None for array in inputs.values()}
    return counts.pop() if len(counts) == 1 else None


def pick_file(path: Path, preferred: str, patterns: tuple[str, ...]) -> Path:
    """``path/preferred``, else the only file matching ``patterns``; otherwise say what is there."""
    chosen = path / preferred
    if chosen.is_file():
        return chosen
    found = sorted({p for pattern in patterns for p in path.glob(pattern) if p.is_file()})
    if len(found) == 1:
        return found[0]
    kinds = " or ".join(patterns)
    if not found:
        present = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
        raise InvalidInput(
            f"no model file in {path}: expected {preferred} or one {kinds} file; "
            f"found {', '.join(present) or 'nothing'}"
        )
    raise InvalidInput(
        f"several model files in {path} ({', '.join(p.name for p in found)}): "
        f"name the one to serve {preferred}"
    )


def signature_specs(signature: Mapping[str, Any], key: str) -> list[TensorSpec]:
    """The ``inputs`` or ``outputs`` specs a version's signature lists (empty when absent)."""
    items = signature.get(key) or []
    if not isinstance(items, list):
        raise InvalidInput(f"the signature's {key!r} must be a list of tensor specs")
    return [TensorSpec.from_dict(item) for item in items]


def signature_default_outputs(
    signature: Mapping[str, Any], outputs: Sequence[TensorSpec]
) -> list[str] | None:
    """The signature's ``default_outputs``: the names, among ``outputs``, that a request naming
    no outputs gets (None when the signature does not say)."""
    names = signature.get("default_outputs")
    if names is None:
        return None
    known = [spec.name for spec in outputs]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise InvalidInput(
            "the signature's 'default_outputs' must be a non-empty list of output names, "
            f"e.g. {known[:1]}"
        )
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvalidInput(
            f"the signature's default_outputs name {', '.join(map(repr, unknown))}, which its "
            f"outputs do not list ({', '.join(map(repr, known)) or 'none'})"
        )
    return list(names)
