"""What streamrec remembers about one user: recent items, recent event ids, counters, vector.

Pure Python/numpy so it serialises to a Faust table value as a plain dict, and
so the offline evaluator runs the same code. Every list is capped: memory per
user is bounded however many events a user sends.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ItemId = str


@dataclass(slots=True)
class UserState:
    """One user's state, owned by the worker that owns the user's partition.

    ``seen`` holds the most recent distinct items, oldest first, at most
    ``history_size`` of them; ``event_ids`` the last ``dedup_window`` event ids;
    ``vector`` the user's embedding (``None`` until the first learnt event); ``shown`` the
    list pushed after the user's last event, kept only while an A/B test scores the arms.
    """

    seen: list[ItemId] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    n_events: int = 0
    vector: np.ndarray | None = None
    shown: list[ItemId] = field(default_factory=list)

    def is_duplicate(self, event_id: str | None) -> bool:
        """True when ``event_id`` was already applied (within the dedup window)."""
        return event_id is not None and event_id in self.event_ids

    def record(self, item_id: ItemId, event_id: str | None, history_size: int,
               dedup_window: int) -> None:
        """Remember an applied event, evicting the oldest entries beyond the caps."""
        if item_id in self.seen:
            self.seen.remove(item_id)
        self.seen.append(item_id)
        del self.seen[:-history_size]
        if event_id is not None and dedup_window > 0:
            self.event_ids.append(event_id)
            del self.event_ids[:-dedup_window]
        self.n_events += 1

    def recent(self, n: int) -> list[ItemId]:
        """The user's ``n`` most recent distinct items, oldest first."""
        return self.seen[-n:] if n > 0 else []

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form stored in the user table.

        The vector is its float32 values (little-endian) in base64. As a list of numbers a new
        user's state took 726 bytes against 270, and encoding plus decoding about 1.5 µs more;
        a state is read, written to RocksDB and sent to the table's changelog once per event.
        """
        data: dict[str, Any] = {"seen": self.seen, "event_ids": self.event_ids, "n_events": self.n_events}
        if self.vector is not None:
            data["vector"] = binascii.b2a_base64(np.asarray(self.vector, dtype=_STORED_FLOAT).tobytes(), newline=False).decode()
        if self.shown:
            data["shown"] = self.shown
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> UserState:
        """Inverse of :meth:`to_dict`; ``None`` (an unknown user) gives an empty state.

        The vector may also be a list of numbers (states stored before base64). One that is
        neither a flat list of numbers nor float32 values in base64 is dropped (the user
        starts a new one) rather than poisoning the model.
        """
        if not data:
            return cls()
        return cls(list(data.get("seen", [])), list(data.get("event_ids", [])),
                   int(data.get("n_events", 0)), _stored_vector(data.get("vector")),
                   [str(item) for item in data.get("shown", [])])


_STORED_FLOAT = np.dtype("<f4")


def _stored_vector(value: Any) -> np.ndarray | None:
    """A stored user vector (float32 base64, or a list of numbers) as float32; ``None`` if malformed."""
    if value is None:
        return None
    try:
        if isinstance(value, str):  # a writable copy: 1.0 µs, against 0.9 from a list (the JSON parse is the saving)
            vector = np.frombuffer(bytearray(binascii.a2b_base64(value)), dtype=_STORED_FLOAT).astype(np.float32, copy=False)
        else:
            vector = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):  # not base64 (binascii.Error), a size not a multiple of 4, not numbers
        return None
    return vector if vector.ndim == 1 else None
