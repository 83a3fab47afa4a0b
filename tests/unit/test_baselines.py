"""Baselines and the cold-start blend in ``streamrec.models.baselines``, plus one contract for every model."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import pytest

from streamrec.models.baselines import (
    Blend,
    BlendConfig,
    CoOccurrence,
    DecayedPopularity,
    MostPopular,
    OnlineModel,
)
from streamrec.models.online_mf import OnlineMF, OnlineMFConfig
from tests.unit.test_online_mf import Event, synthetic_stream

HOUR_MS = 3_600_000


def learn(model: OnlineModel, events: list[tuple[str, str, float, int]]) -> OnlineModel:
    for user_id, item_id, weight, ts_ms in events:
        model.learn_one(user_id, item_id, weight, ts_ms)
    return model


def items(recommendations: list[tuple[str, float]]) -> list[str]:
    return [item for item, _ in recommendations]


# -- one contract for every model ---------------------------------------------------------

MODELS: dict[str, Callable[[], OnlineModel]] = {
    "most_popular": MostPopular,
    "decayed_popularity": lambda: DecayedPopularity(half_life_s=3600.0),
    "co_occurrence": lambda: CoOccurrence(history_size=3, max_neighbours=4),
    "online_mf": lambda: OnlineMF(OnlineMFConfig(dim=8)),
    "blend": lambda: Blend(OnlineMF(OnlineMFConfig(dim=8)), DecayedPopularity(3600.0)),
}


@pytest.fixture(params=sorted(MODELS))
def trained(request: pytest.FixtureRequest) -> OnlineModel:
    events = [(f"u{n % 7}", f"i{(n * n) % 23}", 1.0 + n % 3, n * 60_000) for n in range(300)]
    return learn(MODELS[request.param](), events)


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


# -- co-occurrence ------------------------------------------------------------------------


def test_co_occurrence_recommends_what_users_with_the_same_recent_items_chose() -> None:
    model = learn(CoOccurrence(history_size=2), [
        ("ann", "tea", 1, 0), ("ann", "cake", 1, 1), ("ann", "jam", 1, 2),  # tea-cake, jam-tea, jam-cake
        ("bob", "tea", 1, 3), ("bob", "cake", 1, 4),  # tea-cake again
        ("cid", "cake", 1, 5),
    ])

    assert model.recommend("cid", 3) == [("tea", 2.0), ("jam", 1.0)]
    assert model.recommend("cid", 3, exclude={"tea"}) == [("jam", 1.0)]
    assert model.recommend("bob", 3) == [("tea", 2.0), ("cake", 2.0), ("jam", 2.0)]  # ties: catalogue age
    assert model.recommend("nobody", 3) == []


def test_co_occurrence_only_counts_pairs_within_the_users_last_n_items() -> None:
    model = learn(CoOccurrence(history_size=1), [("u", "a", 1, 0), ("u", "b", 1, 1), ("u", "c", 1, 2)])

    assert model.recommend("u", 5) == [("b", 1.0)]  # recent = [c]; c met b only
    assert learn(CoOccurrence(history_size=2), [("v", "a", 1, 0), ("v", "b", 1, 1), ("v", "c", 1, 2)]
                 ).recommend("v", 5) == [("a", 2.0), ("b", 1.0), ("c", 1.0)]  # recent = [b, c]


def test_co_occurrence_memory_stays_bounded_under_many_events() -> None:
    model = CoOccurrence(history_size=5, max_neighbours=10)
    rng = np.random.default_rng(0)
    for user, item in zip(rng.integers(0, 50, 30_000), rng.integers(0, 300, 30_000), strict=True):
        model.learn_one(f"u{user}", f"i{item}", 1.0, 0)

    assert model.neighbour_count() <= 300 * 2 * 10
    assert max(table.size for table in model._neighbours.values()) <= 2 * 10
    assert max(len(recent) for recent in model._recent.values()) == 5


def test_co_occurrence_keeps_the_strongest_neighbours_when_it_prunes() -> None:
    model = CoOccurrence(history_size=2, max_neighbours=2)
    events = [("s", "hub", 1, 0), ("s", "strong", 1, 1)] * 5
    events += [(f"w{n}", "hub", 1, 0) for n in range(6)] + [(f"w{n}", f"weak{n}", 1, 1) for n in range(6)]
    learn(model, events)

    assert model.recommend("w5", 1)[0][0] == "strong"  # w5's recent: hub, weak5; hub's strongest: strong


@pytest.mark.parametrize("history_size, max_neighbours", [(0, 5), (5, 0)])
def test_co_occurrence_rejects_empty_bounds(history_size: int, max_neighbours: int) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        CoOccurrence(history_size, max_neighbours)


# -- blend --------------------------------------------------------------------------------


@pytest.mark.parametrize("config, n_events, expected", [
    (BlendConfig(rule="shrink", shrinkage=1.0), 0, 1.0), (BlendConfig(rule="shrink", shrinkage=1.0), 3, 0.25),
    (BlendConfig(rule="switch", min_events=2), 1, 1.0), (BlendConfig(rule="switch", min_events=2), 2, 0.0),
    (BlendConfig(rule="off"), 0, 0.0), (BlendConfig(rule="shrink", shrinkage=0.0), 0, 0.0),
])
def test_popularity_weight_follows_the_configured_rule(config: BlendConfig, n_events: int, expected: float) -> None:
    assert config.popularity_weight(n_events) == expected


def stream_events() -> list[tuple[str, str, float, int]]:
    return [(f"u{n % 5}", f"i{(3 * n) % 17}", 1.0, n * 1000) for n in range(200)]


def test_blend_serves_trending_to_a_user_it_has_never_seen() -> None:
    popularity = DecayedPopularity(3600.0)
    blend = learn(Blend(OnlineMF(OnlineMFConfig(dim=8)), popularity), stream_events())

    assert blend.recommend("stranger", 5, exclude={"i0"}) == popularity.recommend("stranger", 5, exclude={"i0"})


def test_blend_with_the_rule_off_is_the_personal_model() -> None:
    personal = OnlineMF(OnlineMFConfig(dim=8))
    blend = learn(Blend(personal, DecayedPopularity(3600.0), BlendConfig(rule="off")), stream_events())

    assert blend.recommend("u1", 5) == personal.recommend("u1", 5)
    assert blend.recommend("stranger", 5) == []


def test_blend_mixes_both_models_for_a_user_with_few_events() -> None:
    blend = learn(Blend(OnlineMF(OnlineMFConfig(dim=8)), DecayedPopularity(3600.0),
                        BlendConfig(rule="shrink", shrinkage=1.0, candidates=17)), stream_events()[:20])
    personal = set(items(blend.personal.recommend("u1", 3)))
    trending = set(items(blend.popularity.recommend("u1", 3)))

    blended = items(blend.recommend("u1", 17))
    assert personal | trending <= set(blended)
    assert blend.recommend("u1", 3)[0][1] <= 1.0


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


def test_blend_beats_the_pure_embedding_model_for_new_users_on_the_synthetic_stream() -> None:
    events = synthetic_stream(n_events=4_000)
    pure = new_user_hit_rate(OnlineMF(OnlineMFConfig()), events)
    blended = new_user_hit_rate(Blend(OnlineMF(OnlineMFConfig()), DecayedPopularity(20_000.0)), events)

    assert blended > pure + 0.04, (blended, pure)
