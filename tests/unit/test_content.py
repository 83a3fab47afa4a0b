"""The content map: hashed content features and a linear map to embeddings, learnt online."""

from __future__ import annotations

import numpy as np

from streamrec.models.content import ContentMap, content_features


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
