"""Diversity re-ranking (MMR) and the intra-list diversity metric."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.eval.latent import LatentConfig, generate
from streamrec.models.online_recommender import InProcessRecommender, RecommenderConfig, recommend
from streamrec.models.rerank import intra_list_diversity, mmr


def test_diversity_zero_keeps_the_relevance_order() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20, 4)).astype(np.float32)
    rows = np.arange(20)[::-1]
    assert mmr(rows, np.linspace(1.0, 0.1, 20), vectors, 5, 0.0).tolist() == rows[:5].tolist()


def test_mmr_skips_near_duplicates_of_what_it_already_picked() -> None:
    base = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    vectors = np.stack([base, base + [0, 0.01, 0], base + [0, 0, 0.01], np.array([0, 1.0, 0], dtype=np.float32)])
    scores = np.array([1.0, 0.99, 0.98, 0.5])
    picked = mmr(np.arange(4), scores, vectors, 2, 0.5)
    assert picked.tolist() == [0, 3]
    assert intra_list_diversity(vectors[picked]) > intra_list_diversity(vectors[:2])


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 8), st.integers(0, 2**32 - 1))
def test_intra_list_diversity_is_the_mean_pairwise_cosine_distance(n: int, seed: int) -> None:
    vectors = np.random.default_rng(seed).normal(size=(n, 3))
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    cosine = [vectors[i] @ vectors[j] / np.linalg.norm(vectors[i]) / np.linalg.norm(vectors[j]) for i, j in pairs]
    assert np.isclose(intra_list_diversity(vectors), np.mean([1 - c for c in cosine]))


def test_a_diverse_model_gives_more_varied_lists_of_unseen_items() -> None:
    stream = generate(LatentConfig(n_users=100, n_items=200, n_events=4_000, seed=3)).interactions
    lists = {}
    for diversity in (0.0, 0.5):
        model = InProcessRecommender(dataclasses.replace(RecommenderConfig(), diversity=diversity), 10)
        for event in stream:
            model.learn_one(event.user_id, event.item_id, 1.0, event.ts_ms)
        users = [user for user in sorted(model.users) if model.users[user].n_events < 100][:50]  # items left
        lists[diversity] = {user: [item for item, _ in model.recommend(user, 10)] for user in users}
        for user, items in lists[diversity].items():
            assert len(items) == 10 and not set(items) & set(model.users[user].seen)
        measured = np.mean([model.list_diversity(items) for items in lists[diversity].values()])
        lists[diversity]["_ild"] = measured
    assert lists[0.5]["_ild"] > lists[0.0]["_ild"] + 0.05


def test_exploration_gives_a_share_of_slots_to_the_least_shown_candidates() -> None:
    stream = generate(LatentConfig(n_users=100, n_items=200, n_events=4_000, seed=3)).interactions
    shown: dict[float, set[str]] = {}
    for explore in (0.0, 0.2):
        model = InProcessRecommender(dataclasses.replace(RecommenderConfig(), explore=explore), 10)
        for event in stream:
            model.learn_one(event.user_id, event.item_id, 1.0, event.ts_ms)
        users = [user for user in sorted(model.users) if model.users[user].n_events < 100]
        ranked = {user: recommend(model.users[user], model.catalog, 10, model.config) for user in users}
        shown[explore] = {item.item_id for items in ranked.values() for item in items}
        explored = [item for items in ranked.values() for item in items if item.source == "explore"]
        assert len(explored) == (0 if explore == 0 else 2 * len(users))  # two of ten slots each
        assert all(items[-1].source == "explore" for items in ranked.values()) == (explore > 0)
    assert len(shown[0.2]) > len(shown[0.0]) + 10  # more of the catalogue gets shown
