"""A synthetic click stream of a shop, with a purchase outcome that depends on behaviour.

Users have a latent intent (Beta(2, 5)) and an activity weight that follows Zipf's law (a few
users are hot). A session is a run of views and searches of one user; an intent-driven share of
views ends in ``add_to_cart`` (sometimes ``remove_from_cart``), and the session ends in a
``purchase`` with a probability that grows with intent, items viewed twice, carts and the
session's length and shrinks with removals: a model of the history can learn it, not perfectly.
Pure and seeded: the same arguments give the same events.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

ITEMS = 500


@dataclass(frozen=True)
class Shop:
    users: int = 2000
    zipf: float = 1.1
    """Exponent of the users' activity: weight of the user of rank r is 1 / r**zipf."""
    seed: int = 0

    def intents(self) -> np.ndarray:
        return np.asarray(np.random.default_rng(self.seed).beta(2.0, 5.0, self.users), dtype=float)

    def weights(self) -> np.ndarray:
        ranks = np.random.default_rng(self.seed + 1).permutation(self.users) + 1
        weights = 1.0 / ranks.astype(float) ** self.zipf
        return np.asarray(weights / weights.sum(), dtype=float)


def sessions(
    shop: Shop, count: int, start: float, end: float, seed: int, prefix: str = "s"
) -> Iterator[dict[str, object]]:
    """``count`` sessions spread over ``[start, end)``, their events in time order (``ts`` in Unix
    seconds); event ids are ``{prefix}{session}-{n}``, unique per (prefix, seed)."""
    rng = np.random.default_rng(seed)
    intents, weights = shop.intents(), shop.weights()
    users = rng.choice(shop.users, size=count, p=weights)
    starts = np.sort(rng.uniform(start, end, count))
    pending: list[tuple[float, int, dict[str, object]]] = []
    for number, (user, began) in enumerate(zip(users, starts, strict=True)):
        for n, event in enumerate(_session(rng, float(intents[user]), int(user), float(began))):
            event["event_id"] = f"{prefix}{seed}-{number}-{n}"
            event["session"] = f"{prefix}{seed}-{number}"
            pending.append((float(event["ts"]), len(pending), event))  # type: ignore[arg-type]
    pending.sort()
    for _, _, event in pending:
        yield event


def _session(
    rng: np.random.Generator, intent: float, user: int, began: float
) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    now = began
    seen: list[int] = []
    carts = removes = revisits = 0

    def add(type: str, **data: object) -> None:
        events.append({"user_id": f"u{user}", "type": type, "ts": round(now, 3), **data})

    for _ in range(1 + rng.poisson(2 + 8 * intent)):
        now += rng.exponential(20.0)
        if rng.random() < 0.2:
            add("search", query=f"q{rng.integers(50)}")
            continue
        item = int(rng.choice(seen)) if seen and rng.random() < 0.2 + 0.5 * intent else None
        revisits += item is not None
        item = item if item is not None else int(rng.integers(ITEMS))
        seen.append(item)
        price = round(5 + (item % 97) * 1.5, 2)
        add("view", item=item, price=price)
        if rng.random() < 0.05 + 0.3 * intent:
            now += rng.exponential(5.0)
            carts += 1
            add("add_to_cart", item=item, price=price)
            if rng.random() < 0.25 * (1 - intent):
                now += rng.exponential(10.0)
                removes += 1
                add("remove_from_cart", item=item, price=price)
    odds = -3.5 + 7.0 * intent + 0.6 * revisits + 0.8 * carts - 1.5 * removes + 0.05 * len(seen)
    if carts and rng.random() < 1 / (1 + math.exp(-odds)):
        now += rng.exponential(30.0)
        add("purchase", items=carts - removes)
    return events
