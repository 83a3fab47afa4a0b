"""A user's bounded memory: recently seen items and recent event ids (for dedup).

Pure Python so it serialises to a Faust table value as a plain dict, and so the
offline evaluator runs the same code. Both lists are capped: memory per user
is bounded however many events a user sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ItemId = str


@dataclass(slots=True)
class UserHistory:
    """What streamrec remembers about one user.

    ``seen`` holds the most recent distinct items, oldest first, at most
    ``history_size`` of them; ``event_ids`` the last ``dedup_window`` event ids.
    """

    seen: list[ItemId] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    n_events: int = 0

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

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form stored in the user table."""
        return {"seen": self.seen, "event_ids": self.event_ids, "n_events": self.n_events}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> UserHistory:
        """Inverse of :meth:`to_dict`; ``None`` (an unknown user) gives an empty history."""
        if not data:
            return cls()
        return cls(list(data.get("seen", [])), list(data.get("event_ids", [])),
                   int(data.get("n_events", 0)))
