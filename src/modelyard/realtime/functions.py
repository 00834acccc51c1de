"""Inference functions: one history at a time, or a batch of histories at once.

A realtime deployment's function is ``function(history, model) -> value``. A function marked
`batched` is ``function(histories, model) -> values`` instead: the worker hands it the histories
of a whole claimed batch (up to 64 triggers, a hot entity's several) in one call, so a model pays
its per-call cost (a scikit-learn estimator validates its input on every ``predict``) once per
batch, not once per trigger, as KServe's and Ray Serve's request batching do.

The contract of a batched function: one value per history, in order, and each history's value the
one it would get alone (a model that scores rows independently). Replay relies on it: it batches
differently than the worker did, and must still give the same values. When a batched call raises,
returns the wrong number of values or runs over the timeout, each trigger of the batch is tried
alone (a one-history batch), so a bad event fails its own trigger only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from modelyard.realtime.history import History

F = TypeVar("F", bound=Callable[..., Any])
MARK = "__modelyard_batched__"


def batched(function: F) -> F:
    """Mark ``function(histories, model) -> values`` as taking a batch of histories::

    @batched
    def score(histories, model):
        rows = [[...features of h...] for h in histories]
        return [{"p": float(p)} for p in model.native.predict_proba(rows)[:, 1]]
    """
    setattr(function, MARK, True)
    return function


def is_batched(function: Callable[..., Any]) -> bool:
    return bool(getattr(function, MARK, False))


def call_many(function: Callable[..., Any], histories: Sequence[History], model: Any) -> list[Any]:
    """The function's values for ``histories``: one call if it is batched, else one per history."""
    if not is_batched(function):
        return [function(history, model) for history in histories]
    values = function(list(histories), model)
    if not isinstance(values, Sequence) and hasattr(values, "tolist"):
        values = values.tolist()  # a NumPy array
    if not isinstance(values, Sequence) or isinstance(values, str | bytes):
        raise TypeError(
            f"a batched function returns a list of values, one per history; it returned a "
            f"{type(values).__name__}"
        )
    if len(values) != len(histories):
        raise ValueError(
            f"a batched function returns one value per history: it got {len(histories)} "
            f"histories and returned {len(values)} values"
        )
    return list(values)
