"""The model an inference function gets: a version of the repository, pulled and loaded once.

`ModelSource` follows a deployment's model reference (an alias or ``latest`` moves): it resolves
the reference through the API every ``refresh_s``, pulls a new version into the cache (verified,
atomic) and loads it with the version's serving runtime, then swaps it in. A prediction takes the
current model once, at its start, and names that version: a version is pinned per prediction.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.client import Client
from modelyard.registry.records import VersionInfo
from modelyard.serving.runtimes import Runtime, load_runtime
from modelyard.types import ModelRef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Model:
    version: VersionInfo
    runtime: Runtime
    path: Path

    @property
    def label(self) -> str:
        """``namespace/name@number``: what a prediction records."""
        return f"{self.version.namespace}/{self.version.name}@{self.version.number}"

    @property
    def native(self) -> Any:
        """The runtime's own model object (a scikit-learn estimator), else the runtime."""
        return getattr(self.runtime, "model", None) or self.runtime

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The runtime's ``predict`` over named numpy arrays (the serving path's)."""
        return self.runtime.predict(inputs)


def load_model(client: Client, ref: ModelRef | str) -> Model:
    """Resolve ``ref``, pull that version (or reuse the cached copy) and load it."""
    version = client.get_version(ref)
    path = client.pull(f"{version.namespace}/{version.name}@{version.number}")
    runtime = load_runtime(version.runtime or "sklearn")
    runtime.load(Path(path), version.signature or {})
    return Model(version, runtime, Path(path))


class ModelSource:
    def __init__(self, client: Client, ref: ModelRef, refresh_s: float = 1.0) -> None:
        self.client = client
        self.ref = ref
        self.refresh_s = refresh_s
        self._model: Model | None = None
        self._lock = threading.Lock()
        self._checked = 0.0

    def current(self) -> Model:
        """The model to pin for a prediction starting now (loads the first one if needed)."""
        model = self._model
        if model is None or time.monotonic() - self._checked >= self.refresh_s:
            with self._lock:
                if self._model is None or time.monotonic() - self._checked >= self.refresh_s:
                    self._refresh()
            model = self._model
        assert model is not None
        return model

    def _refresh(self) -> None:
        self._checked = time.monotonic()
        try:
            version = self.client.get_version(self.ref)
        except Exception:
            if self._model is None:
                raise
            log.warning("could not resolve %s; keeping version %s", self.ref, self._model.label)
            return
        if self._model is None or version.id != self._model.version.id:
            model = load_model(self.client, f"{version.namespace}/{version.name}@{version.number}")
            if self._model is not None:
                log.info("model %s -> %s", self._model.label, model.label)
            self._model = model
