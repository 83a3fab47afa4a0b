"""The worker's stream processors (``streamrec.streams.pipeline``) under Faust's ``agent.test_context()``.

No broker: tables use ``memory://`` and every topic the pipeline writes to is
replaced by an ``AsyncMock`` (faust ``docs/userguide/testing.rst``, "Mock anything
that leaves the process"). ``create_app`` hard-codes ``store="rocksdb://"``; tables
open their store lazily, so setting ``app.conf.store`` before the first access works.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from unittest.mock import AsyncMock

import pytest

from streamrec.config import load_settings
from streamrec.eval.synthetic import invalid_events
from streamrec.streams.app import StreamrecApp, create_app
from streamrec.streams.pipeline import Pipeline

PREFIX = "unit."
T0_MS = 1_700_000_000_000


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("STREAMREC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def app(tmp_path: Path) -> StreamrecApp:
    settings = load_settings(worker={"data_dir": tmp_path / "data", "app_id": "unit-app"},
                             topics={"prefix": PREFIX, "partitions": 2},
                             model={"k": 3}, events={"dedup_window": 10})
    app = create_app(settings)
    app.conf.store = "memory://"
    return app


@pytest.fixture
def pipeline(app: StreamrecApp) -> Pipeline:
    pipeline = app.pipeline
    for item_id, score in {"i1": 5.0, "i2": 4.0, "i3": 3.0, "i4": 2.0}.items():
        pipeline.ranking.set(item_id, score, T0_MS)
    return pipeline


def mock_send(monkeypatch: pytest.MonkeyPatch, topic) -> AsyncMock:
    send = AsyncMock(name=f"{topic.get_topic_name()}.send")
    monkeypatch.setattr(topic, "send", send)
    return send


@pytest.fixture
def recommendations_out(monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline) -> AsyncMock:
    return mock_send(monkeypatch, pipeline.recommendations)


@pytest.fixture
def dead_letters_out(monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline) -> AsyncMock:
    return mock_send(monkeypatch, pipeline.dead_letter)


@pytest.fixture
def item_updates_out(monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline) -> AsyncMock:
    return mock_send(monkeypatch, pipeline.item_updates)


@pytest.fixture
def events_out(monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline) -> AsyncMock:
    """Re-published (re-keyed) events."""
    return mock_send(monkeypatch, pipeline.events)


@pytest.fixture
def requests_out(monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline) -> AsyncMock:
    """Re-published (re-keyed) requests."""
    return mock_send(monkeypatch, pipeline.requests)


@pytest.fixture
def item_state_out(monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline) -> AsyncMock:
    return mock_send(monkeypatch, pipeline.item_state)


@pytest.fixture
def outputs(recommendations_out, dead_letters_out, item_updates_out, events_out, requests_out,
            item_state_out) -> dict[str, AsyncMock]:
    return {"recommendations": recommendations_out, "dead_letter": dead_letters_out,
            "item_updates": item_updates_out, "events": events_out, "requests": requests_out,
            "item_state": item_state_out}


def counted(pipeline: Pipeline, metric: str, **labels: str) -> float:
    return pipeline.metrics.registry.get_sample_value(metric, labels) or 0.0


def messages_in(pipeline: Pipeline) -> float:
    return sum(counted(pipeline, name, outcome=outcome)
               for name in ("streamrec_events_in_total", "streamrec_requests_in_total")
               for outcome in ("applied", "duplicate", "rerouted", "invalid", "answered"))


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "the agent did not process the message"
        await asyncio.sleep(0.001)


Scenario = Callable[["Feed"], Awaitable[None]]


class Feed:
    """Puts raw messages into one agent's test context and waits until each is handled."""

    def __init__(self, pipeline: Pipeline, agent) -> None:
        self.pipeline = pipeline
        self.agent = agent

    async def put(self, value: bytes | None, key: bytes | None, **kwargs) -> None:
        before = messages_in(self.pipeline)
        await self.agent.put(value, key=key, **kwargs)
        await until(lambda: messages_in(self.pipeline) > before)


def run_agent(app: StreamrecApp, agent_name: str, scenario: Scenario) -> None:
    async def main() -> None:
        async with app.agents[agent_name].test_context() as agent:
            await scenario(Feed(app.pipeline, agent))

    asyncio.run(main())


def run_events(app: StreamrecApp, scenario: Scenario) -> None:
    run_agent(app, "streamrec.events", scenario)


def event(**fields: object) -> bytes:
    return json.dumps({"user_id": "u1", "item_id": "i1", "type": "view", **fields}).encode()


def sent_values(send: AsyncMock) -> list[dict]:
    return [json.loads(call.kwargs["value"]) for call in send.await_args_list]


# -- events ---------------------------------------------------------------------------


def test_valid_event_emits_one_recommendation_without_the_seen_item(
        app: StreamrecApp, outputs: dict[str, AsyncMock]) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(event_id="e1", ts=T0_MS), key=b"u1")

    run_events(app, scenario)

    send = outputs["recommendations"]
    assert send.await_count == 1
    assert send.await_args.kwargs["key"] == b"u1"
    body = sent_values(send)[0]
    assert [item["item_id"] for item in body["items"]] == ["i2", "i3", "i4"]
    assert body["items"][0]["score"] == 4.0
    assert (body["trigger"], body["event_id"], body["event_ts"]) == ("event", "e1", T0_MS)
    assert (body["model_version"], body["source"]) == ("trending-v1", "trending")
    assert "request_id" not in body
    outputs["dead_letter"].assert_not_awaited()


def test_valid_event_is_remembered_in_the_users_table(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(event_id="e1"), key=b"u1")
        await feed.put(event(item_id="i2", event_id="e2"), key=b"u1")

    run_events(app, scenario)

    assert app.pipeline.users[b"u1"] == {"seen": ["i1", "i2"], "event_ids": ["e1", "e2"], "n_events": 2}
    second = sent_values(outputs["recommendations"])[1]
    assert [item["item_id"] for item in second["items"]] == ["i3", "i4"]


def test_weighted_event_sends_an_item_update_keyed_by_item(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(type="rating", value=3.0, ts=T0_MS), key=b"u1")
        await feed.put(event(item_id="i2", type="purchase", ts=T0_MS + 1), key=b"u1")

    run_events(app, scenario)

    calls = outputs["item_updates"].await_args_list
    assert [call.kwargs["key"] for call in calls] == [b"i1", b"i2"]
    assert sent_values(outputs["item_updates"]) == [{"w": 3.0, "ts": T0_MS}, {"w": 8.0, "ts": T0_MS + 1}]


def test_zero_weight_event_updates_no_item_but_still_recommends(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(type="rating", value=0.0), key=b"u1")

    run_events(app, scenario)

    outputs["item_updates"].assert_not_awaited()
    assert outputs["recommendations"].await_count == 1


def test_event_without_ts_uses_the_message_timestamp(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(), key=b"u1", timestamp=T0_MS / 1000)

    run_events(app, scenario)

    assert sent_values(outputs["recommendations"])[0]["event_ts"] == T0_MS
    assert sent_values(outputs["item_updates"])[0]["ts"] == T0_MS


@pytest.mark.parametrize("kind", sorted(invalid_events()))
def test_invalid_event_goes_to_the_dead_letter_topic_only(app: StreamrecApp, outputs, kind: str) -> None:
    raw, phrase = invalid_events()[kind]

    async def scenario(feed: Feed) -> None:
        await feed.put(raw, key=b"u-bad")

    run_events(app, scenario)

    send = outputs["dead_letter"]
    assert send.await_count == 1
    assert send.await_args.kwargs["key"] == b"u-bad"
    letter = sent_values(send)[0]
    assert phrase in letter["error"]
    assert (letter["topic"], letter["partition"], letter["offset"]) == (f"{PREFIX}events", 0, 0)
    assert len(letter["payload"]) > 0
    for name in ("recommendations", "item_updates", "events"):
        outputs[name].assert_not_awaited()
    assert counted(app.pipeline, "streamrec_dead_lettered_total", topic=f"{PREFIX}events") == 1


def test_duplicate_event_id_is_applied_once(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(event_id="e1"), key=b"u1")
        await feed.put(event(event_id="e1"), key=b"u1")

    run_events(app, scenario)

    assert outputs["recommendations"].await_count == 1
    assert outputs["item_updates"].await_count == 1
    assert app.pipeline.users[b"u1"]["n_events"] == 1
    assert counted(app.pipeline, "streamrec_events_in_total", outcome="duplicate") == 1


def test_event_keyed_by_another_key_is_republished_keyed_by_user(app: StreamrecApp, outputs) -> None:
    raw = event(user_id=" u7 ")

    async def scenario(feed: Feed) -> None:
        await feed.put(raw, key=b"some-other-key")

    run_events(app, scenario)

    outputs["events"].assert_awaited_once_with(key=b"u7", value=raw)
    outputs["recommendations"].assert_not_awaited()
    outputs["item_updates"].assert_not_awaited()
    assert app.pipeline.users.get(b"u7") is None


# -- requests -----------------------------------------------------------------------


def test_request_is_answered_with_its_request_id_k_and_exclusions(app: StreamrecApp, outputs) -> None:
    raw = json.dumps({"request_id": "r1", "user_id": "u1", "k": 2, "exclude": ["i1"]}).encode()

    async def scenario(feed: Feed) -> None:
        await feed.put(raw, key=b"u1")

    run_agent(app, "streamrec.requests", scenario)

    body = sent_values(outputs["recommendations"])[0]
    assert (body["request_id"], body["trigger"]) == ("r1", "request")
    assert [item["item_id"] for item in body["items"]] == ["i2", "i3"]


def test_invalid_request_goes_to_the_dead_letter_topic(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(json.dumps({"user_id": "u1", "k": 0}).encode(), key=b"u1")

    run_agent(app, "streamrec.requests", scenario)

    letter = sent_values(outputs["dead_letter"])[0]
    assert "'request_id' is missing" in letter["error"]
    assert letter["topic"] == f"{PREFIX}requests"
    outputs["recommendations"].assert_not_awaited()


# -- item updates -------------------------------------------------------------------


def test_item_updates_accumulate_decayed_popularity_and_publish_once(app: StreamrecApp, outputs) -> None:
    half_life_ms = int(app.pipeline.settings.model.popularity_half_life_s * 1000)

    async def scenario(feed: Feed) -> None:
        for ts in (T0_MS, T0_MS + half_life_ms):
            before = outputs["dead_letter"].await_count
            await feed.agent.put(json.dumps({"w": 4.0, "ts": ts}).encode(), key=b"i9")
            await until(lambda: len(app.pipeline._dirty_items) == 1 or  # noqa: B023
                        outputs["dead_letter"].await_count > before)
            await until(lambda: app.pipeline.item_popularity.get(b"i9") is not None)
        await asyncio.sleep(0.01)
        await app.pipeline.publish_item_state()

    run_agent(app, "streamrec.items", scenario)

    outputs["dead_letter"].assert_not_awaited()
    assert app.pipeline.item_popularity[b"i9"] == [pytest.approx(6.0), T0_MS + half_life_ms]
    outputs["item_state"].assert_awaited_once()
    state = sent_values(outputs["item_state"])[0]
    assert state == {"item_id": "i9", "popularity": pytest.approx(6.0), "ts": T0_MS + half_life_ms}


def test_item_state_record_updates_the_local_ranking(app: StreamrecApp) -> None:
    pipeline = app.pipeline
    pipeline.apply_item_state(b"new", json.dumps({"item_id": "new", "popularity": 9.0, "ts": T0_MS}).encode())
    pipeline.apply_item_state(None, b"{}")  # tombstone-like records are ignored

    assert pipeline.ranking.top_k(1) == [("new", 9.0)]
