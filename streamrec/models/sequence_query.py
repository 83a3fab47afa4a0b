"""Querying a sequence-model snapshot: a user's recent items in, a score per catalogue item out.

:class:`SequenceQuery` wraps one :class:`~streamrec.models.sequence_snapshot.SequenceSnapshot`
for the query path, in numpy alone (a worker never imports torch). Its scores come
aligned with the rows of an :class:`~streamrec.models.items.ItemCatalog`, so
:func:`~streamrec.models.online_recommender.recommend` fuses them with the online
signals like any other dense signal.

Items the snapshot does not know (new since it was trained, or announced with content
and never chosen) are projected into its item space: a linear map, fitted by least
squares on the items both know, takes an item's online-model vector (for a new item,
the vector its content predicts) to a sequence-model item vector. So a new item scores
like the known items it resembles, instead of being left out until the next snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamrec.models.items import ItemCatalog
from streamrec.models.kernels import attention_kernel, layer_norm_kernel
from streamrec.models.sequence_snapshot import SequenceConfig, SequenceSnapshot

ItemId = str


class NumpyEncoder:
    """The model's query (the last position's output) without torch, for one sequence or a batch.

    On the hot path torch's per-operation overhead dominates (about 1-2 ms per query for
    two small blocks). Here the matrix products go to numpy (BLAS) and the layer norms
    and attention to compiled loops (:mod:`~streamrec.models.kernels`), on the items alone
    (padding changes nothing, see ``sequence.py``), computing only what the last position
    needs in the last block. A unit test holds it equal to the torch model.

    Parameters
    ----------
    state
        The model's weights as float32 arrays, named as in its ``state_dict``
        (:attr:`SequenceSnapshot.state <streamrec.models.sequence_snapshot.SequenceSnapshot.state>`).
    config
        The model's shape.
    """

    def __init__(self, state: dict[str, np.ndarray], config: SequenceConfig) -> None:
        self.items = state["items.weight"] * np.float32(config.dim ** 0.5)  # the input scale, applied once
        self.vectors = state["items.weight"][1:]  # row i: item index i + 1 (for scoring)
        self.positions = state["positions.weight"]
        self.heads = config.heads
        self.blocks = []
        for n in range(config.blocks):
            block = {key.split(".", 3)[3]: value for key, value in state.items() if key.startswith(f"blocks.layers.{n}.")}
            self.blocks.append((
                block["norm1.weight"], block["norm1.bias"],
                np.ascontiguousarray(block["self_attn.in_proj_weight"].T), block["self_attn.in_proj_bias"],
                np.ascontiguousarray(block["self_attn.out_proj.weight"].T), block["self_attn.out_proj.bias"],
                block["norm2.weight"], block["norm2.bias"],
                np.ascontiguousarray(block["linear1.weight"].T), block["linear1.bias"],
                np.ascontiguousarray(block["linear2.weight"].T), block["linear2.bias"]))
        self.norm = (state["norm.weight"], state["norm.bias"])

    def query(self, indices: list[int]) -> np.ndarray:
        """The query vector of a sequence of model indices (oldest first, no padding, at most ``max_len``)."""
        return self.queries([indices])[0]

    def queries(self, sequences: Sequence[list[int]]) -> np.ndarray:
        """The query vectors ``(len(sequences), dim)`` of several sequences, computed together.

        Shorter sequences are padded at the front; no position attends to the padding, so
        each vector is the one :meth:`query` would give alone.
        """
        length = max(len(indices) for indices in sequences)
        padded = np.zeros((len(sequences), length), dtype=np.intp)
        first = np.empty(len(sequences), dtype=np.intp)  # each sequence's first real position
        for row, indices in enumerate(sequences):
            first[row] = length - len(indices)
            padded[row, first[row]:] = indices
        hidden = self.items[padded] + self.positions[self.positions.shape[0] - length:]
        for number, block in enumerate(self.blocks):
            hidden = self._block(hidden, block, first, last_only=number == len(self.blocks) - 1)
        return layer_norm_kernel(np.ascontiguousarray(hidden[:, -1]), *self.norm)

    def _block(self, x: np.ndarray, block: tuple[np.ndarray, ...], first: np.ndarray, last_only: bool) -> np.ndarray:
        """One pre-norm block over ``(batch, positions, dim)``; with ``last_only`` only the last
        position's output (the last block)."""
        norm1_w, norm1_b, qkv_w, qkv_b, out_w, out_b, norm2_w, norm2_b, up_w, up_b, down_w, down_b = block
        batch, n, d = x.shape
        qkv = (layer_norm_kernel(x.reshape(-1, d), norm1_w, norm1_b) @ qkv_w + qkv_b).reshape(batch, n, 3 * d)
        attended = attention_kernel(qkv, first, self.heads, last_only)
        x = (x[:, -1:] if last_only else x).reshape(-1, d) + attended.reshape(-1, d) @ out_w + out_b
        inner = layer_norm_kernel(x, norm2_w, norm2_b) @ up_w + up_b
        np.maximum(inner, 0.0, out=inner)
        return (x + inner @ down_w + down_b).reshape(batch, -1, d)


class SequenceQuery:
    """One snapshot, ready for queries (not thread-safe: one per worker or evaluator)."""

    def __init__(self, snapshot: SequenceSnapshot) -> None:
        self.snapshot = snapshot
        self.version = snapshot.version
        self.max_len = snapshot.config.max_len
        self.encoder = NumpyEncoder(snapshot.state, snapshot.config)
        self.vectors = self.encoder.vectors  # (items, dim) float32, row i for index i + 1
        self.index = {item_id: i for i, item_id in enumerate(snapshot.item_ids)}
        # Row r: catalogue row r's scoring vector (the snapshot's, or projected for an item it
        # does not know), so one matrix product gives scores in catalogue order. Grown as the
        # catalogue grows (capacity doubled: appending costs no copy per new item).
        self._ordered = np.zeros((0, self.vectors.shape[1]), dtype=np.float32)
        self._filled = 0
        self._unscored = np.zeros(0, dtype=np.intp)  # catalogue rows with no vector (no projection fitted)
        self._generation = -1
        self._projection: np.ndarray | None = None  # (catalogue dim + 1, dim), fitted once per generation

    def query(self, recent: Sequence[ItemId]) -> np.ndarray | None:
        """The query vector ``(dim,)`` for a user whose recent items are ``recent`` (oldest first),
        or ``None`` when the snapshot knows none of them."""
        indices = self._indices(recent)
        return self.encoder.query(indices) if indices else None

    def scores(self, recent: Sequence[ItemId], catalog: ItemCatalog) -> np.ndarray | None:
        """Every catalogue row's score for this user (float32, shape ``(len(catalog),)``), or ``None``."""
        return self.scores_many([recent], catalog)[0]

    def scores_many(self, recents: Sequence[Sequence[ItemId]], catalog: ItemCatalog) -> list[np.ndarray | None]:
        """:meth:`scores` for several users at once: one encoder pass and one matrix product
        for all of them (a worker's micro-batch)."""
        indexed = [self._indices(recent) for recent in recents]
        known = [n for n, indices in enumerate(indexed) if indices]
        result: list[np.ndarray | None] = [None] * len(recents)
        if not known:
            return result
        ordered, unscored = self._catalogue_vectors(catalog)
        queries = self.encoder.queries([indexed[n] for n in known])
        # catalogue × users, then one transposing copy: faster than users × catalogue
        by_user = np.ascontiguousarray((ordered @ queries.T).T)
        for scores, query, n in zip(by_user, queries, known, strict=True):
            if unscored.size:  # rare: as low as the snapshot's lowest score, so they add nothing
                scores[unscored] = (self.vectors @ query).min() if len(self.vectors) else 0.0
            result[n] = scores
        return result

    def prepare(self, catalog: ItemCatalog) -> None:
        """Lay out the catalogue's scoring vectors now, fitting the projection of unknown items
        (about 40 ms on 10k items), so the first query after a swap does not pay for it.

        Safe in a loading thread while the catalogue grows: rows added meanwhile are laid out
        by the next query, and if rows moved, the generation recorded first makes it start over.
        """
        self._catalogue_vectors(catalog)

    def _indices(self, recent: Sequence[ItemId]) -> list[int]:
        return [self.index[item_id] + 1 for item_id in recent if item_id in self.index][-self.max_len:]

    def _catalogue_vectors(self, catalog: ItemCatalog) -> tuple[np.ndarray, np.ndarray]:
        """The scoring vectors of catalogue rows ``0..len(catalog)-1``, and the rows without one."""
        generation, n = catalog.generation, len(catalog)  # the generation first (see prepare)
        if generation != self._generation:  # rows moved: lay them all out again
            self._filled, self._unscored, self._generation, self._projection = 0, self._unscored[:0], generation, None
        if self._filled < n:  # new rows are appended: lay out only those
            start = self._filled
            known = np.asarray([self.index.get(item_id, -1) for item_id in catalog.item_ids(range(start, n))],
                               dtype=np.intp)
            added = np.zeros((n - start, self._ordered.shape[1]), dtype=np.float32)
            unknown = np.flatnonzero(known < 0)
            added[known >= 0] = self.vectors[known[known >= 0]]
            if unknown.size:
                if self._projection is None:
                    self._projection = fit_projection(catalog, self.index, self.vectors)
                if self._projection is not None:
                    added[unknown] = with_bias(catalog.matrix()[start + unknown]) @ self._projection
                else:
                    self._unscored = np.concatenate((self._unscored, start + unknown))
            if len(self._ordered) < n:
                grown = np.zeros((max(n, 2 * len(self._ordered)), self._ordered.shape[1]), dtype=np.float32)
                grown[:start] = self._ordered[:start]
                self._ordered = grown
            self._ordered[start:n] = added
            self._filled = n
        return self._ordered[:n], self._unscored

def with_bias(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` with a column of ones appended (the projection's intercept)."""
    return np.hstack((vectors, np.ones((len(vectors), 1), dtype=vectors.dtype)))


def fit_projection(catalog: ItemCatalog, index: dict[ItemId, int], vectors: np.ndarray,
                   min_items_per_dim: int = 3) -> np.ndarray | None:
    """The least-squares linear map (with intercept) from the catalogue's item vectors to
    the snapshot's item ``vectors``, fitted on the items both know; ``None`` with fewer than
    ``min_items_per_dim`` shared items per parameter row (too few to trust)."""
    shared = [(row, index[item_id]) for row, item_id in enumerate(catalog.item_ids(range(len(catalog))))
              if item_id in index]
    if len(shared) < min_items_per_dim * (catalog.dim + 1):
        return None
    rows, snapshot_rows = (np.asarray(column, dtype=np.intp) for column in zip(*shared, strict=True))
    inputs = with_bias(catalog.matrix()[rows].astype(np.float64))
    projection, *_ = np.linalg.lstsq(inputs, vectors[snapshot_rows].astype(np.float64), rcond=None)
    return projection


def held_out_hit_rate(query: SequenceQuery, sequences: Sequence[Sequence[ItemId]], k: int = 10) -> float:
    """HR@k of predicting each sequence's last item from the ones before it (seen items excluded).

    The trainer's quality gate: it scores users it never trains on, so a snapshot that
    got worse at predicting new behaviour is caught before any worker serves it.
    """
    hits = scored = 0
    for sequence in sequences:
        if len(sequence) < 2:
            continue
        *before, target = sequence
        vector = query.query(before[-query.max_len:])
        scored += 1
        if vector is None or target not in query.index:
            continue
        scores = query.vectors @ vector
        scores[[query.index[item] for item in before if item in query.index]] = -np.inf
        top = np.argpartition(-scores, min(k, scores.size - 1))[:k]
        hits += query.index[target] in set(top.tolist())
    return hits / scored if scored else 0.0
