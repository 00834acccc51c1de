"""The shop's inference function: features of a user's last 100 events, and the purchase model.

`features` is what the training set is built from (by replay, so each row sees the history its
trigger saw) and `score` (batched: one model call per batch of triggers) is what the realtime
deployment runs: one function of the history for both, so training and serving cannot drift
apart.
"""

from __future__ import annotations

from typing import Any

from modelyard.realtime.functions import batched
from modelyard.realtime.history import History

FEATURES = (
    "session_views",
    "session_carts",
    "session_removes",
    "session_searches",
    "session_revisits",
    "session_minutes",
    "recent_events",
    "recent_purchases",
    "recent_carts",
    "recent_views",
    "recent_sessions",
    "price",
)


def features(history: History, model: Any = None) -> dict[str, float]:
    trigger = history.trigger
    assert trigger is not None
    recent = history.last(100)
    session = [e for e in recent if e.data.get("session") == trigger.data.get("session")]
    items = [e.data.get("item") for e in session if e.type == "view"]
    return {
        "session_views": float(len(items)),
        "session_carts": float(sum(e.type == "add_to_cart" for e in session)),
        "session_removes": float(sum(e.type == "remove_from_cart" for e in session)),
        "session_searches": float(sum(e.type == "search" for e in session)),
        "session_revisits": float(len(items) - len(set(items))),
        "session_minutes": (trigger.time - session[0].time) / 60 if session else 0.0,
        "recent_events": float(len(recent)),
        "recent_purchases": float(recent.count("purchase")),
        "recent_carts": float(recent.count("add_to_cart")),
        "recent_views": float(recent.count("view")),
        "recent_sessions": float(len({e.data.get("session") for e in recent})),
        "price": float(trigger.data.get("price", 0.0)),
    }


@batched
def score(histories: list[History], model: Any) -> list[dict[str, float]]:
    """The probability that each add-to-cart's session ends in a purchase: the model on the
    whole batch of triggers at once (see `modelyard.realtime.functions.batched`)."""
    rows = [[row[name] for name in FEATURES] for row in map(features, histories)]
    probabilities = model.native.predict_proba(rows)[:, 1]
    return [{"purchase_probability": round(float(p), 4)} for p in probabilities]
