"""Time-decayed item popularity ("trending"): pure numpy, no Kafka.

An item's score is the sum of its event weights, each halved every
``half_life_s`` seconds of *event time* since it happened. Scores are kept as
``(score, ts_ms)`` pairs decayed lazily, so an update touches one item and a
ranking decays every item to one reference time in a single vectorised pass.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable

import numpy as np

ItemId = str


def decay(score: float, from_ms: int, to_ms: int, half_life_s: float) -> float:
    """Decay ``score`` measured at ``from_ms`` to time ``to_ms`` (never grows it).

    >>> decay(8.0, 0, 7_200_000, 3600.0)
    2.0
    """
    elapsed_s = max(0, to_ms - from_ms) / 1000.0
    return score * math.exp2(-elapsed_s / half_life_s)


def add_event(score: float, score_ts_ms: int, weight: float, event_ts_ms: int,
              half_life_s: float) -> tuple[float, int]:
    """Return the ``(score, ts_ms)`` of an item after an event of ``weight`` at ``event_ts_ms``.

    Late events (older than the item's last update) are decayed to the item's
    time instead, so the order of arrival does not matter.

    >>> add_event(4.0, 0, 1.0, 3_600_000, 3600.0)
    (3.0, 3600000)
    """
    if not (math.isfinite(weight) and weight > 0):
        return score, score_ts_ms
    if event_ts_ms >= score_ts_ms:
        return decay(score, score_ts_ms, event_ts_ms, half_life_s) + weight, event_ts_ms
    return score + decay(weight, event_ts_ms, score_ts_ms, half_life_s), score_ts_ms


class PopularityRanking:
    """All items' decayed scores in contiguous arrays, ranked in one numpy pass.

    Parameters
    ----------
    half_life_s
        Seconds of event time after which an event counts half.
    max_items
        Memory bound: when a new item would exceed it, the least popular tenth
        of the items is forgotten (they come back with their next update).
    """

    def __init__(self, half_life_s: float, max_items: int = 1_000_000) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self.half_life_s = half_life_s
        self.max_items = max_items
        self._index: dict[ItemId, int] = {}
        self._ids: list[ItemId] = []
        self._scores = np.zeros(1024, dtype=np.float64)
        self._ts_ms = np.zeros(1024, dtype=np.int64)
        self.latest_ts_ms = 0
        self._decayed: tuple[int, np.ndarray, float] | None = None  # (now_ms, scores, max) until the next change
        self._top: tuple[int, np.ndarray] | None = None  # (n, the n best rows) until the next change
        # Every score decayed (or grown) to one reference time, kept up to date item by item, so
        # ranking at the latest time is one scalar multiply instead of an exp2 per item per change.
        self._ref_ms: int | None = None  # None: rebuild before use
        self._ref = np.zeros(0, dtype=np.float64)
        self._ref_max: float | None = None  # None: recompute before use

    def __len__(self) -> int:
        return len(self._ids)

    def set(self, item_id: ItemId, score: float, ts_ms: int) -> None:
        """Store an item's score as of ``ts_ms`` (as published by the item's owner)."""
        row = self._index.get(item_id)
        if row is None:
            if len(self._ids) >= self.max_items:
                self._forget_least_popular()
            row = self._append(item_id)
        self._decayed = self._top = None
        self._scores[row] = score if math.isfinite(score) and score > 0 else 0.0
        self._ts_ms[row] = ts_ms
        self.latest_ts_ms = max(self.latest_ts_ms, ts_ms)
        if self._ref_ms is not None:
            self._set_ref(row)

    def score(self, item_id: ItemId, now_ms: int | None = None) -> float:
        """The item's score decayed to ``now_ms`` (default: latest event time seen)."""
        row = self._index.get(item_id)
        if row is None:
            return 0.0
        now = self.latest_ts_ms if now_ms is None else now_ms
        return decay(float(self._scores[row]), int(self._ts_ms[row]), now, self.half_life_s)

    def top_k(self, k: int, exclude: Iterable[ItemId] = (), now_ms: int | None = None
              ) -> list[tuple[ItemId, float]]:
        """The ``k`` highest-scoring items not in ``exclude``, best first.

        Returns
        -------
        list of (item_id, score)
            At most ``k`` pairs; fewer when the catalogue is smaller.
        """
        n = len(self._ids)
        if n == 0 or k <= 0:
            return []
        decayed = self.decayed(now_ms).copy()  # (n,)
        excluded = [r for r in (self._index.get(i) for i in exclude) if r is not None]
        if excluded:
            decayed[excluded] = -np.inf
        take = min(k, n)
        threshold = np.partition(decayed, n - take)[n - take]  # k-th largest score
        rows = np.flatnonzero(decayed >= threshold)  # keeps every item tied at the threshold
        rows = rows[np.lexsort((rows, -decayed[rows]))][:take]  # by score, ties by catalogue age
        return [(self._ids[r], float(decayed[r])) for r in rows if np.isfinite(decayed[r])]

    def decayed(self, now_ms: int | None = None) -> np.ndarray:
        """Every item's score decayed to ``now_ms`` (default: latest event time), shape ``(n,)`` by row.

        Read-only: the array is cached until the next :meth:`set` (queries outnumber updates).
        """
        return self._decay_all(now_ms)[1]

    def decayed_max(self) -> float:
        """The largest of :meth:`decayed` at the latest event time (0.0 when empty); cached too."""
        return self._decay_all(None)[2]

    def top_rows(self, n: int) -> np.ndarray:
        """Rows of (up to) the ``n`` most popular items at the latest event time, in no order; cached."""
        if self._top is None or self._top[0] != n:
            decayed = self.decayed()
            rows = np.argpartition(-decayed, n)[:n] if n < decayed.size else np.arange(decayed.size)
            self._top = (n, rows)
        return self._top[1]

    def _decay_all(self, now_ms: int | None) -> tuple[int, np.ndarray, float]:
        now = self.latest_ts_ms if now_ms is None else now_ms
        if self._decayed is None or self._decayed[0] != now:
            n = len(self._ids)
            if now == self.latest_ts_ms:  # the usual case: every item is at or before now
                ref, ref_max = self._reference()
                factor = math.exp2(-(now - self._ref_ms) / 1000.0 / self.half_life_s)
                decayed, top = ref[:n] * factor, ref_max * factor
            else:
                elapsed_s = np.maximum(now - self._ts_ms[:n], 0) / 1000.0
                decayed = self._scores[:n] * np.exp2(-elapsed_s / self.half_life_s)
                top = float(decayed.max(initial=0.0))
            decayed.flags.writeable = False
            self._decayed = (now, decayed, top)
        return self._decayed

    _MAX_REF_HALF_LIVES = 256.0
    """Scores are rebased before they grow past 2**256 against the reference time (float64 tops at 2**1023)."""

    def _reference(self) -> tuple[np.ndarray, float]:
        """The scores at the reference time and their maximum, rebuilt when missing or too far behind."""
        n = len(self._ids)
        if self._ref_ms is None or (self.latest_ts_ms - self._ref_ms) / 1000.0 / self.half_life_s > self._MAX_REF_HALF_LIVES:
            self._ref_ms = self.latest_ts_ms
            self._ref = np.zeros(len(self._scores), dtype=np.float64)
            elapsed_s = (self._ref_ms - self._ts_ms[:n]) / 1000.0
            self._ref[:n] = self._scores[:n] * np.exp2(-elapsed_s / self.half_life_s)
            self._ref_max = None
        if self._ref_max is None:
            self._ref_max = float(self._ref[:n].max(initial=0.0))
        return self._ref, self._ref_max

    def _set_ref(self, row: int) -> None:
        if row >= self._ref.size:
            self._ref = np.resize(self._ref, len(self._scores))
        old = float(self._ref[row])
        grown_s = (int(self._ts_ms[row]) - self._ref_ms) / 1000.0
        if grown_s / self.half_life_s > self._MAX_REF_HALF_LIVES:  # far ahead: rebuild at the next ranking
            self._ref_ms = None
            return
        new = float(self._scores[row]) * math.exp2(grown_s / self.half_life_s) if self._scores[row] > 0 else 0.0
        self._ref[row] = new
        if self._ref_max is not None:
            if new >= self._ref_max:
                self._ref_max = new
            elif old >= self._ref_max:  # the top item fell: find the new top when next needed
                self._ref_max = None

    def _forget_least_popular(self) -> None:
        keep_n = max(1, int(self.max_items * 0.9)) if self.max_items > 1 else 0
        keep = np.sort(np.argsort(-self.decayed(), kind="stable")[:keep_n])  # catalogue order kept
        self._keep_rows(keep)

    def _keep_rows(self, keep: np.ndarray) -> None:
        """Compact the per-row arrays to the rows ``keep`` (ascending); subclasses extend it."""
        self._decayed = self._top = None
        self._ref_ms = None
        self._ids = [self._ids[r] for r in keep]
        self._scores[:keep.size] = self._scores[keep]
        self._ts_ms[:keep.size] = self._ts_ms[keep]
        self._index = {item_id: row for row, item_id in enumerate(self._ids)}

    def _append(self, item_id: ItemId) -> int:
        item_id = sys.intern(item_id)  # the owner's co-visit lists share it (see OwnedItem)
        row = len(self._ids)
        if row == len(self._scores):
            self._scores = np.resize(self._scores, 2 * row)
            self._ts_ms = np.resize(self._ts_ms, 2 * row)
        self._index[item_id] = row
        self._ids.append(item_id)
        return row
