"""Decoding and encoding of streamrec messages (``streamrec.streams.records``).

The contract under test: decoding never raises anything but ``InvalidRecord``,
whose ``reason`` a person can act on; a valid message becomes a typed record.
"""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamrec.config import EventSettings
from streamrec.errors import InvalidRecord, StreamrecError
from streamrec.eval.synthetic import invalid_events
from streamrec.models.items import ItemDelta
from streamrec.streams.records import (
    DeadLetter,
    Event,
    Recommendation,
    Request,
    InvalidRequest,
    ScoredItem,
    decode_event,
    decode_item_info,
    decode_item_updates,
    decode_request,
    encode_item_updates,
    parse_timestamp_ms,
)

from streamrec.streams.topics import key_partition

RULES = EventSettings()
MAX_K = 100
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


def view(**fields: object) -> bytes:
    return encode({"user_id": "u1", "item_id": "i1", "type": "view", **fields})


# -- valid events ------------------------------------------------------------------


def test_decodes_minimal_view_event() -> None:
    event = decode_event(view(), RULES)

    assert event == Event(user_id="u1", item_id="i1", type="view", ts_ms=None)


def test_keeps_epoch_millisecond_timestamp() -> None:
    assert decode_event(view(ts=1_700_000_000_123), RULES).ts_ms == 1_700_000_000_123


@pytest.mark.parametrize("iso, expected_ms", [
    ("2023-11-14T22:13:20Z", 1_700_000_000_000),
    ("2023-11-14T22:13:20.5+00:00", 1_700_000_000_500),
    ("2023-11-15T00:13:20+02:00", 1_700_000_000_000),
    ("2023-11-14T22:13:20", 1_700_000_000_000),  # naive means UTC
])
def test_converts_iso8601_timestamp_to_epoch_ms(iso: str, expected_ms: int) -> None:
    assert decode_event(view(ts=iso), RULES).ts_ms == expected_ms


def test_integer_ids_become_strings() -> None:
    event = decode_event(encode({"user_id": 42, "item_id": 7, "type": "click", "event_id": 9}), RULES)

    assert (event.user_id, event.item_id, event.event_id) == ("42", "7", "9")


def test_strips_whitespace_around_ids() -> None:
    assert decode_event(view(user_id="  u1 "), RULES).user_id == "u1"


def test_keeps_unknown_fields_in_extra_and_known_ones_out_of_it() -> None:
    event = decode_event(view(campaign="spring", score=[1, 2], context={"page": "home"}), RULES)

    assert event.extra == {"campaign": "spring", "score": [1, 2]}
    assert event.context == {"page": "home"}


def test_decodes_rating_with_its_value() -> None:
    event = decode_event(view(type="rating", value=4.5, event_id="e-1"), RULES)

    assert (event.type, event.value, event.event_id) == ("rating", 4.5, "e-1")


def test_accepts_event_types_from_settings_only() -> None:
    rules = EventSettings(types={"like": 1.0}, value_weighted_types=[])

    assert decode_event(view(type="like"), rules).type == "like"
    with pytest.raises(InvalidRecord, match="allowed: like"):
        decode_event(view(), rules)


def test_invalid_record_is_a_value_error_and_a_streamrec_error() -> None:
    with pytest.raises(InvalidRecord) as info:
        decode_event(b"[]", RULES)

    assert isinstance(info.value, ValueError) and isinstance(info.value, StreamrecError)
    assert info.value.reason == str(info.value)


def test_parse_timestamp_rejects_negative_and_huge_epoch_ms() -> None:
    for bad in (-1, 10**14, math.nan, "soon", True):
        with pytest.raises(InvalidRecord):
            parse_timestamp_ms(bad)


# -- every kind of invalid event -----------------------------------------------------

INVALID = invalid_events(RULES.max_id_length, RULES.max_payload_bytes)


@pytest.mark.parametrize("kind", sorted(INVALID))
def test_rejects_invalid_event_with_reason(kind: str) -> None:
    raw, phrase = INVALID[kind]

    with pytest.raises(InvalidRecord) as info:
        decode_event(raw, RULES)

    assert phrase in info.value.reason


def test_rejects_tombstone() -> None:
    with pytest.raises(InvalidRecord, match="tombstone"):
        decode_event(None, RULES)


@pytest.mark.parametrize("bad_id", [True, 1.5, [], {}, ""])
def test_rejects_ids_that_are_not_non_empty_strings_or_ints(bad_id: object) -> None:
    with pytest.raises(InvalidRecord, match="'item_id'"):
        decode_event(view(item_id=bad_id), RULES)


# -- known bugs: decoding raises something other than InvalidRecord ------------------


@pytest.mark.parametrize("bad_type", [[1], {"a": 1}])
def test_rejects_unhashable_event_type(bad_type: object) -> None:
    with pytest.raises(InvalidRecord, match="unknown event type"):
        decode_event(view(type=bad_type), RULES)


@pytest.mark.parametrize("field_name", ["value", "ts"])
def test_rejects_integer_too_large_for_a_float(field_name: str) -> None:
    raw = b'{"user_id":"u","item_id":"i","type":"rating","value":1,"%s":1%s}' % (
        field_name.encode(), b"0" * 400)

    with pytest.raises(InvalidRecord):
        decode_event(raw, RULES)


@pytest.mark.parametrize("decode", [
    lambda raw: decode_event(raw, RULES),
    lambda raw: decode_request(raw, RULES, MAX_K),
], ids=["event", "request"])
def test_rejects_deeply_nested_json_under_the_size_limit(decode) -> None:
    raw = b"[" * 5000 + b"]" * 5000
    assert len(raw) < RULES.max_payload_bytes

    with pytest.raises(InvalidRecord):
        decode(raw)


def test_rejects_iso_timestamp_before_epoch_like_numeric_one() -> None:
    with pytest.raises(InvalidRecord):
        decode_event(view(ts="1969-12-31T23:59:59Z"), RULES)


# -- property: nothing but Event or InvalidRecord ------------------------------------

def json_strategies(integers: st.SearchStrategy[int]) -> tuple[st.SearchStrategy, st.SearchStrategy]:
    """(scalars, any JSON value) whose integers come from ``integers``."""
    scalars = st.none() | st.booleans() | integers | st.floats() | st.text(max_size=20)
    values = st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=12,
    )
    return scalars, values


def event_dicts(integers: st.SearchStrategy[int], any_type: bool) -> st.SearchStrategy[dict]:
    """Dicts with (some of) the event fields, each a plausible or an arbitrary JSON value."""
    scalars, values = json_strategies(integers)
    ids = st.text(max_size=12) | integers | values
    timestamps = (integers | st.floats() | st.text(max_size=30)
                  | st.datetimes().map(lambda d: d.isoformat()) | values)
    known = st.fixed_dictionaries({}, optional={
        "user_id": ids,
        "item_id": ids,
        "type": st.sampled_from(sorted(RULES.types)) | (values if any_type else scalars),
        "ts": timestamps,
        "event_id": ids,
        "value": st.floats() | integers | values,
        "context": values,
    })
    unknown = st.dictionaries(st.text(max_size=8), values, max_size=3)
    return st.tuples(unknown, known).map(lambda pair: {**pair[0], **pair[1]})


_, json_values = json_strategies(st.integers())
ids = st.text(max_size=12) | st.integers() | json_values


def assert_valid_event(event: Event) -> None:
    assert isinstance(event, Event)
    assert isinstance(event.user_id, str) and event.user_id.strip() == event.user_id != ""
    assert isinstance(event.item_id, str) and event.item_id != ""
    assert event.type in RULES.types
    assert event.value is None or math.isfinite(event.value)
    assert event.ts_ms is None or isinstance(event.ts_ms, int)
    assert event.type not in RULES.value_weighted_types or event.value is not None


def decodes_or_rejects_event(raw: bytes | None) -> None:
    try:
        event = decode_event(raw, RULES)
    except InvalidRecord as exc:
        assert exc.reason
        return
    assert_valid_event(event)


@PROPERTY
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_to_event_or_invalid_record(raw: bytes) -> None:
    decodes_or_rejects_event(raw)


@PROPERTY
@given(json_values)
def test_arbitrary_json_decodes_to_event_or_invalid_record(value: object) -> None:
    decodes_or_rejects_event(json.dumps(value).encode())


@settings(PROPERTY, report_multiple_bugs=False)
@given(event_dicts(st.integers(), any_type=True))
@example({"user_id": "u", "item_id": "i", "type": [1]})
@example({"user_id": "u", "item_id": "i", "type": "view", "ts": 10**400})
def test_event_shaped_dicts_decode_to_event_or_invalid_record(fields: dict) -> None:
    decodes_or_rejects_event(json.dumps(fields).encode())


@PROPERTY
@given(event_dicts(st.integers(-(2**53), 2**53), any_type=False))
def test_event_shaped_dicts_with_scalar_type_and_float_sized_ints_decode_or_reject(fields: dict) -> None:
    """The property above minus the two known bugs, so it guards everything else meanwhile."""
    decodes_or_rejects_event(json.dumps(fields).encode())


request_fields = st.fixed_dictionaries({}, optional={
    "request_id": ids,
    "user_id": ids,
    "k": st.integers(-5, MAX_K + 5) | json_values,
    "exclude": st.lists(st.text(max_size=5) | st.integers(), max_size=4) | json_values,
    "filters": st.dictionaries(st.text(max_size=5), json_values, max_size=3) | json_values,
})


@PROPERTY
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode())
       | request_fields.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_input_decodes_to_request_or_invalid_record(raw: bytes) -> None:
    try:
        request = decode_request(raw, RULES, MAX_K)
    except InvalidRecord as exc:
        assert exc.reason
        return
    assert isinstance(request, Request)
    assert request.request_id and request.user_id
    assert request.k is None or (type(request.k) is int and 1 <= request.k <= MAX_K)
    assert all(isinstance(item, str) for item in request.exclude)
    assert isinstance(request.filters, dict)


# -- requests -----------------------------------------------------------------------


def test_decodes_request_with_k_exclude_and_filters() -> None:
    raw = encode({"request_id": "r1", "user_id": 5, "k": 3, "exclude": ["i1", 2],
                  "filters": {"categories": ["jazz"]}})

    assert decode_request(raw, RULES, MAX_K) == Request("r1", "5", 3, ("i1", "2"), {"categories": ["jazz"]})


@pytest.mark.parametrize("filters, reason", [({"genre": "jazz"}, "unknown filter"),
                                             ({"categories": "jazz"}, "non-empty list"),
                                             ({"categories": []}, "non-empty list")])
def test_a_request_with_a_filter_it_cannot_apply_is_answered_with_the_reason(filters: dict, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        decode_request(encode({"request_id": "r1", "user_id": "u", "filters": filters}), RULES, MAX_K)


def test_item_info_decodes_availability_and_categories_and_refuses_bad_types() -> None:
    info = decode_item_info(encode({"item_id": "i1", "available": False, "categories": ["a", "b"],
                                    "title": "T", "extra": 1}), RULES)
    assert (info.item_id, info.available, info.categories, info.title) == ("i1", False, frozenset({"a", "b"}), "T")
    assert decode_item_info(encode({"item_id": "i2"}), RULES).available
    for bad in ({"item_id": "i", "available": "no"}, {"item_id": "i", "categories": "a"}, {"title": "x"}):
        with pytest.raises(InvalidRecord):
            decode_item_info(encode(bad), RULES)


def test_request_without_k_leaves_it_to_the_model() -> None:
    assert decode_request(encode({"request_id": "r", "user_id": "u"}), RULES, MAX_K).k is None


@pytest.mark.parametrize("k", [1, MAX_K])
def test_accepts_k_at_the_bounds(k: int) -> None:
    assert decode_request(encode({"request_id": "r", "user_id": "u", "k": k}), RULES, MAX_K).k == k


@pytest.mark.parametrize("k", [0, -1, MAX_K + 1, 2.0, "3", True])
def test_rejects_k_outside_1_to_max_k(k: object) -> None:
    with pytest.raises(InvalidRecord, match=f"from 1 to {MAX_K}"):
        decode_request(encode({"request_id": "r", "user_id": "u", "k": k}), RULES, MAX_K)


def test_rejects_request_without_request_id() -> None:
    with pytest.raises(InvalidRecord, match="'request_id' is missing"):
        decode_request(encode({"user_id": "u"}), RULES, MAX_K)


@pytest.mark.parametrize("fields, phrase", [
    ({"exclude": "i1"}, "'exclude' must be a list"),
    ({"exclude": [{"id": 1}]}, "'exclude' must be a list"),
    ({"filters": [1]}, "'filters' must be a JSON object"),
])
def test_rejects_malformed_exclude_and_filters(fields: dict, phrase: str) -> None:
    with pytest.raises(InvalidRecord, match=phrase):
        decode_request(encode({"request_id": "r", "user_id": "u", **fields}), RULES, MAX_K)


# -- dead letters and recommendations -----------------------------------------------


def test_dead_letter_keeps_utf8_payload_as_text() -> None:
    letter = DeadLetter.of("bad", "streamrec.events", 2, 41, "héllo {".encode())

    assert (letter.payload, letter.payload_encoding) == ("héllo {", "utf-8")


@given(st.binary(min_size=1))
def test_dead_letter_round_trips_any_bytes(raw: bytes) -> None:
    letter = DeadLetter.of("bad", "t", 0, 0, raw)

    if letter.payload_encoding == "base64":
        assert base64.b64decode(letter.payload) == raw
    else:
        assert letter.payload_encoding == "utf-8" and letter.payload.encode() == raw


def test_dead_letter_base64_encodes_non_utf8_bytes() -> None:
    raw = b"\xff\xfe\x00garbage"

    letter = DeadLetter.of("bad", "t", 0, 0, raw)

    assert letter.payload_encoding == "base64"
    assert base64.b64decode(letter.payload) == raw


def test_dead_letter_of_tombstone_has_empty_payload() -> None:
    assert DeadLetter.of("tombstone", "t", 0, 0, None).payload == ""


def test_dead_letter_json_has_reason_position_and_payload() -> None:
    body = json.loads(DeadLetter.of("field 'x' is missing", "streamrec.events", 3, 17, b"\x80").to_json())

    assert {"error", "topic", "partition", "offset", "payload"} <= body.keys()
    assert body["error"] == "field 'x' is missing"
    assert (body["topic"], body["partition"], body["offset"]) == ("streamrec.events", 3, 17)
    assert base64.b64decode(body["payload"]) == b"\x80"
    assert body["schema_version"] == 1


def recommendation(**fields: object) -> Recommendation:
    defaults: dict = {"user_id": "u1", "items": [ScoredItem("i1", 2.5)], "trigger": "event",
                      "model_version": "trending-v1", "source": "trending", "emitted_ts": 1}
    return Recommendation(**{**defaults, **fields})


def test_recommendation_json_omits_none_fields() -> None:
    body = json.loads(recommendation().to_json())

    assert not {"request_id", "event_ts", "event_id"} & body.keys()
    assert body["items"] == [{"item_id": "i1", "score": 2.5}]
    assert body["schema_version"] == 1


def test_recommendation_json_keeps_set_optional_fields() -> None:
    body = json.loads(recommendation(request_id="r1", event_ts=5, event_id="e1", items=[]).to_json())

    assert (body["request_id"], body["event_ts"], body["event_id"], body["items"]) == ("r1", 5, "e1", [])


def test_dead_letter_of_a_huge_value_keeps_a_bounded_prefix_and_the_original_size() -> None:
    from streamrec.streams.records import DEAD_LETTER_PAYLOAD_LIMIT

    raw = b"\x01" * (3 * DEAD_LETTER_PAYLOAD_LIMIT)
    letter = DeadLetter.of("too big", "t", 0, 5, raw)

    assert letter.payload_bytes == len(raw)
    assert len(letter.payload.encode()) == DEAD_LETTER_PAYLOAD_LIMIT
    assert len(letter.to_json()) < 8 * DEAD_LETTER_PAYLOAD_LIMIT


def test_future_timestamps_beyond_the_skew_are_rejected_only_when_the_clock_is_given() -> None:
    now = 1_700_000_000_000
    rules = EventSettings(max_future_skew_s=60)
    ahead = json.dumps({"user_id": "u", "item_id": "i", "type": "view", "ts": now + 61_000}).encode()
    within = json.dumps({"user_id": "u", "item_id": "i", "type": "view", "ts": now + 59_000}).encode()

    with pytest.raises(InvalidRecord, match="in the future"):
        decode_event(ahead, rules, now_ms=now)
    assert decode_event(within, rules, now_ms=now).ts_ms == now + 59_000
    assert decode_event(ahead, rules).ts_ms == now + 61_000


# -- internal item updates (batched per partition) ------------------------------------


def test_item_update_batches_round_trip() -> None:
    deltas = {"i1": ItemDelta(2.0, 5, np.arange(4, dtype=np.float32), {"i0": 1.5}), "i2": ItemDelta(1.0, 6)}
    decoded = decode_item_updates(encode_item_updates(deltas), dim=4)
    assert list(decoded) == ["i1", "i2"]
    assert (decoded["i1"].weight, decoded["i1"].ts_ms, decoded["i1"].neighbours) == (2.0, 5, {"i0": 1.5})
    assert decoded["i1"].vector.tolist() == [0.0, 1.0, 2.0, 3.0] and decoded["i2"].vector is None


@pytest.mark.parametrize(("items", "phrase"), [
    (None, "needs an object 'items'"),
    ({"i1": [1]}, "'i1' is not an object"),
    ({"i1": {"weight": 1.0, "ts_ms": 5, "vector": [float("nan")] * 4}}, "finite"),
    ({"i1": {"weight": 1.0, "ts_ms": 5, "vector": [1.0]}}, "model.dim"),
    ({"i1": {"weight": "x", "ts_ms": 5}}, "'weight' must be a number"),
    ({"i1": {"ts_ms": 5}}, "'i1' needs numeric 'weight'"),
])
def test_malformed_item_update_batches_are_refused(items: object, phrase: str) -> None:
    with pytest.raises(InvalidRecord, match=phrase):
        decode_item_updates(json.dumps({"items": items}).encode(), dim=4)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64), st.integers(1, 100))
@example(b"\xe2\x82\xac", 12)
@example(b"", 12)
def test_key_partition_matches_kafkas_default_partitioner(key: bytes, partitions: int) -> None:
    # What aiokafka's producer (like the Java client's) picks for a keyed record.
    expected = DefaultPartitioner()(key, list(range(partitions)), list(range(partitions)))
    assert key_partition(key, partitions) == expected
