"""Field paths for the fake API server: the leaf fields of an object (what server-side apply
tracks ownership of, lists being atomic leaves here), reading, setting and removing them, the
``managedFields`` rendering of a set of them, and label selector matching."""

from __future__ import annotations

import copy
from typing import Any

FieldPath = tuple[str, ...]
_SYSTEM = {"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"}


def leaves(obj: Any, prefix: FieldPath = ()) -> dict[FieldPath, Any]:
    """Leaf fields of an applied configuration (lists are leaves), without system metadata."""
    if isinstance(obj, dict) and obj:
        out: dict[FieldPath, Any] = {}
        for key, value in obj.items():
            if (prefix == ("metadata",) and key in _SYSTEM) or (prefix == () and key == "status"):
                continue
            out.update(leaves(value, (*prefix, key)))
        return out
    return {prefix: obj}


def set_(obj: dict[str, Any], path: FieldPath, value: Any) -> None:
    for key in path[:-1]:
        obj = obj.setdefault(key, {})
    obj[path[-1]] = copy.deepcopy(value)


def get(obj: Any, path: FieldPath) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def remove(obj: dict[str, Any], path: FieldPath) -> None:
    parents = [obj]
    for key in path[:-1]:
        nxt = parents[-1].get(key)
        if not isinstance(nxt, dict):
            return
        parents.append(nxt)
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):  # drop maps left empty
        if not parents[depth]:
            parents[depth - 1].pop(path[depth - 1], None)


def fields_v1(paths: set[FieldPath]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return tree


def matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True
