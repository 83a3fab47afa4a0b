"""Event processing (``Pipeline.on_event``) under Faust's test context; see faust_harness.py."""

from __future__ import annotations

import time

import asyncio
import base64
import json

import pytest

from streamrec.eval.synthetic import invalid_events
from streamrec.models.online_recommender import MODEL_VERSION
from streamrec.models.sequence_query import SequenceQuery
from streamrec.streams.app import StreamrecApp
from streamrec.streams.records import DeadLetter, decode_item_updates, decode_user_state
from streamrec.streams.topics import key_partition
from tests.unit.test_sequence import SMALL, rule_trained
from tests.unit.faust_harness import (
    PREFIX,
    T0_MS,
    Feed,
    Outbox,
    counted,
    event,
    make_app,
    outbox,
    run_events,
    until,
)


# -- events ---------------------------------------------------------------------------


def test_valid_event_emits_one_recommendation_without_the_seen_item(
        app: StreamrecApp, outputs: dict[str, Outbox]) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(event_id="e1", ts=T0_MS), key=b"u1")

    run_events(app, scenario)

    out = outputs["recommendations"]
    assert out.keys == [b"u1"]
    body = out.values[0]
    # One event: half trending, half personal (no item has a learnt vector yet), so trending's order.
    assert [item["item_id"] for item in body["items"]] == ["i2", "i3", "i4"]
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    assert (body["trigger"], body["event_id"], body["event_ts"]) == ("event", "e1", T0_MS)
    assert (body["model_version"], body["source"]) == (MODEL_VERSION, "online")
    assert {item["source"] for item in body["items"]} <= {"ann", "co-visit", "trending"}
    assert "request_id" not in body
    assert outputs["dead_letter"].messages == []


def test_lists_go_without_the_producers_linger_unless_more_events_are_waiting(tmp_path, monkeypatch) -> None:
    # A micro-batch's lists are appended together: lingering would hold them all for its full
    # length. Where the broker holds more events of the partition, later lists may join them.
    for at_once in (True, False):
        app = make_app(tmp_path / str(at_once), worker={"send_lists_at_once": at_once})
        waiting = {"count": 0}
        monkeypatch.setattr(app.consumer, "highwater", lambda tp: waiting["count"] + 1, raising=False)

        async def scenario(feed: Feed) -> None:
            await feed.put(event(event_id="e1"), key=b"u1", partition=0)  # offset 0; highwater 1: none waiting
            waiting["count"] = 5
            await feed.put(event(event_id="e2"), key=b"u1", partition=0)  # offset 1; highwater 6: 4 waiting

        run_events(app, scenario)

        assert outbox(app.pipeline.recommendations).lingered == ([False, True] if at_once else [True, True])


def test_valid_event_is_remembered_in_the_users_table(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(event_id="e1"), key=b"u1")
        await feed.put(event(item_id="i2", event_id="e2"), key=b"u1")

    run_events(app, scenario)

    stored = stored_user(app, "u1")
    assert {key: stored[key] for key in ("seen", "event_ids", "n_events")} == {
        "seen": ["i1", "i2"], "event_ids": ["e1", "e2"], "n_events": 2}
    assert len(stored["vector"]) == app.pipeline.config.mf.dim  # the learnt user vector


def stored_user(app: StreamrecApp, user_id: str) -> dict:
    """A user's row of the users table as JSON, its vector (stored as float32 in base64) as a list."""
    raw = app.pipeline.users[user_id.encode()]
    return {**json.loads(raw), "vector": decode_user_state(raw).vector.tolist()}
    second = outputs["recommendations"].values[1]
    assert [item["item_id"] for item in second["items"]] == ["i3", "i4"]


def test_weighted_event_sends_an_item_update_to_the_items_partition(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(type="rating", value=3.0, ts=T0_MS), key=b"u1")
        await feed.put(event(item_id="i2", type="purchase", ts=T0_MS + 1), key=b"u1")
        assert outputs["item_updates"].messages == []  # coalesced until the next publication
        await feed.pipeline.publish_coalesced()

    run_events(app, scenario)

    out = outputs["item_updates"]
    partitions = app.pipeline.settings.topics.partitions
    # One record per partition, with every item whose id Kafka's default partitioner sends there.
    for (_, value), partition in zip(out.messages, out.partitions, strict=True):
        ids = decode_item_updates(value, app.pipeline.config.mf.dim)
        assert {key_partition(item_id.encode(), partitions) for item_id in ids} == {partition}
    assert len(set(out.partitions)) == len(out.messages)
    deltas = dict(out.item_deltas)
    first, second = deltas["i1"], deltas["i2"]
    assert (first["weight"], first["ts_ms"], second["weight"], second["ts_ms"]) == (3.0, T0_MS, 8.0, T0_MS + 1)
    # i2 was chosen after i1: its update carries the co-visit (replicas index it both ways).
    assert first["neighbours"] == {} and second["neighbours"] == {"i1": 8.0}
    assert len(first["vector"]) == len(second["vector"]) == app.pipeline.config.mf.dim


def test_events_on_one_item_coalesce_into_one_decayed_update(app: StreamrecApp, outputs) -> None:
    half_life_ms = int(app.pipeline.settings.model.popularity_half_life_s * 1000)

    async def scenario(feed: Feed) -> None:
        await feed.put(event(user_id="u1", type="purchase", ts=T0_MS), key=b"u1")
        await feed.put(event(user_id="u2", type="purchase", ts=T0_MS + half_life_ms), key=b"u2")
        await feed.pipeline.publish_coalesced()

    run_events(app, scenario)

    # 8 decayed by one half-life plus 8, as of the later event: what two updates would give.
    [(_, update)] = outputs["item_updates"].item_deltas
    assert (update["weight"], update["ts_ms"]) == (pytest.approx(12.0), T0_MS + half_life_ms)


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
    assert outputs["item_updates"].item_deltas[0][1]["ts_ms"] == T0_MS


def test_the_age_of_each_applied_event_is_observed_when_its_batch_starts(app: StreamrecApp, outputs) -> None:
    sent_ms = int(time.time() * 1000) - 2_000  # it waited two seconds somewhere before the worker

    async def scenario(feed: Feed) -> None:
        await feed.put(event(event_id="e1", ts=sent_ms), key=b"u1")
        await feed.put(b"not json", key=b"u1")  # never applied: no age

    run_events(app, scenario)

    assert counted(app.pipeline, "streamrec_event_age_seconds_count") == 1
    assert 2.0 <= counted(app.pipeline, "streamrec_event_age_seconds_sum") < 10.0


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
    assert [item_id for item_id, _ in outputs["item_updates"].item_deltas] == ["i1"]
    assert json.loads(app.pipeline.users[b"u1"])["n_events"] == 1
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


def test_events_wait_until_the_item_catalogue_has_caught_up(app: StreamrecApp, outputs) -> None:
    app.pipeline.catalogue_ready.clear()  # as in a worker whose replica is still reading item-state

    async def scenario(feed: Feed) -> None:
        put = asyncio.create_task(feed.agent.put(event(event_id="e1"), key=b"u1", wait=False))
        await asyncio.sleep(0.2)
        assert outputs["recommendations"].messages == []  # held back, not answered from nothing
        feed.pipeline.catalogue_ready.set()
        await until(lambda: bool(outputs["recommendations"].messages))
        await put

    run_events(app, scenario)

    assert outputs["recommendations"].keys == [b"u1"]


def test_every_stage_of_an_applied_event_is_timed(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(event_id="e1"), key=b"u1")
        await feed.pipeline.publish_coalesced()

    run_events(app, scenario)

    for stage in ("decode", "state", "learn", "store", "recommend", "emit", "item_publish"):
        assert counted(app.pipeline, "streamrec_stage_seconds_total", stage=stage) > 0, stage
    assert counted(app.pipeline, "streamrec_stage_seconds_total", stage="item_owner") == 0  # no update consumed here


# -- micro-batches ----------------------------------------------------------------------


def _batch_run(tmp_path, together: bool,
               sequence: SequenceQuery | None = None) -> tuple[list[dict], dict, list[tuple[int, bytes]], float]:
    """Feed one stream of events (users on both partitions, some twice) one by one or all at once,
    fusing ``sequence`` when given.

    Returns the lists pushed (without their emission time), the users table, the
    changelog records written as ``(partition, key)``, and the largest batch seen.
    """
    app = make_app(tmp_path / ("together" if together else "apart"))
    pipeline = app.pipeline
    pipeline.sequence = sequence
    for item_id, score in {f"i{n}": 10.0 - n for n in range(1, 9)}.items():
        pipeline.catalog.set(item_id, score, T0_MS)
    pushed = outbox(pipeline.recommendations)
    logged = outbox(pipeline.users.changelog_topic)
    users = ["u1", "u2", "u3", "u1", "u4", "u2", "u1", "u5"]
    messages = [(event(user_id=user, item_id=f"i{n % 8 + 1}", event_id=f"e{n}", ts=T0_MS + n), user.encode(),
                 key_partition(user.encode(), 2)) for n, user in enumerate(users)]
    assert {partition for *_, partition in messages} == {0, 1}

    sizes: list[int] = []

    async def scenario(feed: Feed) -> None:
        if together:  # as events arrive while the worker is busy
            sizes.extend(await feed.put_while_busy(messages))
        else:
            for value, key, partition in messages:
                await feed.put(value, key=key, partition=partition)
                sizes.append(1)

    run_events(app, scenario)
    lists = [{key: value for key, value in body.items() if key != "emitted_ts"} for body in pushed.values]
    table = {user: stored_user(app, user) for user in set(users)}
    changelog = list(zip(logged.partitions, logged.keys, strict=True))
    # streamrec_batch_events counts the batches taken and the events in them
    assert counted(pipeline, "streamrec_batch_events_count") == len(sizes)
    assert counted(pipeline, "streamrec_batch_events_sum") == sum(sizes) == len(messages)
    return lists, table, changelog, max(sizes)


@pytest.mark.parametrize("served", [False, True], ids=["online model", "with a sequence model"])
def test_a_micro_batch_pushes_the_lists_of_one_event_at_a_time(tmp_path, served: bool) -> None:
    sequence = SequenceQuery(rule_trained(SMALL, steps=3).snapshot("seq-v1", 0)) if served else None
    apart, apart_table, apart_log, apart_batch = _batch_run(tmp_path, False, sequence)
    together, together_table, together_log, together_batch = _batch_run(tmp_path, True, sequence)
    assert all(pushed["model_version"].endswith("+seq-v1") == served for pushed in apart + together)
    assert apart_batch == 1 and together_batch > 1, "the events put together must be taken as one batch"
    assert len(together) == len(apart) == 8
    for one, batched in zip(apart, together, strict=True):
        assert [item["item_id"] for item in batched["items"]] == [item["item_id"] for item in one["items"]]
        assert [item["score"] for item in batched["items"]] == pytest.approx([item["score"] for item in one["items"]],
                                                                            abs=1e-5)
        assert {**batched, "items": None} == {**one, "items": None}
    for user, state in apart_table.items():
        assert {**together_table[user], "vector": None} == {**state, "vector": None}
        assert together_table[user]["vector"] == pytest.approx(state["vector"], abs=1e-6)
    # Every changelog record goes to its user's partition (not the batch's last event's),
    # and a user with several events in the batch is written once.
    assert all(partition == key_partition(key, 2) for partition, key in together_log)
    assert len(together_log) < len(apart_log) == 8
