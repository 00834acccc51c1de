"""Cache keys: a step is skipped when an earlier success had the same key.

The key hashes the step's source and the module it lives in (helpers the step calls change its
behaviour too), its parameter values, the content digests of its input artifacts (never their
names or URIs), and its environment (variables, Python version and the step's image, if it names
one). So changed data under the same name never hits, and the same data under a new name does.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

from modelyard.pipelines.spec import StepSpec


def _digests(record: Any) -> Any:
    if isinstance(record, list):
        return [_digests(r) for r in record]
    return record["digest"]


def cache_key(
    step: StepSpec,
    module_source: str,
    params: dict[str, Any],
    inputs: dict[str, Any],
    env: dict[str, str],
) -> str:
    material = {
        "source": step.source_digest,
        "module": hashlib.sha256(module_source.encode()).hexdigest(),
        "outputs": sorted((o.name, o.type) for o in step.outputs),
        "params": params,
        "inputs": {name: _digests(record) for name, record in inputs.items()},
        "env": env,
        "python": list(sys.version_info[:2]),
    }
    if step.image:
        material["image"] = step.image
    encoded = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()
