"""streamrec's default model: online embeddings fused with co-visitation and trending.

Two pure functions are the whole model, and both the worker and the offline
evaluator call them:

- :func:`learn` — on the user's worker: one SGD step on the user's vector
  (against the item vectors in the local :class:`~streamrec.models.items.ItemCatalog`),
  the event recorded in the user's state, and the item-side changes returned
  as :class:`~streamrec.models.items.ItemDelta` keyed by item, for the items' owners.
- :func:`recommend` — on the user's worker: every catalogue item scored by the
  three signals, each scaled to ``[0, 1]`` and mixed by
  :class:`FusionWeights`; trending weighs more for users with few events.

:class:`InProcessRecommender` wires them with the owner step and the replica in
one process for ``streamrec evaluate``: the worker's code without Kafka.
"""

from __future__ import annotations

import math
import random
import statistics
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from streamrec.models.content import ContentMap, content_features
from streamrec.models.items import ItemCatalog, ItemConfig, ItemDelta, OwnedItem
from streamrec.models.kernels import (
    NO_FOLLOWERS,
    SOURCES,
    fuse_many,
    fuse_top_k,
    gather_followers_kernel,
    score_range,
)
from streamrec.models.online_mf import (
    MAX_WEIGHT,
    OnlineMFConfig,
    initial_user_vector,
    sgd_step_rows,
    top_rows,
    user_learning_rate,
)
from streamrec.models.rerank import intra_list_diversity, mmr
from streamrec.models.user_state import UserState

ItemId = str
UserId = str


MODEL_VERSION = "streamrec-online-v1"
"""Names the model in every recommendation (``model_version``)."""
MIN_SHARE = 0.02
"""Trending shares below this are skipped (measured: no change in HR@10 on ML-100K)."""


@dataclass(frozen=True, slots=True)
class FusionWeights:
    """How the signals mix in :func:`recommend` (each scaled to ``[0, 1]`` first).

    A user with ``n`` earlier events gets trending share ``s = cold_start / (cold_start + n)``
    on top of ``trending``, and the personal signals are scaled by ``1 - s``.
    Set a weight to 0 to switch that signal off (``mf=1`` alone is pure online MF).
    """

    mf: float = 1.0
    covisit: float = 1.0
    trending: float = 0.0
    cold_start: float = 1.0
    sequence: float = 0.0
    """The sequence model's scores (when a snapshot is served; see ``sequence_query.py``)."""

    def __post_init__(self) -> None:
        for name in ("mf", "covisit", "trending", "cold_start", "sequence"):
            value = getattr(self, name)
            if not (value >= 0 and np.isfinite(value)):
                raise ValueError(f"fusion weight {name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class RecommenderConfig:
    """Everything :func:`learn` and :func:`recommend` need.

    Attributes
    ----------
    mf
        The embedding learner (dimension, learning rates, negatives, seed...).
    fusion
        Signal weights.
    covisit_history
        Co-visits count the event's item with this many of the user's latest items.
    candidates, trending_candidates
        With an index, the nearest items and the most popular ones scored per query
        (besides the co-visited ones).
    diversity, diversity_pool
        MMR re-ranking (:func:`~streamrec.models.rerank.mmr`) of the best
        ``k * diversity_pool`` into ``k``: 0 is off, larger trades relevance for variety.
    explore
        Share of the ``k`` slots (rounded; 0 is off) given to the least shown items of
        that pool, marked ``source="explore"``.
    index_min_items
        Smaller catalogues are scored whole even when an index is given: exact, and
        faster there (measured 112 against 356 µs per event on a 500-item catalogue).
    max_neighbours
        Co-visit neighbours kept and published per item (lists hold up to twice as many
        between prunings); a replica counts as many of an item's heaviest followers
        (items whose lists hold it) the other way.
    half_life_s
        Trending half-life, seconds of event time.
    history_size, dedup_window
        Per-user caps (see :class:`~streamrec.models.user_state.UserState`).
    max_items
        Catalogue bound per worker.
    """

    mf: OnlineMFConfig = field(default_factory=OnlineMFConfig)
    fusion: FusionWeights = field(default_factory=FusionWeights)
    covisit_history: int = 5
    max_neighbours: int = 50
    candidates: int = 100
    trending_candidates: int = 50
    index_min_items: int = 20_000
    diversity: float = 0.0
    diversity_pool: int = 3
    explore: float = 0.0
    half_life_s: float = 86_400.0
    history_size: int = 200
    dedup_window: int = 256
    max_items: int = 1_000_000

    @property
    def items(self) -> ItemConfig:
        """The item side of this configuration."""
        return ItemConfig(self.mf, self.half_life_s, self.max_neighbours)

    def new_catalog(self) -> ItemCatalog:
        """An empty replica sized for this configuration."""
        return ItemCatalog(self.half_life_s, self.mf.dim, self.max_items, 2 * self.max_neighbours)


def learn(user_id: UserId, state: UserState, item_id: ItemId, event_id: str | None, weight: float, ts_ms: int,
          catalog: ItemCatalog, config: RecommenderConfig, rng: random.Random) -> dict[ItemId, ItemDelta]:
    """Learn one event of ``state``'s user: update ``state`` in place, return the item-side deltas.

    A zero ``weight`` (an event type that does not count) only records the item as seen.
    """
    recent = [other for other in state.recent(config.covisit_history) if other != item_id]
    n_before = state.n_events
    state.record(item_id, event_id, config.history_size, config.dedup_window)
    if not (weight > 0 and math.isfinite(weight)):
        return {}
    weight = min(weight, MAX_WEIGHT)  # one event cannot swamp popularity or co-visits
    mf = config.mf
    item_vector = catalog.learning_vector(item_id)
    if item_vector is None:
        item_vector = config.items.initial_vector(item_id)
    negatives = _sample_negatives(catalog, catalog.row(item_id), mf.negatives, rng)
    user_vector = state.vector if state.vector is not None and state.vector.shape == (mf.dim,) \
        else initial_user_vector(user_id, mf)
    updated = sgd_step_rows(user_vector, item_vector, catalog.matrix(), negatives, weight,
                            user_learning_rate(mf, n_before), mf)  # [user, item, *negatives]
    state.vector = updated[0].copy()
    # One delta, for the chosen item: its vector change, popularity, and co-visits with the
    # items chosen just before it (replicas index them both ways). Sending the negatives'
    # vector changes too (4 more deltas per event) measured no better on ML-100K (HR@10 0.165 both).
    catalog.step(item_id, updated[1].copy())
    return {item_id: ItemDelta(weight, ts_ms, updated[1] - item_vector, {other: weight for other in recent})}


def _sample_negatives(catalog: ItemCatalog, positive_row: int | None, m: int, rng: random.Random) -> np.ndarray:
    """``m`` uniform catalogue rows (not the positive item's; fewer if drawn), as an index array."""
    n = len(catalog)
    rows = [int(rng.random() * n) for _ in range(m)] if n else []
    return np.array([row for row in rows if row != positive_row], dtype=np.intp)


class Ranked(NamedTuple):
    """One recommended item: id, fused score, and the signal that added most to it (``None``: unsaid)."""

    item_id: ItemId
    score: float
    source: str | None = None


class VectorSearch(Protocol):
    """What :func:`recommend` needs from a nearest-neighbour index (``streamrec.index.LiveIndex`` is one)."""

    def search(self, query: np.ndarray, k: int, exclude: Collection[ItemId] = ()) -> list[tuple[ItemId, float]]:
        """The ``k`` items with the largest inner product with ``query``, best first, none of ``exclude``."""
        ...


class LiveVectors(VectorSearch, Protocol):
    """A :class:`VectorSearch` kept in step with the catalogue's vectors."""

    def upsert(self, item_id: ItemId, vector: np.ndarray) -> None:
        """Insert or replace an item's vector."""
        ...

    def maybe_rebuild(self, background: bool = True) -> bool:
        """Fold recent changes into the main structure if due."""
        ...


def recommend(state: UserState, catalog: ItemCatalog, k: int, config: RecommenderConfig,
              exclude: Collection[ItemId] = (), index: VectorSearch | None = None,
              only: Collection[ItemId] | None = None, sequence: np.ndarray | None = None) -> list[Ranked]:
    """The user's top ``k`` ``(item_id, score, source)``, best first, never a seen or excluded item.

    The signals are fused by :func:`~streamrec.models.kernels.fuse_top_k` (each scaled to at
    most 1, then weighted); items no signal scores above 0 are left out. Without ``index``
    every catalogue item is scored; with one, only candidates: the index's nearest items to
    the user's vector (``config.candidates`` of them, seen and excluded ones skipped), the
    co-visited items and the ``config.trending_candidates`` most popular (from
    ``config.index_min_items`` catalogue items on; below, exact scoring of all is faster).
    ``only``, when given, restricts the list to those items (e.g. a category filter).
    ``sequence`` is the sequence model's score per catalogue row (its best
    ``config.candidates`` join the candidates).
    """
    return recommend_many([state], catalog, k, config, exclude, index, only, [sequence])[0]


SCORED_TOGETHER = 32
"""Users :func:`recommend_many` scores in one matrix product and one call of the fusion kernel."""


def recommend_many(states: Sequence[UserState], catalog: ItemCatalog, k: int, config: RecommenderConfig,
                   exclude: Collection[ItemId] = (), index: VectorSearch | None = None,
                   only: Collection[ItemId] | None = None,
                   sequences: Sequence[np.ndarray | None] | None = None) -> list[list[Ranked]]:
    """:func:`recommend` for each of ``states`` (a micro-batch's users), with ``sequences[u]`` for user ``u``.

    Scoring the whole catalogue, every :data:`SCORED_TOGETHER` users share one matrix product
    (measured 13 against 39 µs per user on 10k items) and one call of
    :func:`~streamrec.models.kernels.fuse_many` (a call from Python costs a few µs per list for
    its dozen arguments alone). The product goes into memory this thread reuses: workers fix
    glibc's mmap threshold (``worker.malloc_mmap_threshold_kb``, 128 KiB), so a product in
    fresh memory (1.7 MB for 43 users × 10k items) was a new mapping whose pages faulted in as
    BLAS wrote them (31 against 11 µs per user). Where the index is searched instead, each
    user's candidates are their own, and so is the call.
    """
    sequences = [None] * len(states) if sequences is None else sequences
    if len(catalog) == 0 or k <= 0:
        return [[] for _ in states]
    if index is not None and len(catalog) >= config.index_min_items:
        return [_recommend_candidates(state, catalog, k, config, exclude, index, only, sequence)
                for state, sequence in zip(states, sequences, strict=True)]
    masked = catalog.rows(exclude) if exclude else _NO_ROWS
    if only is not None:
        keep = np.zeros(len(catalog), dtype=bool)
        keep[catalog.rows(only)] = True
        masked = np.concatenate((masked, np.flatnonzero(~keep)))
    lists: list[list[Ranked]] = []
    for first in range(0, len(states), SCORED_TOGETHER):
        lists += _recommend_whole(states[first:first + SCORED_TOGETHER], sequences[first:first + SCORED_TOGETHER],
                                  catalog, k, config, masked)
    return lists


class _Mix(NamedTuple):
    """One user's signal weights in a list (0: the signal is off for them)."""

    mf: float
    covisit: float
    trending: float
    sequence: float


def _mix(state: UserState, config: RecommenderConfig, catalog: ItemCatalog, sequence: np.ndarray | None) -> _Mix:
    """Trending weighs ``cold_start / (cold_start + n)`` more for a user with ``n`` events, the
    personal signals the rest (see :class:`FusionWeights`)."""
    fusion = config.fusion
    share = fusion.cold_start / (fusion.cold_start + state.n_events) if fusion.cold_start > 0 else 0.0
    if fusion.trending + share < MIN_SHARE:
        share = 0.0  # too small to change a list; saves a pass over the catalogue
    personal = 1.0 - share
    with_mf = state.vector is not None and state.vector.shape == (catalog.dim,)
    with_sequence = sequence is not None and sequence.shape == (len(catalog),)
    return _Mix(fusion.mf * personal if with_mf else 0.0, fusion.covisit * personal, fusion.trending + share,
                fusion.sequence * personal if with_sequence else 0.0)


def _recommend_whole(states: Sequence[UserState], sequences: Sequence[np.ndarray | None], catalog: ItemCatalog,
                     k: int, config: RecommenderConfig, masked: np.ndarray) -> list[list[Ranked]]:
    """Lists scoring the whole catalogue (positions are rows), ``masked`` rows left out of all."""
    users, n = len(states), len(catalog)
    mixes = [_mix(state, config, catalog, sequence) for state, sequence in zip(states, sequences, strict=True)]
    mf, mf_ranges = _NO_BATCH_SCORES, np.zeros((users, 2))
    if any(mix.mf > 0 for mix in mixes):
        zeros = np.zeros(catalog.dim, dtype=np.float32)
        mf = _product(np.stack([state.vector if mix.mf > 0 else zeros for state, mix in zip(states, mixes)]),
                      catalog.matrix())
        mf_ranges = _ranges(mf)
    sequence, sequence_ranges = _NO_BATCH_SCORES, np.zeros((users, 2))
    if any(mix.sequence > 0 for mix in mixes):
        sequence = _reused("sequence", users, n)
        for row, (scores, mix) in enumerate(zip(sequences, mixes, strict=True)):
            sequence[row] = scores if mix.sequence > 0 else 0.0
        sequence_ranges = _ranges(sequence)
    covisits = catalog.covisit_lists([state.recent(config.covisit_history) if mix.covisit > 0 else ()
                                      for state, mix in zip(states, mixes, strict=True)])
    seen = [catalog.rows(state.seen) for state in states]
    if masked.size:
        seen = [np.concatenate((rows, masked)) for rows in seen]
    pool, explore = _pool(k, config)
    positions, scores, sources, sizes = fuse_many(
        mf[:users], np.array([mix.mf for mix in mixes]), mf_ranges, covisits.rows, covisits.weights,
        covisits.pair_bounds, covisits.followers, covisits.follower_bounds, np.array([mix.covisit for mix in mixes]),
        catalog.decayed(), catalog.decayed_max(), np.array([mix.trending for mix in mixes]),
        np.concatenate([_NO_ROWS, *seen]), _bounds(seen), pool, sequence[:users],
        np.array([mix.sequence for mix in mixes]), sequence_ranges)
    if config.diversity > 0 or explore:
        return [_ranked(positions[u, :size], scores[u, :size], sources[u, :size], catalog, k, config, explore)
                for u, size in enumerate(sizes.tolist())]
    # The fusion ranked k per user: the lists as they are, converted for the whole group at once.
    kept = np.arange(pool) < sizes[:, None]
    ids = catalog.item_ids(positions[kept].tolist())
    values, names = scores[kept].tolist(), _SOURCE_NAMES[sources[kept]].tolist()
    ends = np.cumsum(sizes).tolist()
    return [[_new_tuple(Ranked, item) for item in zip(ids[end - size:end], values[end - size:end],
                                                       names[end - size:end])]
            for end, size in zip(ends, sizes.tolist(), strict=True)]


def _recommend_candidates(state: UserState, catalog: ItemCatalog, k: int, config: RecommenderConfig,
                          exclude: Collection[ItemId], index: VectorSearch, only: Collection[ItemId] | None,
                          sequence: np.ndarray | None) -> list[Ranked]:
    """A list scoring only candidates: the index's nearest items, co-visited, trending and the
    sequence model's best (see :func:`recommend`)."""
    mix = _mix(state, config, catalog, sequence)
    covisits = catalog.covisit_lists([state.recent(config.covisit_history) if mix.covisit > 0 else ()])
    follower_rows, follower_weights = gather_followers_kernel(*covisits.followers)  # as positions below
    covisit_rows = np.concatenate((covisits.rows, follower_rows))
    covisit_weights = np.concatenate((covisits.weights, follower_weights))
    masked = catalog.rows(state.seen)
    if exclude:
        masked = np.concatenate((masked, catalog.rows(exclude)))
    allowed = None if only is None else catalog.rows(only)
    parts = [covisit_rows]
    if allowed is not None and allowed.size <= 10 * config.candidates:
        parts.append(allowed)  # a small filtered set is scored whole
    if mix.mf > 0:
        nearest = index.search(state.vector, config.candidates, exclude={*state.seen, *exclude})
        parts.append(catalog.rows([item_id for item_id, _ in nearest]))
    if mix.trending > 0:
        parts.append(catalog.top_rows(config.trending_candidates))
    if mix.sequence > 0:
        parts.append(top_rows(sequence.copy(), config.candidates))
    candidates = np.unique(np.concatenate(parts))
    if allowed is not None:
        candidates = candidates[np.isin(candidates, allowed)]
    mf = catalog.matrix()[candidates] @ state.vector if mix.mf > 0 else _NO_SCORES
    sequence = sequence[candidates] if mix.sequence > 0 else _NO_SCORES
    masked = np.searchsorted(candidates, masked[np.isin(masked, candidates)])
    pool, explore = _pool(k, config)
    positions, scores, sources = fuse_top_k(mf, mix.mf, score_range(mf), np.searchsorted(candidates, covisit_rows),
                                            covisit_weights, NO_FOLLOWERS, mix.covisit,
                                            catalog.decayed()[candidates], catalog.decayed_max(), mix.trending,
                                            masked, pool, sequence, mix.sequence, score_range(sequence))
    return _ranked(candidates[positions], scores, sources, catalog, k, config, explore)


def _pool(k: int, config: RecommenderConfig) -> tuple[int, int]:
    """How many items the fusion ranks for a list of ``k``, and how many of them ``explore`` takes."""
    explore = min(k - 1, round(k * config.explore)) if config.explore > 0 else 0
    return (k * config.diversity_pool if config.diversity > 0 or explore else k), explore


def _ranked(rows: np.ndarray, scores: np.ndarray, sources: np.ndarray, catalog: ItemCatalog, k: int,
            config: RecommenderConfig, explore: int) -> list[Ranked]:
    """The fusion's best ``rows`` (catalogue rows, best first) as a list of ``k``, re-ranked for
    diversity and with ``explore`` slots when configured."""
    names = _SOURCE_NAMES[sources].tolist()
    order = np.arange(rows.size)
    if config.diversity > 0:
        order = mmr(order, scores, catalog.matrix()[rows], rows.size, config.diversity)
    if explore and order.size > k - explore:
        # The last slots go to the least shown of the remaining candidates (still relevant:
        # they are in the pool), so the catalogue's long tail gets seen and learnt.
        head, rest = order[:k - explore], order[k - explore:]
        tail = rest[np.argsort(catalog.exposures(rows[rest]), kind="stable")[:explore]]
        for position in tail.tolist():
            names[position] = "explore"
        order = np.concatenate((head, tail))
    order = order[:k]
    if explore:
        catalog.expose(rows[order])
    return [Ranked(item_id, score, names[position]) for item_id, score, position
            in zip(catalog.item_ids(rows[order].tolist()), scores[order].tolist(), order.tolist(), strict=True)]


_SOURCE_NAMES = np.array(SOURCES, dtype=object)
_new_tuple = tuple.__new__  # Ranked(*item) without its Python-level __new__: a third less per list


def _ranges(scores: np.ndarray) -> np.ndarray:
    """Each row's ``(highest, lowest)`` score, for :func:`~streamrec.models.kernels.fuse_many`."""
    ranges = np.empty((scores.shape[0], 2))
    ranges[:, 0] = scores.max(axis=1)
    ranges[:, 1] = scores.min(axis=1)
    return ranges


def _bounds(parts: list[np.ndarray]) -> np.ndarray:
    """Where each of ``parts`` starts and ends once concatenated: ``[0, len(p0), len(p0) + len(p1), ...]``."""
    bounds = np.zeros(len(parts) + 1, dtype=np.intp)
    np.cumsum([part.size for part in parts], out=bounds[1:])
    return bounds


def _product(vectors: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``vectors @ matrix.T`` (users × items, rows contiguous for the fusion kernel) in this thread's reused memory."""
    users, n = vectors.shape[0], matrix.shape[0]
    out = _reused("product", users, n)
    if users >= 16:
        np.matmul(vectors, matrix.T, out=out)
    else:  # OpenBLAS takes 40-90 µs per user for that with 2-5 users, 17-25 for this (10k items, d=32)
        out[...] = np.matmul(matrix, vectors.T, out=_reused("product_t", n, users)).T
    return out


def _reused(name: str, rows: int, columns: int) -> np.ndarray:
    """A float32 ``(rows, columns)`` array (contents undefined) in memory this thread keeps for ``name``."""
    flat = getattr(_THREAD, name, None)
    if flat is None or flat.size < rows * columns:
        flat = np.empty(rows * columns, dtype=np.float32)
        setattr(_THREAD, name, flat)
    return flat[:rows * columns].reshape(rows, columns)


_THREAD = threading.local()


_NO_ROWS = np.zeros(0, dtype=np.intp)
_NO_SCORES = np.zeros(0, dtype=np.float32)
_NO_BATCH_SCORES = np.zeros((SCORED_TOGETHER, 0), dtype=np.float32)


class InProcessRecommender:
    """The worker's model in one process, for ``streamrec evaluate``: learn, own items, replicate.

    Deltas are applied by the item owner step and published into the replica
    every ``publish_every`` events (1: immediately; the worker publishes every
    ``model.item_publish_interval_ms``, so a larger value imitates its staleness).
    """

    model_version = MODEL_VERSION
    source = "fusion"
    excludes_seen = True  # the user's state holds their seen items, as in the worker

    def __init__(self, config: RecommenderConfig | None = None, publish_every: int = 1,
                 index: LiveVectors | None = None) -> None:
        self.config = config or RecommenderConfig()
        self.index = index  # None: score the whole catalogue
        self.catalog = self.config.new_catalog()
        self.users: dict[UserId, UserState] = {}
        self.owned: dict[ItemId, OwnedItem] = {}
        self.publish_every = max(1, publish_every)
        self._pending: dict[ItemId, ItemDelta] = {}
        self._since_publish = 0
        self._rng = random.Random(self.config.mf.seed)
        self._items = self.config.items
        self.content = ContentMap(self.config.mf.dim)
        self._features: dict[ItemId, dict[int, float]] = {}  # content features of announced items

    def learn_one(self, user_id: UserId, item_id: ItemId, weight: float = 1.0, ts_ms: int | None = None) -> None:
        """Learn one event exactly as the worker does (``ts_ms`` defaults to the latest seen)."""
        state = self.users.setdefault(user_id, UserState())
        ts = self.catalog.latest_ts_ms if ts_ms is None else int(ts_ms)
        for other, delta in learn(user_id, state, item_id, None, weight, ts, self.catalog, self.config, self._rng).items():
            pending = self._pending.get(other)
            if pending is None:
                self._pending[other] = delta
            else:
                pending.merge(delta, self.config.half_life_s)
        self._since_publish += 1
        if self._since_publish >= self.publish_every:
            self.publish()

    def publish(self) -> None:
        """Apply the pending deltas on their owners and publish the items to the replica."""
        pending, self._pending, self._since_publish = self._pending, {}, 0
        for item_id, delta in pending.items():
            owned = self.owned.get(item_id)
            if owned is None:
                owned = self.owned[item_id] = OwnedItem()
            owned.apply(item_id, delta, self._items)
            published = owned.published(self._items)
            self.catalog.upsert(item_id, published)
            features = self._features.get(item_id)
            if features:  # the events' embedding of an item teaches the content map
                self.content.learn(features, published.vector)
            if self.index is not None:
                self.index.upsert(item_id, published.vector)
        if self.index is not None:
            self.index.maybe_rebuild(background=False)  # in step: results must not depend on thread timing

    def announce(self, item_id: ItemId, categories: Iterable[str], title: str | None = None) -> None:
        """A new item with content: it enters the catalogue (and index) with the vector its content
        predicts, so it can be recommended before its first event."""
        features = content_features(categories, title, None, self.content.buckets)
        self._features[item_id] = features
        if features and self.catalog.row(item_id) is None:
            vector = self.content.vector(features)
            self.owned[item_id] = OwnedItem(vector=vector.copy())  # its owner starts from the content too
            self.catalog.upsert(item_id, OwnedItem(vector=vector).published(self._items))
            if self.index is not None:
                self.index.upsert(item_id, vector)

    def recommend(self, user_id: UserId, k: int, exclude: Collection[ItemId] = ()) -> list[tuple[ItemId, float]]:
        """The user's top ``k`` now (trending for an unknown user)."""
        ranked = recommend(self.users.get(user_id) or UserState(), self.catalog, k, self.config, exclude, self.index)
        return [(item.item_id, item.score) for item in ranked]

    def list_diversity(self, item_ids: list[ItemId]) -> float:
        """Intra-list diversity of a list by this model's item vectors (mean pairwise cosine distance)."""
        return intra_list_diversity(self.catalog.matrix()[self.catalog.rows(item_ids)])

    def n_events(self, user_id: UserId) -> int:
        """Events learnt from this user."""
        state = self.users.get(user_id)
        return 0 if state is None else state.n_events


def benchmark(events: int = 20_000, repeats: int = 5, config: RecommenderConfig | None = None,
              users: int = 2_000, items: int = 5_000, seed: int = 0) -> dict[str, Any]:
    """Microseconds per event of :func:`learn` and :func:`recommend` (medians of ``repeats``), JSON-ready.

    A seeded random stream (Zipf item popularity) is learnt once to warm the
    model up (every id created, co-visits and vectors in place); each repeat
    then times one more pass of :func:`learn` alone (the worker's learning
    step, without publication), :meth:`InProcessRecommender.learn_one` (learn,
    owner update, replica) and :func:`recommend` (top 10 over the catalogue).
    """
    config = config or RecommenderConfig()
    rng = np.random.default_rng(seed)
    stream = list(zip((f"u{u}" for u in rng.integers(0, users, events)),
                      (f"i{i}" for i in rng.zipf(1.3, events) % items), strict=True))
    model = InProcessRecommender(config)
    for user_id, item_id in stream:
        model.learn_one(user_id, item_id, 1.0, 0)
    step_rng = random.Random(seed)
    timings: dict[str, list[float]] = {"learn": [], "learn_one": [], "recommend": []}
    for _ in range(repeats):
        states = {user_id: UserState(list(state.seen), [], state.n_events, state.vector)
                  for user_id, state in model.users.items()}
        started = time.perf_counter()
        for user_id, item_id in stream:
            learn(user_id, states[user_id], item_id, None, 1.0, 0, model.catalog, config, step_rng)
        timings["learn"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for user_id, item_id in stream:
            model.learn_one(user_id, item_id, 1.0, 0)
        timings["learn_one"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for user_id, _ in stream:
            model.recommend(user_id, 10)
        timings["recommend"].append(time.perf_counter() - started)
    medians = {name: statistics.median(seconds) / events * 1e6 for name, seconds in timings.items()}
    return {"name": "online_recommender", "events": events, "repeats": repeats, "catalogue": len(model.catalog),
            **{f"{name}_us_per_event": round(us, 2) for name, us in medians.items()},
            "events_per_s_learn_one_and_recommend": round(1e6 / (medians["learn_one"] + medians["recommend"])),
            "dim": config.mf.dim, "negatives": config.mf.negatives, "numpy": np.__version__}
