"""A/B arms in the worker: stable assignment, the arm on every list, HR/NDCG counted per arm."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.models.ab import arm
from streamrec.streams.app import StreamrecApp
from tests.unit.faust_harness import Feed, counted, event, make_app, run_events

SHARE, SALT = 0.5, "unit-test"


@pytest.fixture
def app(tmp_path: Path) -> StreamrecApp:  # the harness's app, with an A/B test running
    return make_app(tmp_path, events={}, ab={"share": SHARE, "salt": SALT, "covisit_weight": 0.0})


def test_arms_are_stable_and_split_users_by_the_share() -> None:
    users = [f"user{n}" for n in range(4000)]
    arms = [arm(user, 0.2, SALT) for user in users]

    assert arms == [arm(user, 0.2, SALT) for user in users]
    assert 0.17 < arms.count("b") / len(users) < 0.23
    assert [arm(user, 0.2, "another test") for user in users] != arms  # a new salt draws new groups


def test_every_list_names_its_arm_and_each_arm_is_scored_on_the_next_event(app: StreamrecApp, outputs) -> None:
    pipeline = app.pipeline
    assert pipeline.config_b.fusion.covisit == 0.0 and pipeline.config.fusion.covisit > 0
    users = {name: next(f"user{n}" for n in range(100) if arm(f"user{n}", SHARE, SALT) == name) for name in "ab"}
    for n, item_id in enumerate(["i1", "i2", "i3", "i4"]):  # known items, so lists are not empty
        pipeline.catalog.set(item_id, 5.0 - n, 1_700_000_000_000)

    async def scenario(feed: Feed) -> None:
        for user in users.values():
            await feed.put(event(user_id=user, item_id="i1", event_id=f"{user}-1"), key=user.encode())
            shown = [item["item_id"] for item in outputs["recommendations"].values[-1]["items"]]
            await feed.put(event(user_id=user, item_id=shown[1], event_id=f"{user}-2"), key=user.encode())  # a hit
            await feed.put(event(user_id=user, item_id="i99", event_id=f"{user}-3"), key=user.encode())  # a miss

    run_events(app, scenario)

    assert [(r["user_id"], r["arm"]) for r in outputs["recommendations"].values] == [
        (user, name) for name, user in users.items() for _ in range(3)]
    for name in "ab":  # the first event had no list before it: two events scored per user
        assert counted(pipeline, "streamrec_ab_events_total", arm=name) == 2
        assert counted(pipeline, "streamrec_ab_hits_total", arm=name) == 1
        assert counted(pipeline, "streamrec_ab_ndcg_total", arm=name) == pytest.approx(1 / 1.5849625, rel=1e-6)
