"""Binary values for the internal item topics (item updates and item state).

Every event moves an item, so the owner decodes item updates and encodes the item's
state, and every worker's replica decodes that state again. As JSON these three steps
measured 31.6 µs per item (10k items with up to 100 co-visit neighbours each; turning
lists of floats into numpy arrays is most of it). Here the numbers travel as little-endian
arrays (``numpy.frombuffer``) and the ids as one UTF-8 string joined by NUL: 12.5 µs
(``docs/bench/micro/item_records.py``).

DESIGN.md leaves internal topics' formats to streamrec. Each value starts with a magic
that no JSON document starts with, so the decoders in ``records.py`` still read the JSON
values an earlier version wrote (a compacted item-state topic keeps them), and an id
holding a NUL character (allowed, never seen in practice) is written as JSON instead.

Item state: ``head`` (magic, popularity f8, ts_ms i8, vector size u2, neighbours u4),
the vector (f4), the neighbour weights (f8), then ``item_id`` and the neighbour ids.
Item updates: ``head`` (magic, vector size u2, items u4), per item its weight (f8),
ts_ms (i8), whether it has a vector (u1) and its neighbour count (u4), then the vectors
(f4) and all neighbour weights (f8), then per item its id and its neighbours' ids.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from streamrec.errors import InvalidRecord
from streamrec.models.items import ItemDelta, ItemId, PublishedItem
from streamrec.models.kernels import all_finite

STATE_MAGIC = b"\x00SRs"
UPDATES_MAGIC = b"\x00SRu"
_STATE_HEAD = struct.Struct("<4sdqHI")
_UPDATES_HEAD = struct.Struct("<4sHI")
_SEPARATOR = "\x00"


def _joined(ids: list[ItemId]) -> bytes | None:
    """The ids as one NUL-joined UTF-8 string; ``None`` if an id holds a NUL (then JSON it is)."""
    text = _SEPARATOR.join(ids)
    return text.encode() if text.count(_SEPARATOR) == len(ids) - 1 else None


def _split(raw: bytes, start: int, count: int, what: str) -> list[ItemId]:
    try:
        ids = raw[start:].decode("utf-8").split(_SEPARATOR)
    except UnicodeDecodeError:
        raise InvalidRecord(f"internal {what} has ids that are not UTF-8") from None
    if len(ids) != count or not all(ids):
        raise InvalidRecord(f"internal {what} holds {len(ids)} ids, not the {count} non-empty ones its head says")
    return ids


def _array(raw: bytes, dtype: str, count: int, offset: int, what: str) -> np.ndarray:
    """``count`` numbers of ``dtype`` at ``offset``, copied to a native, finite array."""
    try:
        array = np.frombuffer(raw, dtype, count, offset).astype(dtype[1:])
    except ValueError:
        raise InvalidRecord(f"internal {what} is shorter than its head says") from None
    if not all_finite(array):
        raise InvalidRecord(f"internal {what} holds a non-finite number")
    return array


def encode_state(item_id: ItemId, item: PublishedItem) -> bytes | None:
    """An item's published state in binary (``None``: an id holds a NUL)."""
    ids = _joined([item_id, *item.neighbour_ids])
    if ids is None:
        return None
    vector = np.asarray(item.vector, dtype="<f4")
    weights = np.asarray(item.neighbour_weights, dtype="<f8")
    head = _STATE_HEAD.pack(STATE_MAGIC, item.popularity, item.ts_ms, vector.size, weights.size)
    return b"".join((head, vector.tobytes(), weights.tobytes(), ids))


def decode_state(raw: bytes, dim: int) -> tuple[ItemId, PublishedItem]:
    """Decode :func:`encode_state`'s bytes, raising :class:`InvalidRecord` for anything malformed."""
    try:
        _, popularity, ts_ms, size, count = _STATE_HEAD.unpack_from(raw)
    except struct.error:
        raise InvalidRecord("internal item state is shorter than its head") from None
    if size != dim:
        raise InvalidRecord(f"vector has {size} components but model.dim is {dim}: "
                            "every worker must run with the same model.dim")
    if not math.isfinite(popularity) or ts_ms < 0:
        raise InvalidRecord("internal item state has a non-finite popularity or a negative ts_ms")
    start = _STATE_HEAD.size
    vector = _array(raw, "<f4", size, start, "item state")
    weights = _array(raw, "<f8", count, start + 4 * size, "item state")
    item_id, *neighbours = _split(raw, start + 4 * size + 8 * count, count + 1, "item state")
    return item_id, PublishedItem(popularity, ts_ms, vector, neighbours, weights)


def encode_updates(deltas: dict[ItemId, ItemDelta]) -> bytes | None:
    """Several items' deltas in binary (``None``: an id holds a NUL)."""
    names: list[ItemId] = []
    vectors: list[np.ndarray] = []
    weights: list[float] = []
    for item_id, delta in deltas.items():
        names.append(item_id)
        names.extend(delta.neighbours)
        weights.extend(delta.neighbours.values())
        if delta.vector is not None:
            vectors.append(delta.vector)
    ids = _joined(names)
    if ids is None:
        return None
    count = len(deltas)
    stacked = np.asarray(vectors, dtype="<f4") if vectors else np.zeros((0, 0), dtype="<f4")
    columns = (
        np.fromiter((delta.weight for delta in deltas.values()), "<f8", count),
        np.fromiter((delta.ts_ms for delta in deltas.values()), "<i8", count),
        np.fromiter((delta.vector is not None for delta in deltas.values()), "u1", count),
        np.fromiter((len(delta.neighbours) for delta in deltas.values()), "<u4", count),
        stacked, np.asarray(weights, dtype="<f8"),
    )
    head = _UPDATES_HEAD.pack(UPDATES_MAGIC, stacked.shape[1], count)
    return b"".join((head, *(column.tobytes() for column in columns), ids))


def decode_updates(raw: bytes, dim: int) -> dict[ItemId, ItemDelta]:
    """Decode :func:`encode_updates`'s bytes, raising :class:`InvalidRecord` for anything malformed."""
    try:
        _, size, count = _UPDATES_HEAD.unpack_from(raw)
    except struct.error:
        raise InvalidRecord("internal item update is shorter than its head") from None
    offset = _UPDATES_HEAD.size
    weights = _array(raw, "<f8", count, offset, "item update")
    stamps = _array(raw, "<i8", count, offset + 8 * count, "item update")
    has_vector = _array(raw, "<u1", count, offset + 16 * count, "item update").astype(bool)
    counts = _array(raw, "<u4", count, offset + 17 * count, "item update")
    offset += 21 * count
    with_vectors = int(has_vector.sum())
    if with_vectors and size != dim:
        raise InvalidRecord(f"vector has {size} components but model.dim is {dim}: "
                            "every worker must run with the same model.dim")
    vectors = _array(raw, "<f4", with_vectors * size, offset, "item update").reshape(with_vectors, size)
    offset += 4 * with_vectors * size
    total = int(counts.sum())
    neighbour_weights = _array(raw, "<f8", total, offset, "item update").tolist()
    names = _split(raw, offset + 8 * total, count + total, "item update")
    deltas: dict[ItemId, ItemDelta] = {}
    position = slot = row = 0
    for weight, ts_ms, vector_given, neighbours in zip(weights.tolist(), stamps.tolist(), has_vector.tolist(),
                                                        counts.tolist(), strict=True):
        vector = None
        if vector_given:
            vector, row = vectors[row], row + 1
        ids = names[position + 1:position + 1 + neighbours]
        deltas[names[position]] = ItemDelta(weight, ts_ms, vector,
                                            dict(zip(ids, neighbour_weights[slot:slot + neighbours], strict=True)))
        position += 1 + neighbours
        slot += neighbours
    return deltas


def as_json_object(raw: bytes) -> dict[str, object] | None:
    """A binary item record as the JSON object an earlier version wrote (for people reading the
    topic, e.g. ``streamrec consume``); ``None`` if ``raw`` is not one, or is malformed."""
    try:
        if raw.startswith(STATE_MAGIC):
            item_id, item = decode_state(raw, _STATE_HEAD.unpack_from(raw)[3])
            return {"item_id": item_id, "popularity": item.popularity, "ts_ms": item.ts_ms,
                    "vector": item.vector.tolist(), "neighbours": item.neighbour_ids,
                    "neighbour_weights": item.neighbour_weights.tolist()}
        if raw.startswith(UPDATES_MAGIC):
            deltas = decode_updates(raw, _UPDATES_HEAD.unpack_from(raw)[1])
            return {"items": {item_id: {"weight": delta.weight, "ts_ms": delta.ts_ms, "neighbours": delta.neighbours,
                                        "vector": None if delta.vector is None else delta.vector.tolist()}
                              for item_id, delta in deltas.items()}}
    except (InvalidRecord, struct.error):
        return None
    return None
