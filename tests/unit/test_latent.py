"""Latent-factor synthetic stream: seeded, well-formed, and learnable from its known ground truth."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from streamrec.eval.latent import LatentConfig, LatentDataset, factor_scale, generate

SMALL = LatentConfig(n_users=200, n_items=100, n_events=3000, seed=7)


@pytest.fixture(scope="module")
def stream() -> LatentDataset:
    return generate(LatentConfig(n_events=4000, seed=3))


def rows(data: LatentDataset) -> tuple[np.ndarray, np.ndarray]:
    """(n_events,) user rows and (n_events,) item rows of the stream."""
    users = np.array([int(event.user_id[1:]) for event in data.interactions])
    items = np.array([int(event.item_id[1:]) for event in data.interactions])
    return users, items


def prequential_hit_rates(data: LatentDataset, user_scores: np.ndarray, k: int = 10) -> tuple[float, float]:
    """HR@k of ranking unseen items by ``user_scores`` (n_users, n_items) and by popularity so far."""
    users, items = rows(data)
    seen = np.zeros(user_scores.shape, dtype=bool)
    counts = np.zeros(user_scores.shape[1])
    tie_break = np.random.default_rng(0).random(user_scores.shape[1]) * 1e-6
    hits = np.zeros(2)
    for user, item in zip(users, items, strict=True):
        for column, scores in enumerate((user_scores[user], counts + tie_break)):
            ranked = np.where(seen[user], -np.inf, scores)
            hits[column] += item in np.argpartition(-ranked, k)[:k]
        seen[user, item] = True
        counts[item] += 1
    return hits[0] / len(users), hits[1] / len(users)


def test_the_same_seed_gives_the_same_stream_and_factors() -> None:
    first, again, other = generate(SMALL), generate(SMALL), generate(replace(SMALL, seed=8))

    assert first.interactions == again.interactions
    assert np.array_equal(first.user_factors, again.user_factors)
    assert np.array_equal(first.item_factors, again.item_factors)
    assert first.interactions != other.interactions


def test_shapes_dtypes_ids_and_types_are_well_formed() -> None:
    data = generate(SMALL)
    users, items = rows(data)

    assert data.user_factors.shape == (200, 8) and data.user_factors.dtype == np.float32
    assert data.item_factors.shape == (100, 8) and data.item_factors.dtype == np.float32
    assert data.item_bias.shape == (100,) and data.true_scores().shape == (200, 100)
    assert len(data.interactions) == 3000 and data.config == SMALL
    assert users.min() >= 0 and users.max() < 200 and items.min() >= 0 and items.max() < 100
    types = Counter(event.type for event in data.interactions)
    assert set(types) <= {"view", "click", "add_to_cart", "purchase"}
    assert types["view"] + types["click"] > 0.8 * 3000 and 0 < types["purchase"] < 0.1 * 3000
    assert all(event.value is None for event in data.interactions)


def test_event_times_are_integer_ms_strictly_increasing_about_a_second_apart() -> None:
    times = np.array([event.ts_ms for event in generate(SMALL).interactions])

    assert all(isinstance(event.ts_ms, int) for event in generate(SMALL).interactions[:10])
    assert np.all(np.diff(times) > 0)
    assert 500 < np.diff(times).mean() < 2000


def test_new_users_appear_only_in_the_second_half(stream: LatentDataset) -> None:
    users, _ = rows(stream)
    half = len(users) // 2
    first_half, second_half = set(users[:half]), set(users[half:])
    n_new = round(stream.config.new_user_share * stream.config.n_users)

    assert len(first_half) <= stream.config.n_users - n_new
    assert len(second_half - first_half) >= n_new // 2, "new users do arrive in the second half"
    no_new = generate(LatentConfig(n_events=4000, seed=3, new_user_share=0.0))
    assert len(set(rows(no_new)[0][:half])) > len(first_half)


def test_users_do_not_repeat_an_item_until_they_have_seen_every_item() -> None:
    data = generate(LatentConfig(n_users=5, n_items=20, n_events=400, seed=2))
    users, items = rows(data)

    for user in np.unique(users):
        sequence = items[users == user]
        for start in range(0, len(sequence), 20):
            block = sequence[start:start + 20]
            assert len(set(block)) == len(block), f"user {user} repeated an item within a pass"


def test_some_users_are_much_more_active_than_others(stream: LatentDataset) -> None:
    per_user = np.bincount(rows(stream)[0], minlength=stream.config.n_users)

    assert per_user.max() > 4 * np.median(per_user)


def test_true_factors_beat_popularity_clearly(stream: LatentDataset) -> None:
    """Known answer: the logits the stream was drawn from rank the next item far better than popularity."""
    oracle, popularity = prequential_hit_rates(stream, stream.true_scores())

    assert oracle > 2 * popularity and oracle - popularity > 0.15, (oracle, popularity)
    assert oracle < 0.7, f"choices are sampled, so even the truth often misses; got HR@10 {oracle}"


def test_wrong_factors_do_not_beat_popularity(stream: LatentDataset) -> None:
    """Control for the test above: another user's tastes (same popularity bias) lose the advantage."""
    shuffled = stream.true_scores()[np.random.default_rng(1).permutation(stream.config.n_users)]

    oracle, popularity = prequential_hit_rates(stream, shuffled)

    assert oracle < popularity + 0.03, (oracle, popularity)


def test_popularity_skew_follows_the_zipf_bias(stream: LatentDataset) -> None:
    counts = np.bincount(rows(stream)[1], minlength=stream.config.n_items)
    bias = stream.item_bias

    top, bottom = np.argsort(-bias)[:30], np.argsort(bias)[:30]
    assert counts[top].sum() > 5 * counts[bottom].sum()
    assert not np.all(np.diff(bias) <= 0), "popularity must not follow item index order"


def test_drift_moves_each_users_taste_by_a_random_walk_of_their_event_count() -> None:
    config = LatentConfig(n_users=300, n_items=50, n_events=6000, drift=0.2, seed=4)
    still, drifting = generate(replace(config, drift=0.0)), generate(config)
    events_per_user = np.bincount(rows(drifting)[0], minlength=300)

    squared_step = (0.2 * factor_scale(config.dim)) ** 2 * config.dim
    moved = ((drifting.user_factors - still.user_factors) ** 2).sum(axis=1)

    assert np.array_equal(still.item_factors, drifting.item_factors)
    acted = events_per_user > 0
    # each acting user's squared displacement / (events * dim * step**2) has mean 1 and std 0.5
    assert np.mean(moved[acted] / (events_per_user[acted] * squared_step)) == pytest.approx(1.0, abs=0.15)
    assert np.all(moved[~acted] == 0)


def test_default_config_gives_20k_events_from_most_users() -> None:
    data = generate(LatentConfig())

    assert len(data.interactions) == 20_000 and len({event.user_id for event in data.interactions}) > 400


@pytest.mark.parametrize("field, value, problem", [
    ("n_users", 0, "n_users must be at least 1"),
    ("n_events", -1, "n_events must be 0 or more"),
    ("drift", -0.1, "drift finite and >= 0"),
    ("new_user_share", 1.0, "new_user_share must be in"),
])
def test_config_rejects_values_it_cannot_generate(field: str, value: float, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        LatentConfig(**{field: value})


def test_edge_sizes_generate() -> None:
    assert generate(LatentConfig(n_events=0)).interactions == []
    single = generate(LatentConfig(n_users=1, n_items=1, n_events=3))
    assert [event.item_id for event in single.interactions] == ["i0", "i0", "i0"]
