"""The pure core in ``streamrec.models``: decay, ranking, per-user history, weights, recommender."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.models.popularity import PopularityRanking, add_event, decay
from streamrec.models.user_state import UserState
from streamrec.models.weights import event_weight

HOUR_S = 3600.0
HOUR_MS = 3_600_000


# -- decay and add_event ------------------------------------------------------------


@pytest.mark.parametrize("half_lives, expected", [(0, 8.0), (1, 4.0), (2, 2.0), (3, 1.0), (0.5, 8 / 2**0.5)])
def test_decay_halves_the_score_every_half_life(half_lives: float, expected: float) -> None:
    assert decay(8.0, 0, int(half_lives * HOUR_MS), HOUR_S) == pytest.approx(expected)


def test_decay_never_grows_a_score_measured_in_the_future() -> None:
    assert decay(8.0, HOUR_MS, 0, HOUR_S) == 8.0


def test_add_event_decays_the_old_score_to_the_new_event_time() -> None:
    assert add_event(4.0, 0, 1.0, HOUR_MS, HOUR_S) == pytest.approx((3.0, HOUR_MS))


def test_add_event_decays_a_late_event_to_the_items_time() -> None:
    score, ts = add_event(4.0, HOUR_MS, 2.0, 0, HOUR_S)

    assert (score, ts) == (pytest.approx(5.0), HOUR_MS)


@pytest.mark.parametrize("weight", [0.0, -1.0, math.nan, math.inf])
def test_add_event_ignores_non_positive_or_non_finite_weights(weight: float) -> None:
    assert add_event(4.0, 10, weight, 20, HOUR_S) == (4.0, 10)


def score_at(events: list[tuple[float, int]], at_ms: int) -> float:
    score, ts = 0.0, 0
    for weight, event_ts in events:
        score, ts = add_event(score, ts, weight, event_ts, HOUR_S)
    return decay(score, ts, at_ms, HOUR_S)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 100.0), st.integers(0, 20 * HOUR_MS)), min_size=1, max_size=30),
       st.randoms(use_true_random=False))
def test_add_event_gives_the_same_score_whatever_the_arrival_order(events: list, rng: random.Random) -> None:
    shuffled = events[:]
    rng.shuffle(shuffled)
    end = max(ts for _, ts in events)
    exact = sum(w * 2 ** (-(end - ts) / HOUR_MS) for w, ts in events)

    assert score_at(events, end) == pytest.approx(exact, rel=1e-9)
    assert score_at(shuffled, end) == pytest.approx(exact, rel=1e-9)


# -- PopularityRanking --------------------------------------------------------------


def ranking_of(scores: dict[str, float], ts_ms: int = 0) -> PopularityRanking:
    ranking = PopularityRanking(HOUR_S)
    for item_id, score in scores.items():
        ranking.set(item_id, score, ts_ms)
    return ranking


def brute_force_top_k(scores: dict[str, float], k: int, exclude: set[str]) -> list[tuple[str, float]]:
    """Best first; ties keep insertion order (the documented tie-break)."""
    kept = [(item, score) for item, score in scores.items() if item not in exclude]
    return sorted(kept, key=lambda pair: -pair[1])[:k]


def test_top_k_of_empty_ranking_is_empty() -> None:
    assert PopularityRanking(HOUR_S).top_k(5) == []


@pytest.mark.parametrize("k", [0, -3])
def test_top_k_with_non_positive_k_is_empty(k: int) -> None:
    assert ranking_of({"a": 1.0}).top_k(k) == []


def test_top_k_returns_best_first_and_stops_at_the_catalogue_size() -> None:
    ranking = ranking_of({"a": 1.0, "b": 3.0, "c": 2.0})

    assert ranking.top_k(10) == [("b", 3.0), ("c", 2.0), ("a", 1.0)]


def test_top_k_never_returns_excluded_items() -> None:
    ranking = ranking_of({"a": 1.0, "b": 3.0, "c": 2.0})

    assert ranking.top_k(2, exclude={"b", "unknown"}) == [("c", 2.0), ("a", 1.0)]
    assert ranking.top_k(3, exclude=["a", "b", "c"]) == []


def test_top_k_decays_every_item_to_the_latest_event_time() -> None:
    ranking = PopularityRanking(HOUR_S)
    ranking.set("old", 8.0, 0)
    ranking.set("new", 3.0, 2 * HOUR_MS)

    assert ranking.top_k(2) == [("new", 3.0), ("old", pytest.approx(2.0))]
    assert ranking.score("old") == pytest.approx(2.0)
    assert ranking.score("old", now_ms=HOUR_MS) == pytest.approx(4.0)
    assert ranking.score("missing") == 0.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.0, 1e6) | st.integers(0, 3).map(float), max_size=60),
    st.integers(1, 80),
    st.data(),
)
def test_top_k_matches_a_brute_force_sort(values: list[float], k: int, data: st.DataObject) -> None:
    scores = {f"i{n}": value for n, value in enumerate(values)}
    exclude = data.draw(st.sets(st.sampled_from(sorted(scores) + ["never-seen"])))

    got = ranking_of(scores).top_k(k, exclude=exclude)
    expected = brute_force_top_k(scores, k, exclude)

    # Scores must agree exactly; ids only up to ties (see the tie-break test below).
    assert [score for _, score in got] == [score for _, score in expected]
    assert not {item for item, _ in got} & exclude
    assert all(scores[item] == score for item, score in got)
    assert len({item for item, _ in got}) == len(got)


def test_top_k_breaks_ties_by_age_in_catalogue() -> None:
    scores = dict(zip([f"i{n}" for n in range(10)], [2.0, 1, 0, 1, 0, 2, 1, 1, 0, 2], strict=True))

    assert ranking_of(scores).top_k(5) == brute_force_top_k(scores, 5, set())


def test_top_k_keeps_ranking_after_growing_past_1024_items() -> None:
    rng = np.random.default_rng(7)
    values = rng.permutation(3000).astype(float)  # distinct scores: no ties
    scores = {f"i{n}": value for n, value in enumerate(values)}
    ranking = ranking_of(scores)

    assert len(ranking) == 3000
    assert ranking.top_k(20) == brute_force_top_k(scores, 20, set())
    assert ranking.score("i2999") == scores["i2999"]
    assert ranking.score("i0") == scores["i0"]


def test_set_overwrites_an_items_score() -> None:
    ranking = ranking_of({"a": 1.0, "b": 2.0})
    ranking.set("a", 5.0, 0)

    assert len(ranking) == 2
    assert ranking.top_k(1) == [("a", 5.0)]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -2.0])
def test_non_finite_or_negative_scores_are_stored_as_zero(bad: float) -> None:
    ranking = ranking_of({"a": bad, "b": 1.0})

    assert ranking.score("a") == 0.0
    assert ranking.top_k(2) == [("b", 1.0), ("a", 0.0)]


# -- UserState --------------------------------------------------------------------


def test_empty_history_has_seen_nothing() -> None:
    history = UserState.from_dict(None)

    assert (history.seen, history.event_ids, history.n_events) == ([], [], 0)
    assert not history.is_duplicate("e1")
    assert not history.is_duplicate(None)


def test_repeated_item_moves_to_the_end_of_seen() -> None:
    history = UserState()
    for item in ("a", "b", "c", "a"):
        history.record(item, None, history_size=10, dedup_window=10)

    assert history.seen == ["b", "c", "a"]
    assert history.n_events == 4


def test_recorded_event_id_is_a_duplicate_until_it_leaves_the_window() -> None:
    history = UserState()
    history.record("a", "e1", history_size=10, dedup_window=2)
    assert history.is_duplicate("e1") and not history.is_duplicate("e2")

    history.record("b", "e2", history_size=10, dedup_window=2)
    history.record("c", "e3", history_size=10, dedup_window=2)

    assert not history.is_duplicate("e1")
    assert history.is_duplicate("e2") and history.is_duplicate("e3")


def test_zero_dedup_window_remembers_no_event_ids() -> None:
    history = UserState()
    history.record("a", "e1", history_size=10, dedup_window=0)

    assert history.event_ids == [] and not history.is_duplicate("e1")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abcdefghij"), st.none() | st.text("xyz", max_size=3)), max_size=300),
    st.integers(1, 8),
    st.integers(0, 8),
)
def test_history_stays_bounded_and_matches_a_reference(events: list, history_size: int,
                                                       dedup_window: int) -> None:
    history = UserState()
    for item, event_id in events:
        history.record(item, event_id, history_size, dedup_window)

    assert len(history.seen) <= history_size
    assert len(history.seen) == len(set(history.seen))
    assert len(history.event_ids) <= dedup_window
    assert history.n_events == len(events)
    # Reference: the most recent distinct items, oldest first; the last event ids.
    recent_distinct = list(dict.fromkeys(item for item, _ in reversed(events)))[:history_size]
    assert history.seen == recent_distinct[::-1]
    ids = [event_id for _, event_id in events if event_id is not None]
    assert history.event_ids == (ids[-dedup_window:] if dedup_window else [])


def test_history_round_trips_through_a_plain_dict() -> None:
    history = UserState()
    for n in range(5):
        history.record(f"i{n}", f"e{n}", history_size=3, dedup_window=2)

    data = history.to_dict()
    restored = UserState.from_dict(data)

    assert data == {"seen": ["i2", "i3", "i4"], "event_ids": ["e3", "e4"], "n_events": 5}
    assert restored == history
    restored.record("i9", "e9", 3, 2)
    assert history.seen == ["i2", "i3", "i4"], "from_dict must copy, not alias, the stored lists"


def test_user_vector_is_stored_as_float32_base64_and_read_back_exactly() -> None:
    vector = np.array([0.1, -2.5, 3e-8, 1e30], dtype=np.float32)
    data = UserState(["a"], [], 1, vector).to_dict()

    assert isinstance(data["vector"], str)
    restored = UserState.from_dict(data).vector
    assert restored.dtype == np.float32 and np.array_equal(restored, vector)
    restored[0] = 1.0  # writable: learning may update it in place
    assert vector[0] == np.float32(0.1)


def test_user_vector_stored_as_a_list_of_numbers_still_reads() -> None:
    """States written before the vector was stored in base64 keep their vector."""
    assert UserState.from_dict({"vector": [0.5, 1.5]}).vector.tolist() == [0.5, 1.5]


@pytest.mark.parametrize("stored", ["AAAA=", "not base64 at all!", [[1.0, 2.0]], ["x"], {"a": 1}])
def test_malformed_stored_user_vector_is_dropped(stored: object) -> None:
    state = UserState.from_dict({"seen": ["a"], "vector": stored})

    assert state.seen == ["a"]
    assert state.vector is None  # the user starts a new one


def test_history_from_partial_dict_uses_defaults() -> None:
    assert UserState.from_dict({"seen": ["a"]}) == UserState(["a"], [], 0)


# -- event_weight -------------------------------------------------------------------

WEIGHTS = {"view": 1.0, "purchase": 8.0, "rating": 0.5}


@pytest.mark.parametrize("event_type, value, expected", [
    ("view", None, 1.0),
    ("purchase", None, 8.0),
    ("purchase", 3.0, 8.0),  # value only counts for value-weighted types
    ("rating", 4.0, 2.0),
    ("rating", None, 0.5),
    ("rating", 0.0, 0.0),
    ("rating", -3.0, 0.0),
    ("rating", math.nan, 0.0),
    ("rating", math.inf, 0.0),
    ("teleport", None, 0.0),
])
def test_event_weight(event_type: str, value: float | None, expected: float) -> None:
    assert event_weight(event_type, value, WEIGHTS) == expected


def test_event_weight_uses_the_configured_value_weighted_types() -> None:
    assert event_weight("purchase", 3.0, WEIGHTS, value_weighted_types=["purchase"]) == 24.0
    assert event_weight("rating", 4.0, WEIGHTS, value_weighted_types=()) == 0.5


def test_ranking_forgets_the_least_popular_items_beyond_its_bound() -> None:
    ranking = PopularityRanking(half_life_s=3600.0, max_items=10)
    for n in range(10):
        ranking.set(f"i{n}", float(n + 1), 0)
    ranking.set("new", 100.0, 0)

    assert len(ranking) == 10  # 9 kept + the new one
    assert ranking.score("i0") == 0.0  # the least popular went
    assert [item for item, _ in ranking.top_k(3)] == ["new", "i9", "i8"]
    assert ranking.score("i5") == 6.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.floats(0, 1e6), st.integers(0, 10**10)), min_size=1, max_size=60))
def test_decayed_scores_kept_item_by_item_equal_decaying_every_item_at_once(updates: list) -> None:
    # half-life 60 s over up to 10**10 ms: thousands of half-lives, so the reference time is rebased too
    ranking = PopularityRanking(half_life_s=60.0, max_items=20)
    for item, score, ts in updates:
        ranking.set(f"i{item}", score, ts)
        decayed = ranking.decayed()  # the incremental path, after every change
        now = ranking.latest_ts_ms
        expected = [decay(ranking.score(item_id, now), now, now, 60.0) for item_id in ranking._ids]
        assert decayed.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-300)
        assert ranking.decayed_max() == pytest.approx(max(expected, default=0.0), rel=1e-9, abs=1e-300)
