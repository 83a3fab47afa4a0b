"""Baselines and the cold-start blend, behind the evaluator's ``learn_one`` / ``recommend`` interface.

Every model here (and :class:`streamrec.models.online_mf.OnlineMF`) offers
``learn_one(user_id, item_id, weight, ts_ms)`` and ``recommend(user_id, k, exclude)``,
so the prequential evaluator replays them all on the same stream.

>>> model = CoOccurrence(history_size=3)
>>> for user, item in [("ann", "tea"), ("ann", "cake"), ("bob", "tea")]:
...     model.learn_one(user, item, 1.0, ts_ms=0)
>>> model.recommend("bob", k=3)
[('cake', 1.0)]
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, Protocol

from streamrec.models.online_mf import OnlineMF
from streamrec.models.popularity import PopularityRanking, decay

ItemId = str
UserId = str


class OnlineModel(Protocol):
    """What the prequential evaluator needs from a model."""

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


class CoOccurrence:
    """Incremental item-item co-occurrence over each user's last ``history_size`` items.

    Each event adds its weight to the pair (new item, each of the user's recent
    items), both ways. ``recommend`` sums, over the user's recent items, their
    co-occurrence with every candidate. Memory is bounded: ``history_size``
    items per user, and at most ``max_neighbours`` neighbours per item (when an
    item reaches twice that, it keeps its ``max_neighbours`` strongest).
    """

    model_version = "co-occurrence-v1"
    source = "co_occurrence"

    def __init__(self, history_size: int = 5, max_neighbours: int = 200) -> None:
        if history_size < 1 or max_neighbours < 1:
            raise ValueError(f"history_size and max_neighbours must be >= 1, got {history_size}, {max_neighbours}")
        self.history_size = history_size
        self.max_neighbours = max_neighbours
        self._recent: dict[UserId, deque[ItemId]] = {}
        self._neighbours: dict[ItemId, dict[ItemId, float]] = {}
        self._order: dict[ItemId, int] = {}  # catalogue age, for deterministic ties

    def learn_one(self, user_id: UserId, item_id: ItemId, weight: float = 1.0, ts_ms: int | None = None) -> None:
        """Count the item with each of the user's recent items, then remember it as recent."""
        self._order.setdefault(item_id, len(self._order))
        recent = self._recent.setdefault(user_id, deque(maxlen=self.history_size))
        if math.isfinite(weight) and weight > 0:
            for other in recent:
                if other != item_id:
                    self._add(item_id, other, weight)
                    self._add(other, item_id, weight)
        if item_id in recent:
            recent.remove(item_id)
        recent.append(item_id)

    def recommend(self, user_id: UserId, k: int, exclude: Collection[ItemId] = ()) -> list[tuple[ItemId, float]]:
        """Items co-occurring most with the user's recent items; ``[]`` for an unknown user."""
        scores: dict[ItemId, float] = {}
        for item in self._recent.get(user_id, ()):
            for other, count in self._neighbours.get(item, {}).items():
                scores[other] = scores.get(other, 0.0) + count
        excluded = set(exclude)
        ranked = sorted((item for item in scores if item not in excluded),
                        key=lambda item: (-scores[item], self._order[item]))
        return [(item, scores[item]) for item in ranked[:max(k, 0)]]

    def neighbour_count(self) -> int:
        """Total stored (item, neighbour) pairs: bounded by items x 2 x ``max_neighbours``."""
        return sum(map(len, self._neighbours.values()))

    def _add(self, item_id: ItemId, other: ItemId, weight: float) -> None:
        neighbours = self._neighbours.setdefault(item_id, {})
        neighbours[other] = neighbours.get(other, 0.0) + weight
        if len(neighbours) >= 2 * self.max_neighbours:
            strongest = sorted(neighbours.items(), key=lambda pair: -pair[1])[:self.max_neighbours]
            self._neighbours[item_id] = dict(strongest)


@dataclass(frozen=True, slots=True)
class BlendConfig:
    """How :class:`Blend` mixes the personal model with trending for users with few events.

    Attributes
    ----------
    rule
        ``"shrink"``: trending's weight is ``shrinkage / (shrinkage + n)`` after ``n``
        of the user's events; ``"switch"``: trending only while ``n < min_events``,
        then the personal model only; ``"off"``: the personal model only.
    candidates
        How many of each model's top items are blended (at least ``k``).
    """

    rule: Literal["shrink", "switch", "off"] = "shrink"
    shrinkage: float = 5.0
    min_events: int = 3
    candidates: int = 100

    def popularity_weight(self, n_events: int) -> float:
        """Trending's share in ``[0, 1]`` for a user with ``n_events`` events.

        >>> BlendConfig(rule="shrink", shrinkage=5.0).popularity_weight(15)
        0.25
        """
        if self.rule == "off":
            return 0.0
        if self.rule == "switch":
            return 1.0 if n_events < self.min_events else 0.0
        return self.shrinkage / (self.shrinkage + n_events) if self.shrinkage > 0 else 0.0


class Blend:
    """Online MF blended with time-decayed popularity, trending weighing more for users with few events.

    Each model's candidates are min-max normalised to ``[0, 1]`` (a missing
    candidate scores 0) and mixed with :meth:`BlendConfig.popularity_weight`.
    """

    model_version = "blend-v1"
    source = "blend"

    def __init__(self, personal: OnlineMF, popularity: DecayedPopularity, config: BlendConfig | None = None) -> None:
        self.personal = personal
        self.popularity = popularity
        self.config = config or BlendConfig()

    def learn_one(self, user_id: UserId, item_id: ItemId, weight: float = 1.0, ts_ms: int | None = None) -> None:
        """Both models learn the event."""
        self.personal.learn_one(user_id, item_id, weight, ts_ms)
        self.popularity.learn_one(user_id, item_id, weight, ts_ms)

    def recommend(self, user_id: UserId, k: int, exclude: Collection[ItemId] = ()) -> list[tuple[ItemId, float]]:
        """Top ``k`` by blended score, best first; trending alone for an unknown user."""
        share = self.config.popularity_weight(self.personal.n_events(user_id))
        if share >= 1.0:
            return self.popularity.recommend(user_id, k, exclude)
        personal = self.personal.recommend(user_id, max(k, self.config.candidates), exclude)
        if share <= 0.0:
            return personal[:k]
        if not personal:
            return self.popularity.recommend(user_id, k, exclude)
        trending = self.popularity.recommend(user_id, max(k, self.config.candidates), exclude)
        blended: dict[ItemId, float] = {}
        for items, share_of in ((personal, 1.0 - share), (trending, share)):
            for item, score in _normalised(items):
                blended[item] = blended.get(item, 0.0) + share_of * score
        order: dict[ItemId, int] = {}  # ties: the personal model's order first
        for rank, (item, _) in enumerate(personal + trending):
            order.setdefault(item, rank)
        ranked = sorted(blended, key=lambda item: (-blended[item], order[item]))
        return [(item, blended[item]) for item in ranked[:k]]


def _normalised(items: list[tuple[ItemId, float]]) -> list[tuple[ItemId, float]]:
    """Scores min-max scaled to [0, 1] (all 1 when they are equal)."""
    if not items:
        return []
    high, low = items[0][1], items[-1][1]
    spread = high - low
    return [(item, (score - low) / spread if spread > 0 else 1.0) for item, score in items]
