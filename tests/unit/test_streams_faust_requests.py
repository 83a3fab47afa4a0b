"""Requests, item updates and error handling under Faust's test context; see faust_harness.py."""

from __future__ import annotations

import json
import time

import pytest

from streamrec.streams.app import StreamrecApp
from streamrec.streams.records import decode_item_state, encode_item_state
from tests.unit.faust_harness import (
    make_app,
    PREFIX,
    T0_MS,
    Feed,
    Scenario,
    counted,
    event,
    run_agent,
    run_events,
    until,
)


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


def info(item_id: str, **fields: object) -> bytes:
    return json.dumps({"item_id": item_id, **fields}).encode()


def test_unavailable_items_leave_every_list_and_come_back_when_available(app: StreamrecApp, outputs) -> None:
    pipeline = app.pipeline
    pipeline.apply_item_info(b"i1", info("i1", available=False))
    assert [item.item_id for item in pipeline.recommend("u1", 4, trigger="request").items] == ["i2", "i3", "i4"]
    pipeline.apply_item_info(b"i1", info("i1", available=True))
    assert [item.item_id for item in pipeline.recommend("u1", 4, trigger="request").items] == ["i1", "i2", "i3", "i4"]


def test_a_category_filter_keeps_only_items_of_those_categories(app: StreamrecApp, outputs) -> None:
    app.pipeline.apply_item_info(b"i2", info("i2", categories=["jazz", "live"]))
    app.pipeline.apply_item_info(b"i4", info("i4", categories=["rock"]))
    raw = json.dumps({"request_id": "r1", "user_id": "u1", "filters": {"categories": ["rock", "jazz"]}}).encode()

    async def scenario(feed: Feed) -> None:
        await feed.put(raw, key=b"u1")

    run_requests(app, scenario)

    assert [item["item_id"] for item in outputs["recommendations"].values[0]["items"]] == ["i2", "i4"]


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


def test_answerable_invalid_request_gets_an_error_answer_and_a_dead_letter(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(json.dumps({"request_id": "r9", "user_id": "u1", "k": 0}).encode(), key=b"u1")

    run_requests(app, scenario)

    [answer] = outputs["recommendations"].values
    assert answer["request_id"] == "r9" and answer["user_id"] == "u1"
    assert answer["items"] == [] and "field 'k' must be an integer" in answer["error"]
    assert "field 'k'" in outputs["dead_letter"].values[0]["error"]


# -- errors -------------------------------------------------------------------------


@pytest.fixture
def broken_for_u1(app: StreamrecApp, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the pipeline that strikes user u1's events only."""
    real_recommendation = app.pipeline.recommendation

    def recommendation(user_id: str, *args, **kwargs):
        if user_id == "u1":
            raise ZeroDivisionError("simulated bug")
        return real_recommendation(user_id, *args, **kwargs)

    monkeypatch.setattr(app.pipeline, "recommendation", recommendation)


def test_a_processor_bug_dead_letters_the_message_and_the_agent_keeps_going(
        app: StreamrecApp, outputs, broken_for_u1) -> None:
    pipeline = app.pipeline

    async def scenario(feed: Feed) -> None:
        await feed.put(event(user_id="u1", event_id="a"), key=b"u1")
        await until(lambda: counted(pipeline, "streamrec_processing_errors_total",
                                    topic=f"{PREFIX}events") == 1)
        await feed.put(event(user_id="u2", event_id="b"), key=b"u2")

    run_events(app, scenario)

    [letter] = outputs["dead_letter"].values
    assert "internal error" in letter["error"] and "ZeroDivisionError" in letter["error"]
    assert [r["user_id"] for r in outputs["recommendations"].values] == ["u2"]


def test_a_processor_bug_in_a_batch_dead_letters_that_event_alone(
        app: StreamrecApp, outputs, broken_for_u1) -> None:
    sizes: list[int] = []

    async def scenario(feed: Feed) -> None:
        sizes.extend(await feed.put_while_busy(
            [(event(user_id=user, event_id=user), user.encode(), None) for user in ("u0", "u2", "u1", "u3")]))

    run_events(app, scenario)

    assert max(sizes) > 1  # u1 came in a batch with others
    [letter] = outputs["dead_letter"].values
    assert "ZeroDivisionError" in letter["error"] and json.loads(letter["payload"])["user_id"] == "u1"
    assert sorted(r["user_id"] for r in outputs["recommendations"].values) == ["u0", "u2", "u3"]


def test_event_from_the_far_future_is_dead_lettered(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.put(event(ts=99_999_999_999_999), key=b"u1")

    run_events(app, scenario)

    assert "in the future" in outputs["dead_letter"].values[0]["error"]
    assert outputs["recommendations"].messages == []


# -- item updates -------------------------------------------------------------------


def test_item_updates_accumulate_decayed_popularity_and_publish_each(app: StreamrecApp, outputs) -> None:
    pipeline = app.pipeline
    half_life_ms = int(pipeline.settings.model.popularity_half_life_s * 1000)
    dim = pipeline.config.mf.dim

    def stored() -> dict:
        raw = pipeline.items.get(b"i9")
        if raw is None:
            return {}
        item_id, item = decode_item_state(raw, dim)
        return {"item_id": item_id, **item._asdict()}

    async def scenario(feed: Feed) -> None:
        for ts in (T0_MS, T0_MS + half_life_ms):
            update = {"weight": 4.0, "ts_ms": ts, "vector": [0.5] + [0.0] * (dim - 1), "neighbours": {"i1": 1.0}}
            await feed.agent.put(json.dumps({"items": {"i9": update}}).encode())
            await until(lambda: stored().get("ts_ms") == ts)  # noqa: B023

    run_agent(app, "streamrec.items", scenario)

    assert outputs["dead_letter"].messages == []
    # 4 decayed by one half-life, plus 4: 6, as of the newer event.
    owned = stored()
    assert (owned["item_id"], owned["popularity"], owned["ts_ms"]) == ("i9", pytest.approx(6.0), T0_MS + half_life_ms)
    assert (owned["neighbour_ids"], owned["neighbour_weights"].tolist()) == (["i1"], [2.0])
    # The vector moved twice by the delta from its initial (hashed) vector, within max_norm.
    initial = pipeline.config.items.initial_vector("i9")
    assert owned["vector"][0] == pytest.approx(float(initial[0]) + 1.0, abs=1e-6)
    # The items table's changelog is the item-state topic: each update is published as stored.
    assert outputs["item_state"].keys == [b"i9", b"i9"]
    assert outputs["item_state"].messages[-1][1] == pipeline.items.get(b"i9")


def test_the_owner_rereads_its_items_from_the_table_after_a_rebalance(app: StreamrecApp, outputs) -> None:
    # The owner keeps its items decoded between updates; while another worker owned the
    # partition, only the table (recovered from the changelog) saw that worker's updates.
    pipeline = app.pipeline
    dim = pipeline.config.mf.dim

    def popularity() -> float:
        raw = pipeline.items.get(b"i9")
        return decode_item_state(raw, dim)[1].popularity if raw is not None else 0.0

    async def update(feed: Feed, expected: float) -> None:
        delta = {"weight": 1.0, "ts_ms": T0_MS, "vector": [0.0] * dim, "neighbours": {}}
        await feed.agent.put(json.dumps({"items": {"i9": delta}}).encode())
        await until(lambda: popularity() == pytest.approx(expected))

    async def scenario(feed: Feed) -> None:
        await update(feed, 1.0)
        await update(feed, 2.0)  # from the decoded item
        item_id, item = decode_item_state(pipeline.items.get(b"i9"), dim)
        written_elsewhere = encode_item_state(item_id, item._replace(popularity=10.0))
        pipeline.items.data[b"i9"] = written_elsewhere  # as changelog recovery writes
        await app.on_partitions_revoked.send(set())
        await app.on_partitions_assigned.send(set())
        await update(feed, 11.0)  # from the table, not the stale decoded 2.0

    run_agent(app, "streamrec.items", scenario)
    assert outputs["dead_letter"].messages == []


def test_malformed_item_update_goes_to_the_dead_letter_topic(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.agent.put(b'{"weight": 1}', key=b"i9")
        await until(lambda: bool(outputs["dead_letter"].messages))

    run_agent(app, "streamrec.items", scenario)

    assert "internal item update is malformed" in outputs["dead_letter"].values[0]["error"]
    assert app.pipeline.items.get(b"i9") is None


def test_malformed_item_info_is_dead_lettered_and_valid_info_is_not(app: StreamrecApp, outputs) -> None:
    async def scenario(feed: Feed) -> None:
        await feed.agent.put(json.dumps({"item_id": "i1", "categories": ["a"]}).encode(), key=b"i1")
        await feed.agent.put(json.dumps({"item_id": "i2", "available": "no"}).encode(), key=b"i2")
        await until(lambda: bool(outputs["dead_letter"].messages))

    run_agent(app, "streamrec.item-info", scenario)

    [letter] = outputs["dead_letter"].values
    assert "'available' must be true or false" in letter["error"] and letter["topic"] == f"{PREFIX}items"


def test_item_state_record_updates_the_local_ranking(app: StreamrecApp) -> None:
    pipeline = app.pipeline
    vector = [0.25] * pipeline.config.mf.dim
    state = {"item_id": "new", "popularity": 9.0, "ts_ms": T0_MS, "vector": vector,
             "neighbours": ["i1"], "neighbour_weights": [3.0]}
    pipeline.apply_item_state(b"new", json.dumps(state).encode())
    pipeline.apply_item_state(None, b"{}")  # records without a key or value are ignored

    assert pipeline.catalog.top_k(1) == [("new", 9.0)]
    assert pipeline.catalog.vector("new").tolist() == vector
    assert pipeline.catalog.neighbours("new") == (["i1"], [3.0])
    assert counted(pipeline, "streamrec_catalog_items") == 2  # the neighbour joins the catalogue too


def test_item_freshness_is_observed_once_the_replica_has_caught_up(app: StreamrecApp) -> None:
    pipeline = app.pipeline
    state = {"item_id": "x", "popularity": 1.0, "ts_ms": T0_MS, "vector": [0.5] * pipeline.config.mf.dim}
    written_ms = int(time.time() * 1000) - 200  # the owner wrote it 200 ms ago
    pipeline.catalogue_ready.clear()  # still reading the backlog present at start: not a freshness figure
    pipeline.apply_item_state(b"x", json.dumps(state).encode(), written_ms)
    assert counted(pipeline, "streamrec_item_freshness_seconds_count") == 0
    pipeline.catalogue_ready.set()
    pipeline.apply_item_state(b"x", json.dumps({**state, "popularity": 2.0}).encode(), written_ms)
    assert counted(pipeline, "streamrec_item_freshness_seconds_count") == 1
    assert 0.2 <= counted(pipeline, "streamrec_item_freshness_seconds_sum") < 5.0


def test_the_index_rebuilds_only_once_lists_search_it(tmp_path) -> None:
    # Below model.index_min_items lists score the whole catalogue: changes wait in the index's delta.
    app = make_app(tmp_path, model={"k": 3, "index_min_items": 6}, index={"rebuild_delta_items": 2})
    pipeline = app.pipeline
    dim = pipeline.config.mf.dim
    for n in range(5):
        state = {"item_id": f"i{n}", "popularity": 1.0, "ts_ms": T0_MS, "vector": [0.1 * (n + 1)] * dim}
        pipeline.apply_item_state(f"i{n}".encode(), json.dumps(state).encode())
    assert (len(pipeline.index), pipeline.index.delta_items, pipeline.index.rebuilds) == (5, 5, 0)
    state = {"item_id": "i5", "popularity": 1.0, "ts_ms": T0_MS, "vector": [0.7] * dim}
    pipeline.apply_item_state(b"i5", json.dumps(state).encode())  # the sixth item: lists search the index now
    pipeline.index.wait_for_rebuild(30)
    assert (len(pipeline.index), pipeline.index.delta_items, pipeline.index.rebuilds) == (6, 0, 1)
