"""Tests of the image-search reference app; its libraries are optional extras of modelyard."""

from __future__ import annotations

import importlib
import os

import pytest


def require(*modules: str) -> None:
    """Skip the calling test module where an optional library is missing; on CI, fail instead."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            reason = f"{name} is not installed ({exc}): the image-search app needs it"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"{reason} (CI=true: install it)", pytrace=False)
            pytest.skip(reason, allow_module_level=True)
