"""Typed records for every message streamrec reads or writes, and their validation.

Every value on a public streamrec topic is a JSON object (see DESIGN.md, "Topics and
messages"); the internal item topics carry binary values (``binary_items``). Decoding never raises anything but :class:`InvalidRecord`, whose
``reason`` tells a person what was wrong and how to fix it; the caller sends
the original bytes with that reason to the dead-letter topic.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson  # the hot-path encoders: several times faster than json

from streamrec.config import EventSettings
from streamrec.streams import binary_items
from streamrec.errors import InvalidRecord
from streamrec.models.items import ItemDelta, PublishedItem
from streamrec.models.online_recommender import Ranked
from streamrec.models.user_state import UserState

_NUMPY = orjson.OPT_SERIALIZE_NUMPY  # numpy scalars are numbers (stdlib json refuses them)

#: Version of the message formats below; bumped on incompatible changes.
SCHEMA_VERSION = 1
#: Most bytes of an original value copied into a dead letter.
DEAD_LETTER_PAYLOAD_LIMIT = 64 * 1024
ITEM_UPDATES_PER_RECORD = 64
"""Most item deltas in one internal item-updates record (each is under 2 KB at dim 32–128). The owner
applies a record in one go while events wait, so records stay small."""
ITEM_UPDATES_PAYLOAD_LIMIT = 1024 * 1024  # Kafka's default max.message.bytes

UserId = str
ItemId = str

_EVENT_FIELDS = {"user_id", "item_id", "type", "ts", "event_id", "value", "context"}


@dataclass(frozen=True, slots=True)
class Event:
    """One user interaction from ``streamrec.events``."""

    user_id: UserId
    item_id: ItemId
    type: str
    ts_ms: int | None
    """Event time in epoch milliseconds; ``None`` means "use the broker timestamp"."""
    event_id: str | None = None
    """Makes replays idempotent: a repeated id within the dedup window is applied once."""
    value: float | None = None
    """Rating or amount, for value-weighted types such as ``rating``."""
    context: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Unknown fields, kept as they came."""


@dataclass(frozen=True, slots=True)
class Request:
    """A request for recommendations from ``streamrec.requests``."""

    request_id: str
    user_id: UserId
    k: int | None = None
    exclude: tuple[ItemId, ...] = ()
    filters: dict[str, Any] = field(default_factory=dict)


ScoredItem = Ranked
"""One recommended item: id, score (higher is better) and the signal that chose it most
(``"ann"`` embeddings, ``"co-visit"``, ``"trending"``, ``"sequence"``, ``"explore"``).
The model's own tuple, published as it is: converting each item cost 9 µs per list of ten."""


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A top-K list on ``streamrec.recommendations``."""

    user_id: UserId
    items: list[ScoredItem]
    trigger: str
    """``"event"`` (pushed after an event) or ``"request"`` (answer to a request)."""
    model_version: str
    source: str
    emitted_ts: int
    """Wall-clock time the worker emitted it, epoch milliseconds."""
    request_id: str | None = None
    event_ts: int | None = None
    """Event time of the triggering event, epoch milliseconds."""
    event_id: str | None = None
    error: str | None = None
    """Why a request could not be served (then ``items`` is empty)."""
    arm: str | None = None
    """The user's A/B arm (``"a"`` or ``"b"``) while an A/B test runs (``[ab]``), else absent."""
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        """Encode as the JSON value published on the recommendations topic."""
        # Built by hand: dataclasses.asdict deep-copies and costs ~5% of a worker's CPU. Scores keep
        # 6 decimals; round(x * 1e6) / 1e6 gives round(x, 6)'s numbers in half the time.
        body: dict[str, Any] = {
            "user_id": self.user_id,
            "items": [{"item_id": item_id, "score": round(score * 1e6) / 1e6, "source": source} if source
                      else {"item_id": item_id, "score": round(score * 1e6) / 1e6}
                      for item_id, score, source in self.items],
            "trigger": self.trigger, "model_version": self.model_version, "source": self.source,
            "emitted_ts": self.emitted_ts, "request_id": self.request_id,
            "event_ts": self.event_ts, "event_id": self.event_id, "error": self.error,
            "schema_version": self.schema_version,
        }
        if self.arm is not None:
            body["arm"] = self.arm
        return orjson.dumps({k: v for k, v in body.items() if v is not None}, option=_NUMPY)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message streamrec could not use, with the reason, on ``streamrec.dead-letter``."""

    error: str
    topic: str
    partition: int
    offset: int
    payload: str
    payload_encoding: str = "utf-8"
    """``"utf-8"``, or ``"base64"`` when the original bytes were not UTF-8."""
    payload_bytes: int = 0
    """Size of the original value; ``payload`` holds at most :data:`DEAD_LETTER_PAYLOAD_LIMIT` of it."""
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def of(cls, error: str, topic: str, partition: int, offset: int, raw: bytes | None) -> DeadLetter:
        """Wrap the original bytes, whatever they contain.

        A huge value is cut to its first :data:`DEAD_LETTER_PAYLOAD_LIMIT` bytes (so the
        dead letter itself stays under Kafka's message size); the whole value stays
        on its topic at ``partition``/``offset``.
        """
        raw = raw or b""
        kept = raw[:DEAD_LETTER_PAYLOAD_LIMIT]
        try:
            return cls(error, topic, partition, offset, kept.decode("utf-8"), "utf-8", len(raw))
        except UnicodeDecodeError:
            return cls(error, topic, partition, offset, base64.b64encode(kept).decode(), "base64",
                       len(raw))

    def to_json(self) -> bytes:
        """Encode as the JSON value published on the dead-letter topic."""
        return json.dumps(asdict(self), separators=(",", ":")).encode()


def _delta_object(delta: ItemDelta) -> dict[str, Any]:
    return {"weight": delta.weight, "ts_ms": delta.ts_ms,
            "vector": None if delta.vector is None else delta.vector.tolist(), "neighbours": delta.neighbours}


def encode_item_updates(deltas: dict[ItemId, ItemDelta]) -> bytes:
    """Encode the deltas of several items (all owned by one partition) for ``internal.item-updates``.

    One record per partition and publication, not per item: the owner's cost per record
    (Faust's consumer and stream) is then paid once for the whole batch. Binary
    (``binary_items``), or JSON when an id holds a NUL character.
    """
    return binary_items.encode_updates(deltas) or item_updates_json(deltas)


def item_updates_json(deltas: dict[ItemId, ItemDelta]) -> bytes:
    """Item deltas as JSON (what versions before the binary format wrote)."""
    return orjson.dumps({"items": {item_id: _delta_object(delta) for item_id, delta in deltas.items()},
                         "schema_version": SCHEMA_VERSION}, option=_NUMPY)


def decode_item_updates(raw: bytes | None, dim: int) -> dict[ItemId, ItemDelta]:
    """Decode a batch of item deltas, raising :class:`InvalidRecord` for anything malformed or non-finite."""
    if raw is not None and raw.startswith(binary_items.UPDATES_MAGIC):
        return binary_items.decode_updates(_within(raw, ITEM_UPDATES_PAYLOAD_LIMIT), dim)
    items = _load_object(raw, ITEM_UPDATES_PAYLOAD_LIMIT).get("items")
    if not isinstance(items, dict):
        raise InvalidRecord("internal item update needs an object 'items' (item_id -> delta)")
    deltas = {}
    for item_id, obj in items.items():
        if not isinstance(obj, dict):
            raise InvalidRecord(f"internal item update of {item_id!r} is not an object")
        weight = _finite_number(obj, "weight")
        ts_ms = parse_timestamp_ms(obj.get("ts_ms"))
        neighbours = obj.get("neighbours") or {}
        if weight is None or ts_ms is None or not isinstance(neighbours, dict):
            raise InvalidRecord(f"internal item update of {item_id!r} needs numeric 'weight' and 'ts_ms' "
                                "and an object 'neighbours'")
        weights = _finite_numbers(list(neighbours.values()), "neighbour weights")
        deltas[item_id] = ItemDelta(weight, ts_ms, _vector(obj.get("vector"), dim, required=False),
                                    dict(zip(map(str, neighbours), weights.tolist(), strict=True)))
    return deltas


def encode_user_state(state: UserState) -> bytes:
    """Encode a user's state for the users table and its changelog (JSON, as Faust's json codec wrote it)."""
    return orjson.dumps(state.to_dict())


def decode_user_state(raw: bytes | None) -> UserState:
    """Decode a stored user state; ``None`` (an unknown user) gives an empty state."""
    return UserState.from_dict(orjson.loads(raw) if raw is not None else None)


def encode_item_state(item_id: ItemId, item: PublishedItem) -> bytes:
    """Encode an item's published state for ``internal.item-state`` (compacted, keyed by item_id):
    binary (``binary_items``), or JSON when an id holds a NUL character."""
    return binary_items.encode_state(item_id, item) or item_state_json(item_id, item)


def item_state_json(item_id: ItemId, item: PublishedItem) -> bytes:
    """An item's published state as JSON (what versions before the binary format wrote)."""
    return orjson.dumps({"item_id": item_id, "popularity": item.popularity, "ts_ms": item.ts_ms,
                         "vector": item.vector.tolist(), "neighbours": item.neighbour_ids,
                         "neighbour_weights": item.neighbour_weights.tolist(),
                         "schema_version": SCHEMA_VERSION}, option=_NUMPY)


def decode_item_state(raw: bytes | None, dim: int) -> tuple[ItemId, PublishedItem]:
    """Decode an item's published state, raising :class:`InvalidRecord` for anything malformed."""
    if raw is not None and raw.startswith(binary_items.STATE_MAGIC):
        return binary_items.decode_state(_within(raw, 4 * DEAD_LETTER_PAYLOAD_LIMIT), dim)
    obj = _load_object(raw, 4 * DEAD_LETTER_PAYLOAD_LIMIT)
    item_id = _require_id(obj, "item_id", DEAD_LETTER_PAYLOAD_LIMIT)
    popularity = _finite_number(obj, "popularity")
    ts_ms = parse_timestamp_ms(obj.get("ts_ms"))
    ids = obj.get("neighbours") or []
    if item_id is None or popularity is None or ts_ms is None or not isinstance(ids, list):
        raise InvalidRecord("internal item state needs 'item_id', 'popularity', 'ts_ms' and a list 'neighbours'")
    weights = _finite_numbers(obj.get("neighbour_weights") or [], "neighbour_weights")
    if len(ids) != weights.size:
        raise InvalidRecord(f"internal item state has {len(ids)} neighbours but {weights.size} neighbour_weights")
    vector = _vector(obj.get("vector"), dim, required=True)
    return item_id, PublishedItem(popularity, ts_ms, vector, [str(i) for i in ids], weights)


def _finite_numbers(values: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidRecord(f"{name} must be a list of numbers") from None
    if array.ndim != 1 or not np.isfinite(array).all():
        raise InvalidRecord(f"{name} must be a flat list of finite numbers")
    return array


def _vector(value: Any, dim: int, required: bool) -> np.ndarray | None:
    if value is None and not required:
        return None
    vector = _finite_numbers(value if value is not None else [], "vector")
    if vector.shape != (dim,):
        raise InvalidRecord(f"vector has {vector.size} components but model.dim is {dim}: "
                            "every worker must run with the same model.dim")
    return vector.astype(np.float32)


def _load_with_stdlib(raw: bytes) -> Any:
    """Decode what orjson refused: the stdlib also reads NaN, Infinity and huge integers, so such
    values are refused later with a precise reason ("must be a finite number"), or explains why not."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRecord(f"value is not valid UTF-8 JSON ({exc}); send a JSON object") from None
    except RecursionError:
        raise InvalidRecord("value is nested too deeply to decode; send a flat JSON object") from None


def _within(raw: bytes, max_bytes: int) -> bytes:
    if len(raw) > max_bytes:
        raise InvalidRecord(
            f"payload is {len(raw)} bytes, over the limit of {max_bytes} "
            "(events.max_payload_bytes); send smaller messages or raise the limit"
        )
    return raw


def _load_object(raw: bytes | None, max_bytes: int) -> dict[str, Any]:
    if raw is None:
        raise InvalidRecord("message has no value (a tombstone); send a JSON object")
    _within(raw, max_bytes)
    try:
        decoded = orjson.loads(raw)  # several times faster; what it refuses gets the stdlib's verdict
    except orjson.JSONDecodeError:
        decoded = _load_with_stdlib(raw)
    if not isinstance(decoded, dict):
        raise InvalidRecord(f"value must be a JSON object, got a JSON {type(decoded).__name__}")
    return decoded


def _require_id(obj: dict[str, Any], name: str, max_len: int, required: bool = True) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidRecord(f"field {name!r} is missing; every message needs a non-empty {name}")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidRecord(f"field {name!r} must be a string, got {type(value).__name__} {value!r:.40}")
    text = str(value).strip()
    if not text:
        raise InvalidRecord(f"field {name!r} is empty; it must be a non-empty string")
    if len(text) > max_len:
        raise InvalidRecord(
            f"field {name!r} is {len(text)} characters, over the limit of {max_len} "
            "(events.max_id_length)"
        )
    return text


def _finite_number(obj: dict[str, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRecord(f"field {name!r} must be a number, got {type(value).__name__} {value!r:.40}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf  # an integer too large for a float
    if not math.isfinite(number):
        raise InvalidRecord(f"field {name!r} must be a finite number, got {value!r:.40}")
    return number


def parse_timestamp_ms(value: Any) -> int | None:
    """Convert an event time (epoch ms number or ISO-8601 string) to epoch milliseconds.

    >>> parse_timestamp_ms(1700000000000)
    1700000000000
    >>> parse_timestamp_ms("2023-11-14T22:13:20Z")
    1700000000000
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRecord(
                f"field 'ts' {value!r:.60} is neither epoch milliseconds nor ISO-8601 "
                "(e.g. 2024-05-01T12:00:00Z)"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        value = parsed.timestamp() * 1000
    number = _finite_number({"ts": value}, "ts")
    if number is None or not 0 <= number < 10**14:
        raise InvalidRecord(f"field 'ts' must be epoch milliseconds between 0 and 1e14, got {value!r}")
    return int(number)


def decode_event(raw: bytes | None, rules: EventSettings, now_ms: int | None = None) -> Event:
    """Decode and validate one ``streamrec.events`` value.

    ``now_ms`` (the worker's clock) enables the check that ``ts`` is not more than
    ``rules.max_future_skew_s`` ahead: one event from the far future would
    otherwise age every other item's popularity to nothing.

    Raises
    ------
    InvalidRecord
        With a reason a person can act on, for any value that is not a valid event.
    """
    obj = _load_object(raw, rules.max_payload_bytes)
    user_id = _require_id(obj, "user_id", rules.max_id_length)
    item_id = _require_id(obj, "item_id", rules.max_id_length)
    event_type = obj.get("type")
    if not isinstance(event_type, str) or event_type not in rules.types:
        allowed = ", ".join(sorted(rules.types))
        raise InvalidRecord(
            f"unknown event type {event_type!r:.40}; allowed: {allowed} (configured in events.types)"
        )
    value = _finite_number(obj, "value")
    if value is None and event_type in rules.value_weighted_types:
        raise InvalidRecord(f"event type {event_type!r} needs a numeric 'value' (e.g. the rating)")
    ts_ms = parse_timestamp_ms(obj.get("ts"))
    if ts_ms is not None and now_ms is not None and ts_ms > now_ms + rules.max_future_skew_s * 1000:
        raise InvalidRecord(
            f"field 'ts' is {(ts_ms - now_ms) / 1000:.0f}s in the future (limit "
            f"events.max_future_skew_s={rules.max_future_skew_s:g}); check the producer's clock "
            "and that ts is in epoch milliseconds")
    return Event(
        user_id=user_id or "",
        item_id=item_id or "",
        type=event_type,
        ts_ms=ts_ms,
        event_id=_require_id(obj, "event_id", rules.max_id_length, required=False),
        value=value,
        context=obj.get("context"),
        extra={k: v for k, v in obj.items() if k not in _EVENT_FIELDS},
    )


class InvalidRequest(InvalidRecord):
    """A request that names who to answer (request_id, user_id) but is otherwise invalid."""

    def __init__(self, reason: str, request_id: str, user_id: str) -> None:
        super().__init__(reason)
        self.request_id = request_id
        self.user_id = user_id


def decode_request(raw: bytes | None, rules: EventSettings, max_k: int) -> Request:
    """Decode and validate one ``streamrec.requests`` value.

    Raises
    ------
    InvalidRequest
        When the request can be answered (it has ``request_id`` and ``user_id``)
        but something else is wrong: the caller answers with the reason.
    InvalidRecord
        For a value that cannot even be answered.
    """
    obj = _load_object(raw, rules.max_payload_bytes)
    request_id = _require_id(obj, "request_id", rules.max_id_length) or ""
    user_id = _require_id(obj, "user_id", rules.max_id_length) or ""
    try:
        return _request_fields(obj, request_id, user_id, max_k)
    except InvalidRequest:
        raise
    except InvalidRecord as exc:
        raise InvalidRequest(exc.reason, request_id, user_id) from None


def _request_fields(obj: dict[str, Any], request_id: str, user_id: str, max_k: int) -> Request:
    k = obj.get("k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max_k):
        raise InvalidRecord(f"field 'k' must be an integer from 1 to {max_k} (model.max_k), got {k!r:.40}")
    exclude = obj.get("exclude") or []
    if not isinstance(exclude, list) or not all(isinstance(i, (str, int)) for i in exclude):
        raise InvalidRecord("field 'exclude' must be a list of item ids")
    filters = obj.get("filters") or {}
    if not isinstance(filters, dict):
        raise InvalidRecord(f"field 'filters' must be a JSON object, got {type(filters).__name__}")
    unknown = sorted(set(filters) - SUPPORTED_FILTERS)
    if unknown:
        raise InvalidRecord(f"unknown filter(s) {', '.join(map(repr, unknown))}; supported: "
                            f"{', '.join(sorted(SUPPORTED_FILTERS))}")
    categories = filters.get("categories")
    if categories is not None and (not isinstance(categories, list) or not categories
                                   or not all(isinstance(c, str) for c in categories)):
        raise InvalidRecord("filter 'categories' must be a non-empty list of category names (strings); "
                            "items in any of them are allowed")
    return Request(request_id, user_id, k, tuple(str(i) for i in exclude), filters)


SUPPORTED_FILTERS = frozenset({"categories"})
"""Request filters the query path applies: ``categories`` (any of, from ``streamrec.items``)."""


@dataclass(frozen=True, slots=True)
class ItemInfo:
    """An item as applications describe it on ``streamrec.items``."""

    item_id: ItemId
    available: bool = True
    categories: frozenset[str] = frozenset()
    title: str | None = None
    text: str | None = None


def decode_item_info(raw: bytes | None, rules: EventSettings) -> ItemInfo:
    """Decode and validate one ``streamrec.items`` value (unknown fields are ignored)."""
    obj = _load_object(raw, rules.max_payload_bytes)
    item_id = _require_id(obj, "item_id", rules.max_id_length) or ""
    available = obj.get("available", True)
    if not isinstance(available, bool):
        raise InvalidRecord(f"item {item_id!r}: field 'available' must be true or false, got {available!r:.40}")
    categories = obj.get("categories") or []
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise InvalidRecord(f"item {item_id!r}: field 'categories' must be a list of strings")
    texts = {name: obj.get(name) for name in ("title", "text")}
    for name, value in texts.items():
        if value is not None and not isinstance(value, str):
            raise InvalidRecord(f"item {item_id!r}: field {name!r} must be a string")
    return ItemInfo(item_id, available, frozenset(categories), texts["title"], texts["text"])
