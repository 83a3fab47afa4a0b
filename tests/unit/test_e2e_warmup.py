"""A soak's co-visit warm-up (``bench e2e --fill-covisits``) fills every item's co-visit list,
learnt by the worker's own model code."""

from __future__ import annotations

import json
from collections import Counter

from streamrec.load.e2e import FILL_VISITS, E2EConfig, _fill_covisits, _warmup
from streamrec.models.online_recommender import InProcessRecommender, RecommenderConfig


def test_each_fill_user_views_a_run_of_items_and_the_views_are_spread_over_the_catalogue() -> None:
    config = E2EConfig([500.0], items=400, covisit_fill=30, soak_minutes=1)
    events = [json.loads(value) for _, value in _fill_covisits(config, "run")]
    assert len(events) == 400 * 30
    assert set(Counter(event["user_id"] for event in events).values()) == {FILL_VISITS}
    assert len({event["event_id"] for event in events}) == len(events)
    views = Counter(event["item_id"] for event in events)
    assert set(views) == {f"i{item}" for item in range(400)}


def test_the_fill_brings_every_co_visit_list_to_its_bound() -> None:
    config = E2EConfig([500.0], items=400, covisit_fill=30, soak_minutes=1)
    model = InProcessRecommender(RecommenderConfig())
    for _, value in _fill_covisits(config, "run"):
        event = json.loads(value)
        model.learn_one(event["user_id"], event["item_id"], 1.0, event["ts"])
    bound = model.config.max_neighbours
    sizes = [len(model.catalog.neighbours(f"i{item}")[0]) for item in range(400)]
    assert min(sizes) >= bound  # each list at least half full...
    assert max(sizes) <= 2 * bound  # ...and none past the owner's bound


def test_no_fill_without_the_option() -> None:
    assert list(_fill_covisits(E2EConfig([500.0], items=400, soak_minutes=1), "run")) == []


def test_a_rate_step_with_a_fill_warms_up_like_a_soak_every_item_then_the_fill_then_the_load() -> None:
    for config in (E2EConfig([500.0], items=400, covisit_fill=30, warmup_events=50),
                   E2EConfig([500.0], items=400, covisit_fill=30, warmup_events=50, soak_minutes=1)):
        count, events = _warmup(config, "run")
        ids = [json.loads((event() if callable(event) else event)[1])["event_id"] for event in events]
        assert count == len(ids) == 400 + 400 * 30 + 50
        assert all("-item-" in event_id for event_id in ids[:400])
        assert all("-fill-" in event_id for event_id in ids[400:-50])
        assert not any("-item-" in event_id or "-fill-" in event_id for event_id in ids[-50:])


def test_without_a_fill_a_rate_step_warms_up_with_the_load_alone_and_a_soak_with_every_item_first() -> None:
    count, events = _warmup(E2EConfig([500.0], items=400, warmup_events=50), "run")
    assert count == len(list(events)) == 50
    count, events = _warmup(E2EConfig([500.0], items=400, warmup_events=50, soak_minutes=1), "run")
    assert count == len(list(events)) == 450
