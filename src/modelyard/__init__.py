"""modelyard: an ML platform in one package.

``import modelyard`` stays light: the SDK client and the heavier subsystems load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Conflict",
    "FileEntry",
    "Forbidden",
    "IntegrityError",
    "InvalidInput",
    "ModelRef",
    "ModelyardError",
    "NotFound",
    "Role",
    "Settings",
    "Unauthenticated",
    "VersionSpec",
    "__version__",
    "pipeline",
    "step",
]

if TYPE_CHECKING:
    from modelyard.client import Client
    from modelyard.errors import (
        Conflict,
        Forbidden,
        IntegrityError,
        InvalidInput,
        ModelyardError,
        NotFound,
        Unauthenticated,
    )
    from modelyard.pipelines.dsl import pipeline, step
    from modelyard.registry.versions import VersionSpec
    from modelyard.settings import Settings
    from modelyard.types import FileEntry, ModelRef, Role

_LAZY = {
    "Client": "modelyard.client",
    "Settings": "modelyard.settings",
    "FileEntry": "modelyard.types",
    "ModelRef": "modelyard.types",
    "Role": "modelyard.types",
    "VersionSpec": "modelyard.registry.versions",
    "pipeline": "modelyard.pipelines.dsl",
    "step": "modelyard.pipelines.dsl",
    **{
        name: "modelyard.errors"
        for name in (
            "Conflict",
            "Forbidden",
            "IntegrityError",
            "InvalidInput",
            "ModelyardError",
            "NotFound",
            "Unauthenticated",
        )
    },
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelyard' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
