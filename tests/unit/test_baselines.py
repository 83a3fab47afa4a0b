"""Popularity baselines, the cold-start blend, and one contract for every model ``streamrec evaluate`` compares."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from streamrec.eval.models import MODEL_FACTORIES, ModelSetup, build_models
from streamrec.models.baselines import DecayedPopularity, MostPopular, OnlineModel
from streamrec.models.online_mf import OnlineMFConfig
from streamrec.models.online_recommender import InProcessRecommender, RecommenderConfig
from streamrec.models.sequence_recommender import TrainerSchedule
from streamrec.models.sequence_snapshot import SequenceConfig
from tests.unit.test_online_recommender import ONLY_MF, Event, synthetic_stream

HOUR_MS = 3_600_000


def learn(model: OnlineModel, events: list[tuple[str, str, float, int]]) -> OnlineModel:
    for user_id, item_id, weight, ts_ms in events:
        model.learn_one(user_id, item_id, weight, ts_ms)
        background = getattr(model, "background_work", None)
        if background is not None:  # the sequence models' trainer, as the evaluator runs it
            background()
    return model


def items(recommendations: list[tuple[str, float]]) -> list[str]:
    return [item for item, _ in recommendations]


# -- one contract for every model ---------------------------------------------------------

@pytest.fixture(params=sorted(MODEL_FACTORIES))
def trained(request: pytest.FixtureRequest) -> OnlineModel:
    events = [(f"u{n % 40}", f"i{(7 * n + n // 40) % 23}", 1.0 + n % 3, n * 60_000) for n in range(300)]
    config = RecommenderConfig(mf=OnlineMFConfig(dim=8), half_life_s=3600.0, max_neighbours=4)
    setup = ModelSetup(config, sequence=SequenceConfig(dim=8, max_len=10, batch_size=16, negatives=64),
                       schedule=TrainerSchedule(every_events=100, steps=5))
    return learn(build_models([request.param], setup)[request.param], events)


def test_every_model_returns_at_most_k_distinct_items_best_first_with_finite_scores(trained: OnlineModel) -> None:
    for user in ("u0", "u3"):
        recommendations = trained.recommend(user, 5)

        assert 0 < len(recommendations) <= 5
        assert len(set(items(recommendations))) == len(recommendations)
        scores = [score for _, score in recommendations]
        assert all(math.isfinite(score) for score in scores) and scores == sorted(scores, reverse=True)


def test_every_model_never_returns_an_excluded_item(trained: OnlineModel) -> None:
    catalogue = [f"i{n}" for n in range(23)]
    for n_excluded in (0, 5, 20, 23):
        exclude = set(catalogue[:n_excluded]) | {"not-an-item"}

        assert not exclude & set(items(trained.recommend("u1", 10, exclude=exclude)))


def test_every_model_accepts_events_without_a_timestamp_and_ignores_bad_weights(trained: OnlineModel) -> None:
    for weight in (1.0, 0.0, -5.0, math.nan, math.inf, 1e308):
        trained.learn_one("u1", "i1", weight, None)

    assert all(math.isfinite(score) for _, score in trained.recommend("u1", 10))


# -- popularity ---------------------------------------------------------------------------


def test_most_popular_ranks_by_summed_weights_ties_by_first_seen() -> None:
    model = learn(MostPopular(), [("a", "x", 1.0, 0), ("b", "y", 3.0, 0), ("c", "z", 1.0, 0),
                                  ("d", "x", 1.0, 10 * HOUR_MS), ("e", "w", 2.0, 20 * HOUR_MS)])

    assert model.recommend("anyone", 3) == [("y", 3.0), ("x", 2.0), ("w", 2.0)]
    assert items(model.recommend("anyone", 10, exclude={"y"})) == ["x", "w", "z"]


def test_decayed_popularity_prefers_recent_events_over_old_heavy_ones() -> None:
    model = learn(DecayedPopularity(half_life_s=3600.0), [("a", "old", 8.0, 0), ("b", "new", 1.0, 4 * HOUR_MS)])

    assert model.recommend("anyone", 2) == [("new", 1.0), ("old", pytest.approx(0.5))]


def test_decayed_popularity_decays_a_late_event_to_the_present() -> None:
    model = learn(DecayedPopularity(half_life_s=3600.0), [("a", "x", 1.0, 2 * HOUR_MS), ("b", "y", 8.0, 0)])

    assert model.recommend("anyone", 2) == [("y", pytest.approx(2.0)), ("x", pytest.approx(1.0))]


# -- cold start -----------------------------------------------------------------------------

def new_user_hit_rate(model: OnlineModel, events: list[Event], k: int = 10) -> float:
    """Prequential HR@k over events of users with fewer than 5 earlier events."""
    seen: dict[str, set[str]] = defaultdict(set)
    hits: list[bool] = []
    for user_id, item_id, ts_ms in events:
        if len(seen[user_id]) < 5:
            hits.append(item_id in items(model.recommend(user_id, k, exclude=seen[user_id])))
        model.learn_one(user_id, item_id, 1.0, ts_ms)
        seen[user_id].add(item_id)
    return float(np.mean(hits))


def test_the_cold_start_blend_beats_the_pure_embeddings_for_new_users_on_the_synthetic_stream() -> None:
    events = synthetic_stream(n_events=4_000)
    pure = new_user_hit_rate(InProcessRecommender(RecommenderConfig(fusion=ONLY_MF)), events)
    blended = new_user_hit_rate(InProcessRecommender(RecommenderConfig(half_life_s=20_000.0)), events)

    assert blended > pure + 0.04, (blended, pure)
