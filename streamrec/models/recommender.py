"""The recommender behind ``recommend(history, k, exclude)``: the seam later models plug into."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from streamrec.models.popularity import PopularityRanking
from streamrec.models.user_state import UserState

ItemId = str


class Recommender(Protocol):
    """What the query path needs from a model."""

    model_version: str
    source: str

    def recommend(self, history: UserState, k: int, exclude: Iterable[ItemId] = ()
                  ) -> list[tuple[ItemId, float]]:
        """Top ``k`` ``(item_id, score)`` pairs for a user, best first, never an excluded item."""
        ...


class TrendingRecommender:
    """Most trending items (time-decayed popularity) that the user has not seen.

    The cold-start answer for everyone until the online model (issue 4) personalises it.
    """

    model_version = "trending-v1"
    source = "trending"

    def __init__(self, ranking: PopularityRanking) -> None:
        self.ranking = ranking

    def recommend(self, history: UserState, k: int, exclude: Iterable[ItemId] = ()
                  ) -> list[tuple[ItemId, float]]:
        """Top ``k`` trending items, excluding the user's seen items and ``exclude``."""
        return self.ranking.top_k(k, exclude={*history.seen, *exclude})
