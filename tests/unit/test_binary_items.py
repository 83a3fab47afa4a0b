"""Binary values on the internal item topics: round trips, the JSON an earlier version wrote,
ids binary cannot carry, and malformed records refused with a reason (never another error)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.errors import InvalidRecord
from streamrec.models.items import ItemDelta, PublishedItem
from streamrec.streams import binary_items
from streamrec.streams.records import (
    decode_item_state,
    decode_item_updates,
    encode_item_state,
    encode_item_updates,
)

ids = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)
numbers = st.floats(-1e6, 1e6, allow_nan=False)


def published(neighbours: dict[str, float], dim: int = 4) -> PublishedItem:
    return PublishedItem(2.5, 1_700_000_000_000, np.arange(dim, dtype=np.float32) / 3,
                         list(neighbours), np.array(list(neighbours.values()), dtype=np.float64))


@settings(max_examples=100, deadline=None)
@given(ids, st.dictionaries(ids, numbers, max_size=30), numbers)
def test_item_state_round_trips_in_binary(item_id: str, neighbours: dict[str, float], popularity: float) -> None:
    item = published(neighbours)._replace(popularity=popularity)
    raw = encode_item_state(item_id, item)
    assert raw.startswith(binary_items.STATE_MAGIC)
    decoded_id, decoded = decode_item_state(raw, dim=4)
    assert decoded_id == item_id
    assert (decoded.popularity, decoded.ts_ms, decoded.neighbour_ids) == (popularity, item.ts_ms, list(neighbours))
    assert decoded.vector.dtype == np.float32 and decoded.vector.tolist() == item.vector.tolist()
    assert decoded.neighbour_weights.tolist() == list(neighbours.values())
    assert decoded.vector.flags.writeable  # a copy: the record's bytes are not kept alive


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(ids, st.tuples(numbers, st.booleans(), st.dictionaries(ids, numbers, max_size=5)),
                       min_size=1, max_size=10))
def test_item_updates_round_trip_in_binary(items: dict[str, tuple[float, bool, dict[str, float]]]) -> None:
    deltas = {item_id: ItemDelta(weight, 7, np.full(4, weight, dtype=np.float32) if with_vector else None, neighbours)
              for item_id, (weight, with_vector, neighbours) in items.items()}
    raw = encode_item_updates(deltas)
    assert raw.startswith(binary_items.UPDATES_MAGIC)
    decoded = decode_item_updates(raw, dim=4)
    assert list(decoded) == list(deltas)
    for item_id, delta in deltas.items():
        got = decoded[item_id]
        assert (got.weight, got.ts_ms, got.neighbours) == (delta.weight, delta.ts_ms, delta.neighbours)
        assert (got.vector is None) == (delta.vector is None)
        if delta.vector is not None:
            assert got.vector.tolist() == delta.vector.tolist()


def test_an_id_holding_a_nul_is_written_as_json_and_still_read() -> None:
    odd = "a\x00b"
    state = encode_item_state("i1", published({odd: 1.0}))
    updates = encode_item_updates({odd: ItemDelta(1.0, 5, None, {"i1": 2.0})})
    assert json.loads(state)["neighbours"] == [odd] and odd in json.loads(updates)["items"]
    assert decode_item_state(state, dim=4)[1].neighbour_ids == [odd]
    assert decode_item_updates(updates, dim=4)[odd].neighbours == {"i1": 2.0}


def test_json_item_state_from_an_earlier_version_is_read() -> None:
    raw = json.dumps({"item_id": "i1", "popularity": 2.0, "ts_ms": 5, "vector": [0.0, 1.0, 2.0, 3.0],
                      "neighbours": ["i2"], "neighbour_weights": [1.5], "schema_version": 1}).encode()
    item_id, item = decode_item_state(raw, dim=4)
    assert (item_id, item.popularity, item.neighbour_ids, item.neighbour_weights.tolist()) == ("i1", 2.0, ["i2"], [1.5])


def _state(**changes: object) -> bytes:
    raw = bytearray(encode_item_state("i1", published({"i2": 1.0})))
    head = list(struct.unpack_from("<4sdqHI", raw))
    for field, value in changes.items():
        head[["magic", "popularity", "ts_ms", "size", "count"].index(field)] = value
    struct.pack_into("<4sdqHI", raw, 0, *head)
    return bytes(raw)


@pytest.mark.parametrize(("raw", "phrase"), [
    (binary_items.STATE_MAGIC + b"\x01", "shorter than its head"),
    (_state(size=8), "model.dim is 4"),
    (_state(popularity=float("inf")), "non-finite popularity"),
    (_state(count=40), "shorter than its head says"),
    (_state() + b"\x00i3", "holds 3 ids, not the 2"),
    (_state()[:-2] + b"\xff\xfe", "not UTF-8"),
    (_state()[:30] + struct.pack("<f", float("nan")) + _state()[34:], "non-finite number"),
])
def test_malformed_binary_item_state_is_refused(raw: bytes, phrase: str) -> None:
    with pytest.raises(InvalidRecord, match=phrase):
        decode_item_state(raw, dim=4)


def test_malformed_binary_item_updates_are_refused() -> None:
    raw = encode_item_updates({"i1": ItemDelta(1.0, 5, np.zeros(4, dtype=np.float32), {"i2": 1.0})})
    for damaged, phrase in ((raw[:5], "shorter than its head"), (raw[:-20], "shorter than its head says"),
                            (raw + b"\x00i3", "holds 3 ids, not the 2"), (raw[:-2] + b"\xff\xfe", "not UTF-8")):
        with pytest.raises(InvalidRecord, match=phrase):
            decode_item_updates(damaged, dim=4)
    with pytest.raises(InvalidRecord, match="model.dim is 8"):
        decode_item_updates(raw, dim=8)
    weight_at = struct.calcsize("<4sHI")
    with pytest.raises(InvalidRecord, match="non-finite number"):
        decode_item_updates(raw[:weight_at] + struct.pack("<d", float("nan")) + raw[weight_at + 8:], dim=4)


def test_binary_item_records_read_as_the_json_objects_an_earlier_version_wrote() -> None:
    item = published({"i2": 1.5})
    state = binary_items.as_json_object(encode_item_state("i1", item))
    assert state == {"item_id": "i1", "popularity": 2.5, "ts_ms": item.ts_ms, "vector": item.vector.tolist(),
                     "neighbours": ["i2"], "neighbour_weights": [1.5]}
    updates = binary_items.as_json_object(encode_item_updates({"i1": ItemDelta(1.0, 5, None, {"i2": 2.0})}))
    assert updates == {"items": {"i1": {"weight": 1.0, "ts_ms": 5, "neighbours": {"i2": 2.0}, "vector": None}}}
    assert binary_items.as_json_object(b'{"item_id": "i1"}') is None
    assert binary_items.as_json_object(binary_items.STATE_MAGIC + b"\x01") is None  # malformed: shown as it is
