"""The prequential evaluator's accounting, on hand-made streams with known answers."""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np
import pytest

from streamrec.eval.datasets import Interaction
from streamrec.eval.prequential import EvaluationSettings, evaluate, rolling_hit_rate, score_pushed_lists


class FixedList:
    """Recommends the same ranked list to everybody, minus exclusions; records what it learned."""

    def __init__(self, items: list[str]) -> None:
        self.items = items
        self.learned: list[tuple[str, str, float]] = []
        self.excluded: list[set[str]] = []

    def learn_one(self, user_id: str, item_id: str, weight: float, ts_ms: int | None = None) -> None:
        self.learned.append((user_id, item_id, weight))

    def recommend(self, user_id: str, k: int, exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        self.excluded.append(set(exclude))
        kept = [item for item in self.items if item not in exclude][:k]
        return [(item, float(len(kept) - n)) for n, item in enumerate(kept)]


def stream(*pairs: str) -> list[Interaction]:
    return [Interaction(user, item, "click", 1000 * n) for n, (user, item) in
            enumerate(pair.split(":") for pair in pairs)]


def test_hit_rate_ndcg_and_mrr_match_a_hand_computation() -> None:
    model = FixedList(["a", "b", "c"])
    events = stream("u1:b", "u2:c", "u1:a", "u2:z")
    reports = evaluate(events, {"fixed": model}, EvaluationSettings(k=2, type_weights={"click": 1.0}))
    figures = reports["fixed"].as_dict(k=2)

    # u1:b -> [a, b] rank 1; u2:c -> [a, b] miss; u1:a -> [a, c] (b seen) rank 0; u2:z -> miss
    assert figures["events"] == 4
    assert figures["hr@2"] == pytest.approx(2 / 4)
    assert figures["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1.0) / 4)
    assert figures["mrr@2"] == pytest.approx((0.5 + 1.0) / 4)
    assert figures["new_users"]["events"] == 2 and figures["new_users"]["hr"] == pytest.approx(0.5)
    assert figures["returning_users"]["hr"] == pytest.approx(0.5)
    assert figures["coverage"] == pytest.approx(3 / 4)  # a, b, c of a, b, c, z


def test_test_then_train_excludes_seen_items_and_learns_every_event_with_its_weight() -> None:
    model = FixedList(["a"])
    events = [Interaction("u1", "a", "purchase", 0), Interaction("u1", "b", "view", 1)]
    evaluate(events, {"m": model},
             EvaluationSettings(k=1, type_weights={"view": 1.0, "purchase": 8.0}))

    assert model.excluded == [set(), {"a"}]  # the second ask came after learning the first
    assert model.learned == [("u1", "a", 8.0), ("u1", "b", 1.0)]


def test_stride_scores_every_nth_event_but_learns_all() -> None:
    model = FixedList(["a"])
    events = stream(*(f"u{n}:a" for n in range(10)))
    reports = evaluate(events, {"m": model}, EvaluationSettings(k=1, stride=3,
                                                               type_weights={"click": 1.0}))

    assert reports["m"].overall.n == 4  # events 0, 3, 6, 9
    assert len(model.learned) == 10


def test_rolling_hit_rate_averages_a_sliding_window() -> None:
    rates = rolling_hit_rate([1, 0, 1, 1, 0], window=2)

    np.testing.assert_allclose(rates, [1.0, 0.5, 0.5, 1.0, 0.5])


def test_a_pushed_list_predicts_the_same_users_next_event_only() -> None:
    events = stream("ann:a", "bob:b", "ann:c", "ann:d", "bob:e")
    pushed = {0: ["x", "c"], 1: ["e"], 2: ["y"]}  # nothing arrived after event 3

    report = score_pushed_lists(events, pushed, k=2)["all"]

    # ann:c is predicted by the list after ann:a (rank 1), ann:d by the list after ann:c (miss),
    # bob:e by the list after bob:b (rank 0); first events of a user are not scored.
    assert report.returning_users.as_dict() == {"events": 3, "hr": pytest.approx(2 / 3),
                                                "ndcg": pytest.approx((1 / math.log2(3) + 1) / 3),
                                                "mrr": pytest.approx((1 / 2 + 1) / 3)}
    assert report.new_users.n == 0 and report.catalogue_size == 5
    assert score_pushed_lists(events, {}, k=2)["all"].returning_users.hits == 0  # nothing pushed: all misses


def test_pushed_lists_are_also_scored_per_arm_of_the_earlier_push() -> None:
    events = stream("ann:a", "bob:b", "ann:c", "bob:e")
    pushed = {0: ["c"], 1: ["x"]}

    reports = score_pushed_lists(events, pushed, k=2, groups={0: "a", 1: "b"})

    assert {name: (r.returning_users.n, r.returning_users.hits) for name, r in reports.items()} == {
        "all": (2, 1), "a": (1, 1), "b": (1, 0)}
