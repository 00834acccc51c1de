"""Image-similarity search: embed a catalog with a pretrained CNN, index it, search top-k.

`embedders` turns images into unit vectors (EfficientNet-Lite0 built in, CLIP or SigLIP as
plug-ins), `index` builds exact, HNSW or IVF-PQ faiss indexes over them, grades them with
recall@k and tunes their search-time knob to a recall target, and `catalog` provides offline
image catalogs and the dataset folder layout.
Names load on first use, so importing this package does not import torch or faiss.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "ATTRIBUTION",
    "EfficientNetLite0",
    "Embedder",
    "Item",
    "Tuning",
    "VectorIndex",
    "augment",
    "build_index",
    "decode_image",
    "emoji_catalog",
    "folder_catalog",
    "load_embedder",
    "load_index",
    "near_duplicate_set",
    "read_catalog",
    "recall_at_k",
    "tune_recall",
    "write_catalog",
]

if TYPE_CHECKING:
    from modelyard.apps.image_search.catalog import (
        ATTRIBUTION,
        Item,
        augment,
        emoji_catalog,
        folder_catalog,
        near_duplicate_set,
        read_catalog,
        write_catalog,
    )
    from modelyard.apps.image_search.embedders import (
        EfficientNetLite0,
        Embedder,
        decode_image,
        load_embedder,
    )
    from modelyard.apps.image_search.index import (
        Tuning,
        VectorIndex,
        build_index,
        load_index,
        recall_at_k,
        tune_recall,
    )

_MODULES = {
    "catalog": (
        "ATTRIBUTION",
        "Item",
        "augment",
        "emoji_catalog",
        "folder_catalog",
        "near_duplicate_set",
        "read_catalog",
        "write_catalog",
    ),
    "embedders": ("EfficientNetLite0", "Embedder", "decode_image", "load_embedder"),
    "index": ("Tuning", "VectorIndex", "build_index", "load_index", "recall_at_k", "tune_recall"),
}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
