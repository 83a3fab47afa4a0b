"""The content map: hashed content features and a linear map to embeddings, learnt online."""

from __future__ import annotations

import numpy as np

from streamrec.models.content import ContentMap, content_features
from streamrec.models.online_recommender import FusionWeights, InProcessRecommender, RecommenderConfig


def test_features_are_stable_normalised_and_skip_stop_words_and_numbers() -> None:
    first = content_features(["Drama", "drama "], "The Godfather (1972)", "a film", buckets=4096)
    again = content_features(["drama"], "godfather", "FILM", buckets=4096)

    assert first == again  # case, duplicates, stop words and years do not count
    assert np.isclose(sum(v * v for v in first.values()), 1.0)
    assert content_features([], None, None, buckets=16) == {}


def test_the_map_learns_to_place_a_new_item_near_items_with_the_same_content() -> None:
    rng = np.random.default_rng(0)
    genres = ["comedy", "horror", "western", "musical", "war"]
    centres = {genre: rng.normal(size=16).astype(np.float32) for genre in genres}
    content = ContentMap(dim=16, buckets=1024, learning_rate=0.2)
    for n in range(2_000):  # items the events have already placed: their genre's centre plus noise
        genre = genres[n % 5]
        features = content_features([genre], f"title {n}", None, buckets=1024)
        content.learn(features, centres[genre] + 0.3 * rng.normal(size=16).astype(np.float32))

    for genre in genres:
        predicted = content.vector(content_features([genre], "brand new", None, buckets=1024))
        cosine = {other: predicted @ centre / np.linalg.norm(predicted) / np.linalg.norm(centre)
                  for other, centre in centres.items()}
        assert max(cosine, key=cosine.get) == genre and cosine[genre] > 0.8


def test_untrained_or_featureless_content_gives_zeros_and_bad_targets_are_ignored() -> None:
    content = ContentMap(dim=4, buckets=64)
    features = content_features(["x"], None, None, buckets=64)
    content.learn(features, np.array([np.nan, 0, 0, 0], dtype=np.float32))
    assert content.updates == 0 and not content.vector(features).any() and not content.vector({}).any()


def test_an_announced_item_reaches_the_users_whose_taste_its_content_matches_before_any_event() -> None:
    config = RecommenderConfig(fusion=FusionWeights(mf=1.0, covisit=0.0, trending=0.0, cold_start=0.0))
    model = InProcessRecommender(config, publish_every=1)
    rng = np.random.default_rng(0)
    for genre in "ab":
        for n in range(100):
            model.announce(f"{genre}{n}", [genre], f"{genre} title {n}")
    for step in range(8_000):  # a-fans choose a-items, b-fans b-items; each fan sees most of them
        genre = "ab"[step % 2]
        model.learn_one(f"{genre}-fan{rng.integers(0, 40)}", f"{genre}{rng.integers(0, 100)}", 1.0, step)

    model.announce("a-new", ["a"], "a title new")

    def rank(user: str) -> int:
        listed = [item for item, _ in model.recommend(user, 200)]
        return listed.index("a-new") if "a-new" in listed else 200
    a_ranks = [rank(f"a-fan{n}") for n in range(20)]
    b_ranks = [rank(f"b-fan{n}") for n in range(20)]
    # The new a-item sits with the a-items: among the first for a-fans, behind the
    # unseen b-items for b-fans; nobody has chosen it yet.
    assert np.median(a_ranks) + 20 < np.median(b_ranks), (a_ranks, b_ranks)
    assert model.n_events("a-new") == 0
