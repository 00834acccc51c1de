"""modelyard: an ML platform in one package.

``import modelyard`` stays light: the SDK client and the heavier subsystems load on first use.
What a user's program needs is here: ``from modelyard import Client, VersionSpec, step,
pipeline, Input, Output``, the errors, and the records the SDK returns (``VersionInfo``,
``DeploymentInfo``, ``RunInfo``, ...). None of them loads the server's code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from modelyard.auth.records import KeyInfo
    from modelyard.client import Client
    from modelyard.delivery.burnrate import Objective
    from modelyard.delivery.records import AlertInfo, RolloutInfo, SloStatus
    from modelyard.errors import (
        Conflict,
        Forbidden,
        IntegrityError,
        InvalidInput,
        ModelyardError,
        NotFound,
        Unauthenticated,
    )
    from modelyard.events.records import Event, Webhook
    from modelyard.pipelines.artifacts import Input, Output
    from modelyard.pipelines.dsl import pipeline, step
    from modelyard.pipelines.records import (
        PipelineInfo,
        RunInfo,
        ScheduleInfo,
        ScheduleSpec,
        StepInfo,
    )
    from modelyard.registry.records import (
        AliasChange,
        ArtifactInfo,
        Lineage,
        NamespaceInfo,
        VersionInfo,
        VersionSpec,
    )
    from modelyard.serving.records import (
        Analysis,
        DeploymentInfo,
        DeploymentSpec,
        ReplicaInfo,
        RevisionInfo,
        RolloutStrategy,
        TrafficTarget,
    )
    from modelyard.serving.signatures import infer_signature
    from modelyard.settings import Settings, load_settings
    from modelyard.sql.source import ImportResult, SqlSource
    from modelyard.types import FileEntry, ModelRef, Role

_LAZY = {
    "Client": "modelyard.client",
    "Settings": "modelyard.settings",
    "load_settings": "modelyard.settings",
    "FileEntry": "modelyard.types",
    "ModelRef": "modelyard.types",
    "Role": "modelyard.types",
    "Input": "modelyard.pipelines.artifacts",
    "Output": "modelyard.pipelines.artifacts",
    "pipeline": "modelyard.pipelines.dsl",
    "step": "modelyard.pipelines.dsl",
    "infer_signature": "modelyard.serving.signatures",
    "KeyInfo": "modelyard.auth.records",
    "Objective": "modelyard.delivery.burnrate",
    "ImportResult": "modelyard.sql.source",
    "SqlSource": "modelyard.sql.source",
    **dict.fromkeys(("AlertInfo", "RolloutInfo", "SloStatus"), "modelyard.delivery.records"),
    **dict.fromkeys(("Event", "Webhook"), "modelyard.events.records"),
    **dict.fromkeys(
        ("PipelineInfo", "RunInfo", "ScheduleInfo", "ScheduleSpec", "StepInfo"),
        "modelyard.pipelines.records",
    ),
    **dict.fromkeys(
        ("AliasChange", "ArtifactInfo", "Lineage", "NamespaceInfo", "VersionInfo", "VersionSpec"),
        "modelyard.registry.records",
    ),
    **dict.fromkeys(
        (
            "Analysis",
            "DeploymentInfo",
            "DeploymentSpec",
            "ReplicaInfo",
            "RevisionInfo",
            "RolloutStrategy",
            "TrafficTarget",
        ),
        "modelyard.serving.records",
    ),
    **dict.fromkeys(
        (
            "Conflict",
            "Forbidden",
            "IntegrityError",
            "InvalidInput",
            "ModelyardError",
            "NotFound",
            "Unauthenticated",
        ),
        "modelyard.errors",
    ),
}

__all__ = [
    "AlertInfo",
    "AliasChange",
    "Analysis",
    "ArtifactInfo",
    "Client",
    "Conflict",
    "DeploymentInfo",
    "DeploymentSpec",
    "Event",
    "FileEntry",
    "Forbidden",
    "ImportResult",
    "Input",
    "IntegrityError",
    "InvalidInput",
    "KeyInfo",
    "Lineage",
    "ModelRef",
    "ModelyardError",
    "NamespaceInfo",
    "NotFound",
    "Objective",
    "Output",
    "PipelineInfo",
    "ReplicaInfo",
    "RevisionInfo",
    "Role",
    "RolloutInfo",
    "RolloutStrategy",
    "RunInfo",
    "ScheduleInfo",
    "ScheduleSpec",
    "Settings",
    "SloStatus",
    "SqlSource",
    "StepInfo",
    "TrafficTarget",
    "Unauthenticated",
    "VersionInfo",
    "VersionSpec",
    "Webhook",
    "__version__",
    "infer_signature",
    "load_settings",
    "pipeline",
    "step",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelyard' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
