"""Inference functions the tests deploy (imported by workers by ``module:function``)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from modelyard.realtime.functions import batched
from modelyard.realtime.history import History


def score(history: History, model: Any) -> dict[str, Any]:
    """What the history held (its bound is checked from this) and the model's answer."""
    trigger = history.trigger
    assert trigger is not None
    answer = None
    if model is not None:
        rows = [[float(history.count("view")), float(len(history)), 1.0, 0.5]]
        answer = model.native.predict_proba(rows)[0].tolist()
    return {
        "seqs": [e.seq for e in history],
        "n": trigger.data.get("n"),
        "views": history.count("view"),
        "model": answer,
    }


def flaky(history: History, model: Any) -> int:
    """Fails for entity ``bad``: other entities must not wait for it."""
    trigger = history.trigger
    assert trigger is not None
    if trigger.entity == "bad":
        raise RuntimeError(f"cannot score {trigger.event_id}")
    return len(history)


def score_v2(history: History, model: Any) -> dict[str, Any]:
    """`score` as another version of the function would answer: a shadow's to compare."""
    return {**score(history, model), "v": 2}


def stall(history: History, model: Any) -> int:
    """Never returns for entity ``stall``, after making the file ``$STALL_MARKER``: a worker
    process to kill -9 in the middle of a batch."""
    trigger = history.trigger
    assert trigger is not None
    if trigger.entity == "stall":
        Path(os.environ["STALL_MARKER"]).touch()
        threading.Event().wait()
    return len(history)


CALLS: list[int] = []
"""The size of each batch `score_batch` was called with, in this process."""


@batched
def score_batch(histories: list[History], model: Any) -> list[dict[str, Any]]:
    """`score` of each history in one call; fails the whole call when entity ``bad`` is in it,
    as a model that cannot take one row of a batch does."""
    CALLS.append(len(histories))
    if any(h.trigger is not None and h.trigger.entity == "bad" for h in histories):
        raise RuntimeError("a row of this batch cannot be scored")
    return [score(history, model) for history in histories]


@batched
def short_batch(histories: list[History], model: Any) -> list[int]:
    """One value too few: a broken batched function."""
    return [len(h) for h in histories][1:]


def picky(history: History, model: Any) -> int:
    """Fails on an event whose data has ``boom``: one trigger of an entity's run."""
    trigger = history.trigger
    assert trigger is not None
    if trigger.data.get("boom"):
        raise RuntimeError(f"cannot score {trigger.event_id}")
    return len(history)
