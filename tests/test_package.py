from __future__ import annotations

import subprocess
import sys
from importlib import resources

import modelyard


def test_import_is_light_and_has_no_side_effects(tmp_path: object) -> None:
    code = (
        "import sys, modelyard; heavy = {'fastapi', 'sqlalchemy', 'httpx', 'fsspec', "
        "'uvicorn', 'alembic'} & set(sys.modules); print(sorted(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_the_public_api_resolves() -> None:
    for name in modelyard.__all__:
        assert getattr(modelyard, name) is not None
    # A lazy name missing from __all__ is invisible to type checkers and `from modelyard import *`.
    lazy = set(vars(modelyard)["_LAZY"])
    assert lazy <= set(modelyard.__all__), sorted(lazy - set(modelyard.__all__))
    assert issubclass(modelyard.NotFound, modelyard.ModelyardError)
    assert resources.files("modelyard").joinpath("py.typed").is_file()
