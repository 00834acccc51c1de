"""Typed artifacts steps read and write, as in Kubeflow Pipelines v2.

A step sees an artifact as a local ``path`` (a file or a folder), the ``uri`` it is stored at, and
``metadata``, a JSON object the step may fill. ``Input[Dataset]`` and ``Output[Model]`` annotate
step parameters; they are ``Annotated`` aliases, so type checkers see plain ``Dataset``/``Model``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, TypeVar


class Artifact:
    """Any artifact; an ``Input[Artifact]`` accepts every artifact type."""

    TYPE: ClassVar[str] = "Artifact"

    def __init__(self, path: str, uri: str = "", metadata: dict[str, Any] | None = None) -> None:
        self.path = path
        self.uri = uri
        self.metadata: dict[str, Any] = metadata if metadata is not None else {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r}, uri={self.uri!r})"


class Dataset(Artifact):
    TYPE = "Dataset"


class Model(Artifact):
    TYPE = "Model"


class Metrics(Artifact):
    """Scalar metrics; ``log_metric`` keeps them in ``metadata`` (and the file at ``path``)."""

    TYPE = "Metrics"

    def log_metric(self, name: str, value: float) -> None:
        self.metadata[name] = float(value)


ARTIFACT_TYPES: dict[str, type[Artifact]] = {
    cls.TYPE: cls for cls in (Artifact, Dataset, Model, Metrics)
}


class InputMarker:
    """Marks an ``Annotated`` parameter as an artifact the step reads."""


class OutputMarker:
    """Marks an ``Annotated`` parameter as an artifact the step writes."""


A = TypeVar("A")
Input = Annotated[A, InputMarker]
Output = Annotated[A, OutputMarker]
