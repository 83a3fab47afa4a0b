"""The worker's stream processors (``streamrec.streams.pipeline``) under Faust's ``agent.test_context()``.

No broker: tables use ``memory://`` and every topic the pipeline writes to is
replaced by an ``Outbox`` recorder (faust ``docs/userguide/testing.rst``, "Mock anything
that leaves the process"). ``create_app`` takes the store URL.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from unittest.mock import Mock

import pytest

from streamrec.config import load_settings
from streamrec.eval.synthetic import invalid_events
from streamrec.streams.app import StreamrecApp, create_app
from streamrec.streams.pipeline import Pipeline
from streamrec.streams.records import DeadLetter

PREFIX = "unit."
T0_MS = 1_700_000_000_000




@pytest.fixture
def app(tmp_path: Path) -> StreamrecApp:
    settings = load_settings(worker={"data_dir": tmp_path / "data", "app_id": "unit-app"},
                             topics={"prefix": PREFIX, "partitions": 2},
                             model={"k": 3}, events={"dedup_window": 10})
    app = create_app(settings, store="memory://")
    return app


@pytest.fixture
def pipeline(app: StreamrecApp) -> Pipeline:
    pipeline = app.pipeline
    for item_id, score in {"i1": 5.0, "i2": 4.0, "i3": 3.0, "i4": 2.0}.items():
        pipeline.ranking.set(item_id, score, T0_MS)
    return pipeline


class Outbox:
    """Stands in for one output topic: records what the pipeline publishes, by ``send`` or ``send_soon``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: list[tuple[bytes | None, bytes | None]] = []

    def send_soon(self, *, key: bytes | None = None, value: bytes | None = None, **_: object) -> Mock:
        self.messages.append((key, value))
        return Mock(name=f"{self.name} future")

    async def send(self, *, key: bytes | None = None, value: bytes | None = None, **_: object) -> Mock:
        return self.send_soon(key=key, value=value)

    @property
    def keys(self) -> list[bytes | None]:
        return [key for key, _ in self.messages]

    @property
    def values(self) -> list[dict]:
        return [json.loads(value) for _, value in self.messages]


def outbox(monkeypatch: pytest.MonkeyPatch, topic) -> Outbox:
    box = Outbox(topic.get_topic_name())
    monkeypatch.setattr(topic, "send", box.send)
    monkeypatch.setattr(topic, "send_soon", box.send_soon)
    return box


@pytest.fixture
def recommendations_out(monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline) -> Outbox:
    return outbox(monkeypatch, pipeline.recommendations)


@pytest.fixture
def dead_letters_out(monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline) -> Outbox:
    return outbox(monkeypatch, pipeline.dead_letter)


@pytest.fixture
def item_updates_out(monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline) -> Outbox:
    return outbox(monkeypatch, pipeline.item_updates)


@pytest.fixture
def events_out(monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline) -> Outbox:
    """Re-published (re-keyed) events."""
    return outbox(monkeypatch, pipeline.events)


@pytest.fixture
def requests_out(monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline) -> Outbox:
    """Re-published (re-keyed) requests."""
    return outbox(monkeypatch, pipeline.requests)


@pytest.fixture
def item_state_out(monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline) -> Outbox:
    return outbox(monkeypatch, pipeline.item_state)


@pytest.fixture
def outputs(recommendations_out, dead_letters_out, item_updates_out, events_out, requests_out,
            item_state_out) -> dict[str, Outbox]:
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
        """Put one message and wait until the processor has counted it (or the agent crashed)."""
        before = messages_in(self.pipeline)
        await self.agent.put(value, key=key, **kwargs)
        await until(lambda: messages_in(self.pipeline) > before or self.crashed())
        await asyncio.sleep(0.005)  # let the processor finish writing its outputs
        if self.crashed():
            raise self.agent._crash_reason

    def crashed(self) -> bool:
        return self.agent._crash_reason is not None


def run_agent(app: StreamrecApp, agent_name: str, scenario: Scenario) -> None:
    async def main() -> None:
        async with app.agents[agent_name].test_context() as agent:
            await scenario(Feed(app.pipeline, agent))

    asyncio.run(main())


def run_events(app: StreamrecApp, scenario: Scenario) -> None:
    run_agent(app, "streamrec.events", scenario)


def event(**fields: object) -> bytes:
    return json.dumps({"user_id": "u1", "item_id": "i1", "type": "view", **fields}).encode()


# -- events ---------------------------------------------------------------------------


def test_valid_event_emits_one_recommendation_without_the_seen_item(
        app: StreamrecApp, outputs: dict[str, Outbox]) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(event_id="e1", ts=T0_MS), key=b"u1")

    run_events(app, scenario)

    out = outputs["recommendations"]
    assert out.keys == [b"u1"]
    body = out.values[0]
    assert [item["item_id"] for item in body["items"]] == ["i2", "i3", "i4"]
    assert body["items"][0]["score"] == 4.0
    assert (body["trigger"], body["event_id"], body["event_ts"]) == ("event", "e1", T0_MS)
    assert (body["model_version"], body["source"]) == ("trending-v1", "trending")
    assert "request_id" not in body
    assert outputs["dead_letter"].messages == []


def test_valid_event_is_remembered_in_the_users_table(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(event_id="e1"), key=b"u1")
        await feed.put(event(item_id="i2", event_id="e2"), key=b"u1")

    run_events(app, scenario)

    assert app.pipeline.users[b"u1"] == {"seen": ["i1", "i2"], "event_ids": ["e1", "e2"], "n_events": 2}
    second = outputs["recommendations"].values[1]
    assert [item["item_id"] for item in second["items"]] == ["i3", "i4"]


def test_weighted_event_sends_an_item_update_keyed_by_item(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(type="rating", value=3.0, ts=T0_MS), key=b"u1")
        await feed.put(event(item_id="i2", type="purchase", ts=T0_MS + 1), key=b"u1")
        assert outputs["item_updates"].messages == []  # coalesced until the next publication
        await feed.pipeline.publish_coalesced()

    run_events(app, scenario)

    out = outputs["item_updates"]
    assert out.keys == [b"i1", b"i2"]
    assert out.values == [{"w": 3.0, "ts": T0_MS}, {"w": 8.0, "ts": T0_MS + 1}]


def test_events_on_one_item_coalesce_into_one_decayed_update(app: StreamrecApp, outputs) -> None:
    half_life_ms = int(app.pipeline.settings.model.popularity_half_life_s * 1000)

    async def scenario(feed: Feed) -> None:
        await feed.put(event(user_id="u1", type="purchase", ts=T0_MS), key=b"u1")
        await feed.put(event(user_id="u2", type="purchase", ts=T0_MS + half_life_ms), key=b"u2")
        await feed.pipeline.publish_coalesced()

    run_events(app, scenario)

    # 8 decayed by one half-life plus 8, as of the later event: what two updates would give.
    assert outputs["item_updates"].values == [{"w": pytest.approx(12.0), "ts": T0_MS + half_life_ms}]


def test_zero_weight_event_updates_no_item_but_still_recommends(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(type="rating", value=0.0), key=b"u1")

    run_events(app, scenario)

    assert outputs["item_updates"].messages == []
    assert len(outputs["recommendations"].messages) == 1


def test_event_without_ts_uses_the_message_timestamp(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(), key=b"u1", timestamp=T0_MS / 1000)
        await feed.pipeline.publish_coalesced()

    run_events(app, scenario)

    assert outputs["recommendations"].values[0]["event_ts"] == T0_MS
    assert outputs["item_updates"].values[0]["ts"] == T0_MS


@pytest.mark.parametrize("kind", sorted(invalid_events()))
def test_invalid_event_goes_to_the_dead_letter_topic_only(app: StreamrecApp, outputs, kind: str) -> None:
    raw, phrase = invalid_events()[kind]

    async def scenario(feed: Feed) -> None:
        await feed.put(raw, key=b"u-bad")

    run_events(app, scenario)

    out = outputs["dead_letter"]
    assert out.keys == [b"u-bad"]
    letter = out.values[0]
    assert phrase in letter["error"]
    assert (letter["topic"], letter["partition"], letter["offset"]) == (f"{PREFIX}events", 0, 0)
    assert DeadLetter(**letter).payload_encoding in ("utf-8", "base64")
    for name in ("recommendations", "item_updates", "events"):
        assert outputs[name].messages == [], name
    assert counted(app.pipeline, "streamrec_dead_lettered_total", topic=f"{PREFIX}events") == 1


def test_event_with_a_list_as_type_goes_to_the_dead_letter_topic(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(type=["view"]), key=b"u1")

    run_events(app, scenario)

    assert "unknown event type" in outputs["dead_letter"].values[0]["error"]


def test_dead_letter_keeps_the_original_bytes(app: StreamrecApp, outputs) -> None:
    raw = b"\xff\xfe\x00garbage"

    async def scenario(feed: Feed) -> None:
        await feed.put(raw, key=b"u-bad")

    run_events(app, scenario)

    letter = outputs["dead_letter"].values[0]
    assert letter["payload_encoding"] == "base64"
    assert base64.b64decode(letter["payload"]) == raw


def test_duplicate_event_id_is_applied_once(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(event_id="e1"), key=b"u1")
        await feed.put(event(event_id="e1"), key=b"u1")
        await feed.pipeline.publish_coalesced()

    run_events(app, scenario)

    assert len(outputs["recommendations"].messages) == 1
    assert len(outputs["item_updates"].messages) == 1
    assert app.pipeline.users[b"u1"]["n_events"] == 1
    assert counted(app.pipeline, "streamrec_events_in_total", outcome="duplicate") == 1


def test_event_keyed_by_another_key_is_republished_keyed_by_user(app: StreamrecApp, outputs) -> None:
    raw = event(user_id=" u7 ")

    async def scenario(feed: Feed) -> None:
        await feed.put(raw, key=b"some-other-key")

    run_events(app, scenario)

    assert outputs["events"].messages == [(b"u7", raw)]
    assert outputs["recommendations"].messages == []
    assert outputs["item_updates"].messages == []
    assert app.pipeline.users.get(b"u7") is None


# -- requests -----------------------------------------------------------------------


def run_requests(app: StreamrecApp, scenario: Scenario) -> None:
    run_agent(app, "streamrec.requests", scenario)


def test_request_is_answered_with_its_request_id_k_and_exclusions(app: StreamrecApp, outputs) -> None:
    raw = json.dumps({"request_id": "r1", "user_id": "u1", "k": 2, "exclude": ["i1"]}).encode()

    async def scenario(feed: Feed) -> None:
        await feed.put(raw, key=b"u1")

    run_requests(app, scenario)

    assert outputs["recommendations"].keys == [b"u1"]
    body = outputs["recommendations"].values[0]
    assert (body["request_id"], body["trigger"]) == ("r1", "request")
    assert [item["item_id"] for item in body["items"]] == ["i2", "i3"]


def test_request_without_k_gets_the_configured_k(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(json.dumps({"request_id": "r2", "user_id": "u1"}).encode(), key=b"u1")

    run_requests(app, scenario)

    assert len(outputs["recommendations"].values[0]["items"]) == app.pipeline.settings.model.k == 3


def test_request_keyed_by_another_key_is_republished_keyed_by_user(app: StreamrecApp, outputs) -> None:
    raw = json.dumps({"request_id": "r3", "user_id": "u9"}).encode()

    async def scenario(feed: Feed) -> None:
        await feed.put(raw, key=None)

    run_requests(app, scenario)

    assert outputs["requests"].messages == [(b"u9", raw)]
    assert outputs["recommendations"].messages == []


def test_invalid_request_goes_to_the_dead_letter_topic(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(json.dumps({"user_id": "u1", "k": 0}).encode(), key=b"u1")

    run_requests(app, scenario)

    letter = outputs["dead_letter"].values[0]
    assert "'request_id' is missing" in letter["error"]
    assert letter["topic"] == f"{PREFIX}requests"
    assert outputs["recommendations"].messages == []


# -- item updates -------------------------------------------------------------------


def test_item_updates_accumulate_decayed_popularity_and_publish_once(app: StreamrecApp, outputs) -> None:
    pipeline = app.pipeline
    half_life_ms = int(pipeline.settings.model.popularity_half_life_s * 1000)

    async def scenario(feed: Feed) -> None:
        for ts in (T0_MS, T0_MS + half_life_ms):
            await feed.agent.put(json.dumps({"w": 4.0, "ts": ts}).encode(), key=b"i9")
            await until(lambda: (pipeline.item_popularity.get(b"i9") or [0, 0])[1] == ts)  # noqa: B023
        await pipeline.publish_coalesced()
        await pipeline.publish_coalesced()  # nothing changed since: publishes nothing

    run_agent(app, "streamrec.items", scenario)

    assert outputs["dead_letter"].messages == []
    # 4 decayed by one half-life, plus 4: 6, as of the newer event.
    assert pipeline.item_popularity[b"i9"] == [pytest.approx(6.0), T0_MS + half_life_ms]
    assert outputs["item_state"].keys == [b"i9"]
    assert outputs["item_state"].values == [
        {"item_id": "i9", "popularity": pytest.approx(6.0), "ts": T0_MS + half_life_ms}]


def test_malformed_item_update_goes_to_the_dead_letter_topic(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.agent.put(b'{"w": 1}', key=b"i9")
        await until(lambda: bool(outputs["dead_letter"].messages))

    run_agent(app, "streamrec.items", scenario)

    assert "internal item update is malformed" in outputs["dead_letter"].values[0]["error"]
    assert app.pipeline.item_popularity.get(b"i9") is None


def test_item_state_record_updates_the_local_ranking(app: StreamrecApp) -> None:
    pipeline = app.pipeline
    pipeline.apply_item_state(b"new", json.dumps({"item_id": "new", "popularity": 9.0, "ts": T0_MS}).encode())
    pipeline.apply_item_state(None, b"{}")  # records without a key or value are ignored

    assert pipeline.ranking.top_k(1) == [("new", 9.0)]
    assert counted(pipeline, "streamrec_catalog_items") == 1
