"""Popularity baselines behind the evaluator's ``learn_one`` / ``recommend`` interface.

Every model the evaluator compares (these, and
:class:`streamrec.models.online_recommender.InProcessRecommender` in its
co-visit-only, embedding-only and default settings) offers
``learn_one(user_id, item_id, weight, ts_ms)`` and ``recommend(user_id, k, exclude)``,
so the prequential evaluator replays them all on the same stream.

>>> model = MostPopular()
>>> for user, item in [("ann", "tea"), ("ann", "cake"), ("bob", "tea")]:
...     model.learn_one(user, item, 1.0, ts_ms=0)
>>> model.recommend("bob", k=3, exclude={"cake"})
[('tea', 2.0)]
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Protocol

from streamrec.models.online_mf import MAX_WEIGHT
from streamrec.models.popularity import PopularityRanking, decay

ItemId = str
UserId = str


class OnlineModel(Protocol):
    """What the prequential evaluator needs from a model.

    A model whose class sets ``excludes_seen = True`` remembers each user's seen items
    (``history_size`` of them, like the evaluator) and excludes them itself; the
    evaluator then passes no ``exclude`` list.
    """

    def learn_one(self, user_id: UserId, item_id: ItemId, weight: float = 1.0, ts_ms: int | None = None) -> None:
        """Learn from one event of ``weight`` at event time ``ts_ms`` (epoch milliseconds)."""
        ...

    def recommend(self, user_id: UserId, k: int, exclude: Collection[ItemId] = ()) -> list[tuple[ItemId, float]]:
        """Top ``k`` ``(item_id, score)`` pairs, best first, never an item in ``exclude``."""
        ...


class DecayedPopularity:
    """Trending: items ranked by the sum of their event weights, halved every ``half_life_s`` of event time.

    Wraps :class:`~streamrec.models.popularity.PopularityRanking`, the code the worker runs.
    Events without ``ts_ms`` count at the latest event time seen.
    """

    model_version = "decayed-popularity-v1"
    source = "trending"

    def __init__(self, half_life_s: float = 86_400.0, max_items: int = 1_000_000) -> None:
        self.ranking = PopularityRanking(half_life_s, max_items)

    def learn_one(self, user_id: UserId, item_id: ItemId, weight: float = 1.0, ts_ms: int | None = None) -> None:
        """Add the event's weight to the item's score (late events are decayed to the present)."""
        if not (math.isfinite(weight) and weight > 0):
            return
        weight = min(weight, MAX_WEIGHT)  # one event cannot swamp the ranking (nor overflow it)
        event_ms = self.ranking.latest_ts_ms if ts_ms is None else int(ts_ms)
        now_ms = max(event_ms, self.ranking.latest_ts_ms)  # every stored score is as of <= now_ms
        score = self.ranking.score(item_id, now_ms) + decay(weight, event_ms, now_ms, self.ranking.half_life_s)
        self.ranking.set(item_id, score, now_ms)

    def recommend(self, user_id: UserId, k: int, exclude: Collection[ItemId] = ()) -> list[tuple[ItemId, float]]:
        """The same top ``k`` for everyone (``user_id`` is ignored), ties by catalogue age."""
        return self.ranking.top_k(k, exclude)


class MostPopular(DecayedPopularity):
    """All-time popularity: the sum of each item's event weights, never decayed."""

    model_version = "most-popular-v1"
    source = "popular"

    def __init__(self, max_items: int = 1_000_000) -> None:
        super().__init__(half_life_s=math.inf, max_items=max_items)
