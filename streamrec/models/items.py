"""Item-side state: the updates events send to an item, its owner's record, every worker's replica.

An event changes several items: the chosen item (popularity, vector, co-visits
with the user's recent items), those recent items (co-visits back) and the
sampled negatives (vectors). The user's worker expresses each change as an
:class:`ItemDelta` keyed by item; deltas add up, so a worker merges all deltas
of an item over a publish interval into one. The item's owner (the worker that
owns its partition) applies them to its :class:`OwnedItem` and publishes the
result; every worker keeps the published items in an :class:`ItemCatalog`
(the replica the query path scores against). The offline evaluator runs the
same three steps in one process.

>>> config = ItemConfig(OnlineMFConfig(dim=4))
>>> owned = OwnedItem()
>>> owned.apply("tea", ItemDelta(weight=2.0, ts_ms=1_000, neighbours={"cake": 1.0}), config)
>>> catalog = ItemCatalog(half_life_s=3600.0, dim=4)
>>> catalog.upsert("tea", owned.published(config))
>>> catalog.neighbours("tea")
(['cake'], [1.0])
"""

from __future__ import annotations

import math
import sys
from collections.abc import Collection, Iterable, Sequence
from operator import itemgetter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from streamrec.models.followers import FollowerPool
from streamrec.models.kernels import Followers, gather_followers_kernel
from streamrec.models.online_mf import OnlineMFConfig, initial_item_vector
from streamrec.models.popularity import PopularityRanking, add_event

ItemId = str


@dataclass(frozen=True, slots=True)
class ItemConfig:
    """What the item side needs to know (a slice of the model settings).

    Attributes
    ----------
    mf
        The embedding learner's configuration (dimension, norm clip, initial vectors).
    half_life_s
        Popularity half-life in seconds of event time.
    max_neighbours
        Co-visit neighbours kept per item by its owner (the strongest; pruned
        when twice as many accumulate) and published to every worker.
    """

    mf: OnlineMFConfig = field(default_factory=OnlineMFConfig)
    half_life_s: float = 86_400.0
    max_neighbours: int = 50

    @property
    def dim(self) -> int:
        """Embedding size."""
        return self.mf.dim

    @property
    def max_norm(self) -> float:
        """Item vectors are clipped to this norm after every applied delta."""
        return self.mf.max_norm

    def initial_vector(self, item_id: ItemId) -> np.ndarray:
        """The vector a new item starts from (the same on every worker)."""
        return initial_item_vector(item_id, self.mf)


@dataclass(slots=True)
class ItemDelta:
    """Changes to one item from one or more events; deltas of one item merge by adding.

    Attributes
    ----------
    weight, ts_ms
        Popularity to add: the sum of event weights, decayed to ``ts_ms``.
    vector
        To add to the item's vector, shape ``(d,)`` float32, or ``None``.
    neighbours
        Co-visit weight to add per other item.
    """

    weight: float = 0.0
    ts_ms: int = 0
    vector: np.ndarray | None = None
    neighbours: dict[ItemId, float] = field(default_factory=dict)

    def merge(self, other: ItemDelta, half_life_s: float) -> None:
        """Add ``other`` into this delta (in place)."""
        if other.weight > 0:  # a zero weight carries no popularity (and its ts means nothing)
            self.weight, self.ts_ms = add_event(self.weight, self.ts_ms if self.weight > 0 else other.ts_ms,
                                                other.weight, other.ts_ms, half_life_s)
        if other.vector is not None:
            self.vector = other.vector.copy() if self.vector is None else self.vector + other.vector
        for item_id, weight in other.neighbours.items():
            self.neighbours[item_id] = self.neighbours.get(item_id, 0.0) + weight


class PublishedItem(NamedTuple):
    """An item's state as its owner publishes it to every worker (a tuple: made once per publication)."""

    popularity: float
    ts_ms: int
    vector: np.ndarray
    neighbour_ids: list[ItemId]
    neighbour_weights: np.ndarray
    """Shape ``(len(neighbour_ids),)`` float64."""


class OwnedItem:
    """The authoritative state of one item, kept by the owner of its partition.

    Co-visit neighbours are kept in insertion order (ids in a list, weights in a
    parallel array, so a publication copies them in one go), so a replica
    re-resolves only the ones added since the last publication; at most
    ``2 * max_neighbours`` of them (then the strongest ``max_neighbours`` are kept).
    """

    __slots__ = ("_slots", "_weights", "neighbour_ids", "popularity", "ts_ms", "vector")

    def __init__(self, popularity: float = 0.0, ts_ms: int = 0, vector: np.ndarray | None = None,
                 neighbours: dict[ItemId, float] | None = None) -> None:
        self.popularity = popularity
        self.ts_ms = ts_ms
        self.vector = vector
        # Interned, as the catalogue's ids: one string per item, however many lists hold it.
        self.neighbour_ids: list[ItemId] = [sys.intern(item_id) for item_id in neighbours or {}]
        self._slots = {item_id: slot for slot, item_id in enumerate(self.neighbour_ids)}
        self._weights = np.zeros(max(8, len(self.neighbour_ids)), dtype=np.float64)
        self._weights[:len(self.neighbour_ids)] = list((neighbours or {}).values())

    @property
    def neighbours(self) -> dict[ItemId, float]:
        """Co-visit weight per neighbour, oldest neighbour first (a copy)."""
        return dict(zip(self.neighbour_ids, self._weights[:len(self.neighbour_ids)].tolist(), strict=True))

    def apply(self, item_id: ItemId, delta: ItemDelta, config: ItemConfig) -> None:
        """Add a delta: popularity decays, the vector moves (norm-clipped), co-visits count up.

        Non-finite parts of a delta are ignored, so no update can poison the item.
        """
        if delta.weight > 0:
            self.popularity, self.ts_ms = add_event(self.popularity, self.ts_ms or delta.ts_ms, delta.weight,
                                                    delta.ts_ms, config.half_life_s)
        if self.vector is None:
            self.vector = config.initial_vector(item_id)
        if delta.vector is not None:
            vector = np.add(self.vector, delta.vector, dtype=np.float64)  # float64: no overflow
            squared = float(np.dot(vector, vector))
            if math.isfinite(squared):  # a non-finite delta is ignored
                if squared > config.max_norm * config.max_norm:
                    vector *= config.max_norm / math.sqrt(squared)
                self.vector = vector.astype(np.float32)
        ids, slots, weights = self.neighbour_ids, self._slots, self._weights
        for other, weight in delta.neighbours.items():
            if other != item_id and weight > 0 and math.isfinite(weight):
                slot = slots.get(other)
                if slot is None:
                    other = sys.intern(other)  # decoded anew from every update
                    slot = slots[other] = len(ids)
                    ids.append(other)
                    if slot == weights.size:
                        weights = self._weights = np.resize(weights, 2 * slot)
                    weights[slot] = 0.0
                weights[slot] += weight
        if len(ids) > 2 * config.max_neighbours:  # bounded: keep the strongest
            self._keep_strongest(config.max_neighbours)

    def published(self, config: ItemConfig) -> PublishedItem:
        """What every worker's replica gets: popularity, vector and neighbours."""
        vector = self.vector if self.vector is not None else np.zeros(config.dim, dtype=np.float32)
        n = len(self.neighbour_ids)
        return PublishedItem(self.popularity, self.ts_ms, vector, self.neighbour_ids[:], self._weights[:n].copy())

    def _keep_strongest(self, n: int) -> None:
        count = len(self.neighbour_ids)
        keep = np.sort(np.argsort(-self._weights[:count], kind="stable")[:n])  # insertion order kept
        self.neighbour_ids = [self.neighbour_ids[slot] for slot in keep]
        self._weights[:keep.size] = self._weights[keep]
        self._slots = {item_id: slot for slot, item_id in enumerate(self.neighbour_ids)}

    @classmethod
    def of(cls, published: PublishedItem) -> OwnedItem:
        """The owned item a publication describes (a publication holds all of it)."""
        return cls(published.popularity, published.ts_ms, published.vector,
                   dict(zip(published.neighbour_ids, published.neighbour_weights.tolist(), strict=True)))


class ItemCatalog(PopularityRanking):
    """Every worker's replica of the published items: popularity, vectors and co-visit neighbours.

    Rows are shared with the popularity ranking, so trending, the vectors
    (one contiguous ``(n, d)`` float32 array, ready for FAISS) and the
    neighbour lists all index the same catalogue. Bounded by ``max_items``
    (the least popular tenth is forgotten when full).

    Co-visits count both ways (see :meth:`covisits`), each item's heaviest
    ``max_followers`` followers the other way: an owner keeps up to ``2 * max_neighbours``
    neighbours, but a popular item is in thousands of lists, and reading them all took
    most of a list's time once the lists were full (``docs/bench/micro/recommend_lists.py``).
    """

    def __init__(self, half_life_s: float, dim: int, max_items: int = 1_000_000, max_followers: int = 100) -> None:
        super().__init__(half_life_s, max_items)
        self.dim = dim
        self.max_followers = max_followers
        self._vectors = np.zeros((len(self._scores), dim), dtype=np.float32)
        self._exposures = np.zeros(len(self._scores), dtype=np.int64)  # times shown, by row
        self._neighbours: dict[ItemId, _Neighbours] = {}  # item -> items chosen just before it
        self._followers = FollowerPool(len(self._scores))  # by row: the items chosen after it
        self._generation = 0  # counts prunings (rows change)
        self._pairs = 0  # entries over all co-visit lists
        # This worker's own learning steps on items whose owners have not published them since.
        self._steps: dict[ItemId, np.ndarray] = {}

    def upsert(self, item_id: ItemId, item: PublishedItem) -> None:
        """Store an item as its owner published it (neighbours not yet known join the catalogue)."""
        ids = item.neighbour_ids
        weights = np.asarray(item.neighbour_weights, dtype=np.float64)
        if weights.shape != (len(ids),):
            raise ValueError(f"item {item_id!r}: {len(ids)} neighbour ids but {weights.size} weights")
        known = self._neighbours.get(item_id)
        # Owners only append neighbours between prunings (the usual change): then only the
        # appended ones need rows, and only they and the re-weighted ones need indexing.
        old = 0 if known is None else len(known.ids)
        appended = known is not None and len(ids) >= old and ids[:old] == known.ids
        generation = self._generation
        if not appended:
            rows = self._rows_of(ids)
        elif len(ids) > old:
            rows = np.concatenate((known.rows, self._rows_of(ids[old:])))
        else:
            rows = known.rows
        self.set(item_id, item.popularity, item.ts_ms)
        if generation != self._generation:  # room was made by forgetting items: rows moved, some gone
            kept = [i for i, neighbour in enumerate(ids) if neighbour in self._index]
            ids = [ids[i] for i in kept]
            rows = np.asarray([self._index[neighbour] for neighbour in ids], dtype=np.intp)
            weights = weights[kept]
            known, appended = self._neighbours.get(item_id), False
        # The catalogue's own id strings, not the decoded copies: one string per item however
        # many lists hold it (a decoded id costs ~50 bytes per pair, a third of a pair's memory).
        names = self._ids
        if appended:
            ids = known.ids if len(ids) == old else known.ids + [names[r] for r in rows[old:].tolist()]
        else:
            ids = [names[r] for r in rows.tolist()]
        row = self._index[item_id]
        self._steps.pop(item_id, None)  # the owner's vector now: it has this worker's earlier steps
        if item.vector.shape == (self.dim,):  # finite: owners clip, decoders reject non-finite
            self._vectors[row] = item.vector
        if appended:  # the re-weighted (usually a few) and the appended
            changed = np.concatenate((np.flatnonzero(weights[:old] != known.weights), np.arange(old, len(ids))))
        else:
            changed = np.arange(len(ids))
            if known is not None:
                kept = set(ids)  # the rest were pruned by the owner
                pruned = [slot for slot, other in enumerate(known.ids) if other not in kept]
                self._followers.remove(row, known.rows[pruned])
        self._followers.set(row, rows[changed], weights[changed])
        previous = self._neighbours.get(item_id)
        self._pairs += len(ids) - (0 if previous is None else len(previous.ids))
        self._neighbours[item_id] = _Neighbours(ids, rows, weights)

    def _rows_of(self, item_ids: list[ItemId]) -> np.ndarray:
        rows = []
        for item_id in item_ids:
            row = self._index.get(item_id)
            if row is None:
                self.set(item_id, 0.0, 0)
                row = self._index[item_id]
            rows.append(row)
        return np.asarray(rows, dtype=np.intp)

    def columns(self) -> CatalogColumns:
        """A copy of the catalogue as plain columns (for snapshots); fast: mostly array copies."""
        n = len(self._ids)
        counts = np.zeros(n, dtype=np.int64)
        neighbour_ids: list[ItemId] = []
        weights: list[np.ndarray] = []
        for row, item_id in enumerate(self._ids):
            known = self._neighbours.get(item_id)
            if known is not None and known.ids:
                counts[row] = len(known.ids)
                neighbour_ids.extend(known.ids)
                weights.append(known.weights)
        return CatalogColumns(self._ids[:], self._scores[:n].copy(), self._ts_ms[:n].copy(), self._vectors[:n].copy(),
                              self._exposures[:n].copy(), counts, neighbour_ids,
                              np.concatenate(weights) if weights else np.zeros(0, dtype=np.float64))

    def restore(self, columns: CatalogColumns) -> None:
        """Upsert every item of ``columns`` (from :meth:`columns`), as if their owners had published them."""
        ends = np.cumsum(columns.neighbour_counts).tolist()
        starts = [0, *ends[:-1]]
        for row, item_id in enumerate(columns.ids):
            start, end = starts[row], ends[row]
            self.upsert(item_id, PublishedItem(float(columns.popularity[row]), int(columns.ts_ms[row]),
                                               columns.vectors[row], columns.neighbour_ids[start:end],
                                               columns.neighbour_weights[start:end]))
        self._exposures[self.rows(columns.ids)] = columns.exposures

    def expose(self, rows: np.ndarray) -> None:
        """Count that the items in ``rows`` were shown in a list (exploration favours the least shown)."""
        np.add.at(self._exposures, rows, 1)

    def exposures(self, rows: np.ndarray) -> np.ndarray:
        """How often the items in ``rows`` were shown by this worker."""
        return self._exposures[rows]

    def vector(self, item_id: ItemId) -> np.ndarray | None:
        """The item's published vector (a view), or ``None`` if the item is unknown."""
        row = self._index.get(item_id)
        return None if row is None else self._vectors[row]

    def learning_vector(self, item_id: ItemId) -> np.ndarray | None:
        """The vector an event's learning step starts from: this worker's last :meth:`step`
        on the item since its owner last published it, else the published vector."""
        step = self._steps.get(item_id)
        return step if step is not None else self.vector(item_id)

    def step(self, item_id: ItemId, vector: np.ndarray) -> None:
        """Keep this worker's learning step on a known item until its owner publishes the item again.

        Lists keep scoring the published vectors. Learning starting from the published
        vector instead, every event of a burst took the same full step until the owner's
        state came back, and items overshot to the norm clip along one shared direction.
        """
        if item_id in self._index and vector.shape == (self.dim,):
            self._steps[item_id] = vector

    def row(self, item_id: ItemId) -> int | None:
        """The item's row in :meth:`matrix` (rows change when the catalogue is pruned)."""
        return self._index.get(item_id)

    def rows(self, item_ids: Collection[ItemId]) -> np.ndarray:
        """Rows of the known items among ``item_ids``, as an index array."""
        index = self._index
        if len(item_ids) > 1:
            try:
                return np.array(itemgetter(*item_ids)(index), dtype=np.intp)  # one C call: the usual case
            except KeyError:  # some unknown (or forgotten) item
                pass
        return np.array([row for row in map(index.get, item_ids) if row is not None], dtype=np.intp)

    def item_id(self, row: int) -> ItemId:
        """The id of the item in ``row``."""
        return self._ids[row]

    def item_ids(self, rows: Iterable[int]) -> list[ItemId]:
        """The ids of the items in ``rows``."""
        ids = self._ids
        return [ids[row] for row in rows]

    @property
    def generation(self) -> int:
        """Counts prunings: rows keep their items until it changes (then rows move, some go)."""
        return self._generation

    def matrix(self) -> np.ndarray:
        """All item vectors, shape ``(len(self), d)`` float32 (a view: do not modify)."""
        return self._vectors[:len(self._ids)]

    @property
    def pending_steps(self) -> int:
        """Items this worker has stepped (see :meth:`step`) whose owners have not published them since."""
        return len(self._steps)

    @property
    def neighbour_pairs(self) -> int:
        """Entries over all the items' co-visit lists: what the catalogue's memory grows with
        once every item is known (up to ``2 * max_neighbours`` per item, see :class:`OwnedItem`)."""
        return self._pairs

    def neighbours(self, item_id: ItemId) -> tuple[list[ItemId], list[float]]:
        """The item's published co-visit neighbours and weights (empty if none)."""
        known = self._neighbours.get(item_id)
        return ([], []) if known is None else (list(known.ids), known.weights.tolist())

    def covisits(self, item_ids: list[ItemId]) -> tuple[np.ndarray, np.ndarray]:
        """Co-visits with ``item_ids`` as ``(rows, weights)`` pairs; a row's co-visit score is the sum of its weights.

        Co-visits count both ways: an item's own list (items chosen before it) and the
        ``max_followers`` heaviest of the items whose lists hold it (chosen after it), so
        owners need only one update per event.
        """
        lists = self.covisit_lists([item_ids])
        follower_rows, follower_weights = gather_followers_kernel(*lists.followers)
        return np.concatenate((lists.rows, follower_rows)), np.concatenate((lists.weights, follower_weights))

    def covisit_lists(self, item_id_lists: Sequence[Sequence[ItemId]]) -> CovisitLists:
        """:meth:`covisits` of several users' items at once, in two parts, for compiled code: the
        items' own lists as ``(rows, weights)`` pairs, and their followers where they lie in the
        pool (a popular item has thousands: compiled code reads them in place rather than
        copying them). User ``u``'s are ``[bounds[u]:bounds[u + 1]]`` of each part."""
        rows: list[np.ndarray] = [_NO_ROWS]
        weights: list[np.ndarray] = [_NO_WEIGHTS]
        pairs, pair_bounds, items, item_bounds = 0, [0], [], [0]
        row_of, neighbours_of = self._index.get, self._neighbours.get  # bound once: a few µs per list
        for item_ids in item_id_lists:
            for item_id in item_ids:
                known = neighbours_of(item_id)
                if known is not None:
                    rows.append(known.rows)
                    weights.append(known.weights)
                    pairs += len(known.ids)
                row = row_of(item_id)
                if row is not None:
                    items.append(row)
            pair_bounds.append(pairs)
            item_bounds.append(len(items))
        return CovisitLists(np.concatenate(rows), np.concatenate(weights), np.array(pair_bounds, dtype=np.intp),
                            self._followers.of(np.array(items, dtype=np.intp), self.max_followers),
                            np.array(item_bounds, dtype=np.intp))

    def _append(self, item_id: ItemId) -> int:
        row = super()._append(item_id)
        if row >= self._vectors.shape[0]:
            grown = np.zeros((len(self._scores), self.dim), dtype=np.float32)
            grown[:self._vectors.shape[0]] = self._vectors
            self._vectors = grown
            self._exposures = np.resize(self._exposures, len(self._scores))
            self._followers.grow(len(self._scores))
        self._vectors[row] = 0.0
        self._exposures[row] = 0
        return row

    def _keep_rows(self, keep: np.ndarray) -> None:
        new_row = np.full(len(self._ids), -1, dtype=np.intp)  # old row -> new row, -1 if forgotten
        new_row[keep] = np.arange(keep.size)
        super()._keep_rows(keep)
        self._generation += 1
        self._steps = {item_id: step for item_id, step in self._steps.items() if item_id in self._index}
        self._vectors[:keep.size] = self._vectors[keep]
        self._exposures[:keep.size] = self._exposures[keep]
        neighbours = {}
        for item_id in self._ids:
            known = self._neighbours.get(item_id)
            if known is not None:
                rows = new_row[known.rows]
                kept = rows >= 0
                neighbours[item_id] = _Neighbours([i for i, k in zip(known.ids, kept, strict=True) if k],
                                                  rows[kept], known.weights[kept])
        self._neighbours = neighbours
        self._pairs = sum(len(known.ids) for known in neighbours.values())
        self._followers = FollowerPool(len(self._scores))
        for item_id, known in neighbours.items():
            self._followers.set(self._index[item_id], known.rows, known.weights)


_NO_ROWS = np.zeros(0, dtype=np.intp)
_NO_WEIGHTS = np.zeros(0)


class CatalogColumns(NamedTuple):
    """An :class:`ItemCatalog` as columns, one entry per item; neighbours flattened in item order."""

    ids: list[ItemId]
    popularity: np.ndarray
    ts_ms: np.ndarray
    vectors: np.ndarray
    exposures: np.ndarray
    neighbour_counts: np.ndarray
    neighbour_ids: list[ItemId]
    neighbour_weights: np.ndarray


class CovisitLists(NamedTuple):
    """Several users' co-visits (see :meth:`ItemCatalog.covisit_lists`): user ``u``'s pairs are
    ``rows`` and ``weights`` ``[pair_bounds[u]:pair_bounds[u + 1]]``, and the followers of
    ``followers.items[follower_bounds[u]:follower_bounds[u + 1]]``."""

    rows: np.ndarray
    weights: np.ndarray
    pair_bounds: np.ndarray
    followers: Followers
    follower_bounds: np.ndarray


class _Neighbours(NamedTuple):
    """One item's published neighbours: ids, their catalogue rows and weights (same order)."""

    ids: list[ItemId]
    rows: np.ndarray
    weights: np.ndarray
