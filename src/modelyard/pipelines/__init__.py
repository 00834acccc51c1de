"""Pipelines: a DSL shaped like Kubeflow Pipelines v2, a local executor, caching, schedules.

What pipeline code imports is here (``from modelyard.pipelines import step, pipeline, Input,
Output, Dataset``), loaded on first use so that importing the package costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "Artifact",
    "Collected",
    "Dataset",
    "If",
    "Input",
    "Metrics",
    "Model",
    "Output",
    "ParallelFor",
    "importer",
    "pipeline",
    "sql_import",
    "step",
]

if TYPE_CHECKING:
    from modelyard.pipelines.artifacts import Artifact, Dataset, Input, Metrics, Model, Output
    from modelyard.pipelines.dsl import Collected, If, ParallelFor, importer, pipeline, step
    from modelyard.sql.task import sql_import

_LAZY = {
    **dict.fromkeys(
        ("Artifact", "Dataset", "Input", "Metrics", "Model", "Output"),
        "modelyard.pipelines.artifacts",
    ),
    **dict.fromkeys(
        ("Collected", "If", "ParallelFor", "importer", "pipeline", "step"),
        "modelyard.pipelines.dsl",
    ),
    "sql_import": "modelyard.sql.task",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelyard.pipelines' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
