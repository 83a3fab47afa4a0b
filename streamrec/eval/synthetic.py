"""Seeded synthetic event streams: skewed item popularity, many users, a mix of types.

Used by ``streamrec produce --synthetic``, the demo and the tests. Pure Python
and numpy; the same seed gives the same stream.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

#: Default mix of event types: most events are views, few are purchases.
DEFAULT_TYPE_MIX = {"view": 0.70, "click": 0.20, "add_to_cart": 0.07, "purchase": 0.03}


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    """Shape of a synthetic stream."""

    n_users: int = 1000
    n_items: int = 500
    zipf_exponent: float = 1.1
    """Item popularity follows ``rank ** -zipf_exponent``."""
    seed: int = 0


class SyntheticEvents:
    """An endless, seeded stream of valid event dicts.

    >>> stream = SyntheticEvents(SyntheticConfig(n_users=5, n_items=3, seed=1))
    >>> sorted(next(iter(stream)))
    ['event_id', 'item_id', 'type', 'user_id']
    """

    def __init__(self, config: SyntheticConfig, run_id: str = "syn") -> None:
        self.config = config
        self.run_id = run_id
        self._rng = np.random.default_rng(config.seed)
        ranks = np.arange(1, config.n_items + 1, dtype=np.float64)
        weights = ranks ** -config.zipf_exponent
        self._item_p = weights / weights.sum()
        self._types = list(DEFAULT_TYPE_MIX)
        self._type_p = np.array(list(DEFAULT_TYPE_MIX.values()))
        self._type_p /= self._type_p.sum()

    def __iter__(self) -> Iterator[dict[str, object]]:
        sequence = 0
        while True:
            users = self._rng.integers(0, self.config.n_users, 1024)
            items = self._rng.choice(self.config.n_items, 1024, p=self._item_p)
            types = self._rng.choice(len(self._types), 1024, p=self._type_p)
            for user, item, kind in zip(users, items, types, strict=True):
                yield {"user_id": f"u{user}", "item_id": f"i{item}",
                       "type": self._types[kind], "event_id": f"{self.run_id}-{sequence}"}
                sequence += 1


def invalid_events(max_id_length: int = 256, max_payload_bytes: int = 16_384
                   ) -> dict[str, tuple[bytes, str]]:
    """One malformed ``streamrec.events`` value of each kind the worker must dead-letter.

    Returns
    -------
    dict
        kind -> (raw value, a phrase the dead-letter reason must contain).
    """
    def event(**fields: object) -> bytes:
        return json.dumps({"user_id": "u-bad", "item_id": "i-bad", "type": "view", **fields}).encode()

    return {
        "not_json": (b"{this is not json", "not valid UTF-8 JSON"),
        "not_utf8": (b"\xff\xfe\x00garbage", "not valid UTF-8 JSON"),
        "not_an_object": (b"[1, 2, 3]", "must be a JSON object"),
        "missing_user_id": (json.dumps({"item_id": "i1", "type": "view"}).encode(),
                            "'user_id' is missing"),
        "empty_item_id": (event(item_id="  "), "'item_id' is empty"),
        "unknown_type": (event(type="teleport"), "unknown event type"),
        "non_finite_value": (event(type="rating", value=math.inf), "finite number"),
        "rating_without_value": (event(type="rating"), "needs a numeric 'value'"),
        "over_long_id": (event(user_id="u" * (max_id_length + 1)), "over the limit"),
        "oversized_payload": (event(context="x" * max_payload_bytes), "bytes, over the limit"),
        "bad_timestamp": (event(ts="yesterday-ish"), "neither epoch milliseconds nor ISO-8601"),
        "null_value": (b"null", "must be a JSON object"),
    }
