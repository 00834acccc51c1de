"""Validation of Kubernetes objects against the published OpenAPI schemas, offline and strict
(unknown fields are errors), for the oldest version modelyard supports and the newest one the
validator bundles."""

from __future__ import annotations

from typing import Any

import kubernetes_validate

VERSIONS = ("1.33.0", kubernetes_validate.latest_version())


def check(obj: dict[str, Any]) -> None:
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            name = obj.get("metadata", {}).get("name")
            raise AssertionError(
                f"{obj.get('kind')} {name} is invalid for Kubernetes {version}: "
                f"{'.'.join(map(str, exc.path))}: {exc.message}"
            ) from exc
