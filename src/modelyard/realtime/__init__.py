"""Realtime inference: user events in, stored predictions out, with the user's history.

The loop, one module per concept::

    product --events--> gateway ingest (`ingest`) --> raw event log per entity (`eventstore`)
      --> trigger rules (`rules`) --> queue of triggers (`queue`) --> realtime workers (`worker`:
      a Python function reading the entity's `history` and a model of the repository)
      --> prediction store (`predictions`) <-- reads through the gateway

Streams and realtime deployments are control-plane objects (`catalog`); the raw log, the queue and
the prediction store are plug-ins (`backends`) chosen by URL in the settings: SQLite files under
the home by default, PostgreSQL, NATS JetStream and Redis at scale. `replay` runs a deployment's
function over a past window of the log, each trigger seeing the history it saw online.

What a realtime function imports is here (``from modelyard.realtime import History, batched``),
loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["History", "Prediction", "batched"]

if TYPE_CHECKING:
    from modelyard.realtime.functions import batched
    from modelyard.realtime.history import History
    from modelyard.realtime.predictions import Prediction

_LAZY = {
    "History": "modelyard.realtime.history",
    "Prediction": "modelyard.realtime.predictions",
    "batched": "modelyard.realtime.functions",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelyard.realtime' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
