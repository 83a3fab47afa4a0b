"""The co-visit followers of every catalogue item, kept in one pool of arrays.

An item's followers are the items whose published co-visit lists hold it (chosen after
it); a replica needs them to count co-visits both ways. Each item's followers fill one
segment of a shared pool (an int32 row and a float64 weight per follower), heaviest
first, so a reader can take the heaviest few of a popular item's thousands; a full
segment moves to the pool's end with twice the room, and a full pool is repacked (its
empty and abandoned segments dropped) into one that is at least twice the live part.

There is no object per item: with a Python object, a dict and two arrays per item, the
followers took about 700 bytes per item, and a soak's RSS grew by 0.5 MB a minute while
the catalogue's tail items got their first followers (``docs/bench/micro/covisit_memory.py``).

>>> pool = FollowerPool(rows=4)
>>> pool.set(0, np.array([2, 3]), np.array([1.0, 0.5]))
>>> pool.set(1, np.array([2]), np.array([2.0]))
>>> pool.gather(np.array([2]))
(array([1, 0]), array([2., 1.]))
>>> pool.gather(np.array([2]), limit=1)
(array([1]), array([2.]))
>>> pool.remove(0, np.array([2]))
>>> pool.gather(np.array([2, 3]))
(array([1, 0]), array([2. , 0.5]))
"""

from __future__ import annotations

import numpy as np

from streamrec.models.kernels import (
    Followers,
    gather_followers_kernel,
    remove_followers_kernel,
    repack_followers_kernel,
    set_followers_kernel,
)

_FIRST_POOL = 4096  # followers; grows by doubling
_ALL = 2**62  # no limit on the followers read per item


class FollowerPool:
    """Followers (a row and a weight each) of every catalogue row, for ``rows`` rows (grows with :meth:`grow`)."""

    def __init__(self, rows: int) -> None:
        self._start = np.zeros(rows, dtype=np.int64)  # by item row: its segment in the pool
        self._size = np.zeros(rows, dtype=np.int64)
        self._room = np.zeros(rows, dtype=np.int64)
        self._rows = np.zeros(_FIRST_POOL, dtype=np.int32)
        self._weights = np.zeros(_FIRST_POOL, dtype=np.float64)
        self._end = 0  # first pool slot no segment holds

    def grow(self, rows: int) -> None:
        """Make room for items in rows up to ``rows`` (they start without followers)."""
        if rows > self._start.size:
            extra = rows - self._start.size
            self._start, self._size, self._room = (np.concatenate((a, np.zeros(extra, dtype=np.int64)))
                                                   for a in (self._start, self._size, self._room))

    def set(self, row: int, items: np.ndarray, weights: np.ndarray) -> None:
        """Record ``row`` as a follower of each of ``items`` (rows) with the weight in ``weights`` (same order)."""
        done = 0
        while True:
            done, self._end = set_followers_kernel(self._start, self._size, self._room, self._rows, self._weights,
                                                   self._end, row, items, weights, done)
            if done == items.size:
                return
            self._repack(max(4, 2 * int(self._size[items[done]])))

    def remove(self, row: int, items: np.ndarray) -> None:
        """Drop ``row`` from the followers of each of ``items`` (rows)."""
        remove_followers_kernel(self._start, self._size, self._rows, self._weights, row, items)

    def gather(self, items: np.ndarray, limit: int = _ALL) -> tuple[np.ndarray, np.ndarray]:
        """The ``limit`` heaviest followers of each of ``items`` (rows) in turn, as ``(rows, weights)``
        (new arrays; an item's heaviest first, ties by row)."""
        return gather_followers_kernel(*self.of(items, limit))

    def of(self, items: np.ndarray, limit: int = _ALL) -> Followers:
        """The ``limit`` heaviest followers of each of ``items`` (rows) where they lie, for compiled
        code to read in place (the views stay valid until the pool next changes)."""
        return Followers(self._start, self._size, self._rows, self._weights, items, limit)

    def count(self, row: int) -> int:
        """How many items follow the item in ``row``."""
        return int(self._size[row])

    @property
    def capacity(self) -> int:
        """Followers the pool has room for (it grows by doubling)."""
        return self._rows.size

    def _repack(self, needed: int) -> None:
        live = int(self._room[self._size > 0].sum())
        size = self._rows.size
        while size < 2 * (live + needed):
            size *= 2
        rows, weights = np.zeros(size, dtype=np.int32), np.zeros(size, dtype=np.float64)
        self._end = repack_followers_kernel(self._start, self._size, self._room, self._rows, self._weights,
                                            rows, weights)
        self._rows, self._weights = rows, weights
