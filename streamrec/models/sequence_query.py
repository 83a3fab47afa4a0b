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
from streamrec.models.sequence_snapshot import SequenceConfig, SequenceSnapshot

ItemId = str


class NumpyEncoder:
    """The model's query (the last position's output) in numpy, for one sequence or a batch.

    On the hot path torch's per-operation overhead dominates (about 1-2 ms per query for
    two small blocks); the same arithmetic in numpy, on the items alone (padding changes
    nothing, see ``sequence.py``) and computing only what the last position needs in the
    last block, takes a fraction of that. A unit test holds it equal to the torch model.

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
        self.heads, self.width = config.heads, config.dim // config.heads
        self.future = np.triu(np.full((config.max_len, config.max_len), -np.inf, dtype=np.float32), 1)
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

        Shorter sequences are padded at the front with index 0, which no position attends
        to (a large negative score, not ``-inf``: a padded row attending to nothing must
        stay finite, its values are multiplied by zero weights later), so each vector is
        the one :meth:`query` would give alone, in one pass of array operations.
        """
        length = max(len(indices) for indices in sequences)
        padded = np.zeros((len(sequences), length), dtype=np.intp)
        for row, indices in enumerate(sequences):
            padded[row, length - len(indices):] = indices
        hidden = self.items[padded] + self.positions[self.positions.shape[0] - length:]
        ignore = np.where(padded == 0, _IGNORED, np.float32(0.0))[:, None, :]  # (batch, 1, keys)
        for number, block in enumerate(self.blocks):
            hidden = self._block(hidden, block, ignore, last_only=number == len(self.blocks) - 1)
        return _layer_norm(hidden[:, -1], *self.norm)

    def _block(self, x: np.ndarray, block: tuple[np.ndarray, ...], ignore: np.ndarray,
               last_only: bool) -> np.ndarray:
        """One pre-norm block over ``(batch, positions, dim)``; with ``last_only`` only the last
        position's output (the last block). ``ignore`` is added to the scores of padded keys."""
        norm1_w, norm1_b, qkv_w, qkv_b, out_w, out_b, norm2_w, norm2_b, up_w, up_b, down_w, down_b = block
        n, d = x.shape[1:]
        qkv = _layer_norm(x, norm1_w, norm1_b) @ qkv_w + qkv_b  # (batch, n, 3d): queries, keys, values
        queries = qkv[:, -1:, :d] if last_only else qkv[:, :, :d]
        heads = []
        for h in range(self.heads):
            part = slice(h * self.width, (h + 1) * self.width)
            keys = qkv[:, :, d:2 * d][:, :, part]
            scores = queries[:, :, part] @ keys.transpose(0, 2, 1) * np.float32(self.width ** -0.5) + ignore
            if not last_only:
                scores += self.future[:n, :n]  # causal: position i sees 0..i
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            heads.append((scores / scores.sum(axis=-1, keepdims=True)) @ qkv[:, :, 2 * d:][:, :, part])
        attended = (heads[0] if self.heads == 1 else np.concatenate(heads, axis=-1)) @ out_w + out_b
        x = (x[:, -1:] if last_only else x) + attended
        inner = np.maximum(_layer_norm(x, norm2_w, norm2_b) @ up_w + up_b, 0.0)
        return x + inner @ down_w + down_b


_IGNORED = np.float32(-1e9)
"""Added to the attention score of a padded key: its weight underflows to exactly zero."""


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * weight + bias


class SequenceQuery:
    """One snapshot, ready for queries (not thread-safe: one per worker or evaluator)."""

    def __init__(self, snapshot: SequenceSnapshot) -> None:
        self.snapshot = snapshot
        self.version = snapshot.version
        self.max_len = snapshot.config.max_len
        self.encoder = NumpyEncoder(snapshot.state, snapshot.config)
        self.vectors = self.encoder.vectors  # (items, dim) float32, row i for index i + 1
        self.index = {item_id: i for i, item_id in enumerate(snapshot.item_ids)}
        # Catalogue row -> scoring row (-1: unknown and not projected), extended as the catalogue
        # grows. Scoring rows: the snapshot's items, then the projected ones (appended).
        self._rows = np.zeros(0, dtype=np.intp)
        self._generation = -1
        self._scoring = self.vectors
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
        rows = self._catalogue_rows(catalog)
        # scoring items × users: this orientation is about twice as fast as users × items
        by_item = self._scoring @ self.encoder.queries([indexed[n] for n in known]).T
        in_snapshot = rows >= 0
        for user, n in zip(by_item.T, known, strict=True):
            scores = np.full(rows.size, user.min() if user.size else 0.0, dtype=np.float32)
            scores[in_snapshot] = user[rows[in_snapshot]]
            result[n] = scores
        return result

    def prepare(self, catalog: ItemCatalog) -> None:
        """Map the catalogue's rows to scoring rows now, fitting the projection of unknown items
        (about 40 ms on 10k items), so the first query after a swap does not pay for it.

        Safe in a loading thread while the catalogue grows: rows added meanwhile are mapped by
        the next query, and if rows moved, the generation recorded first makes it map all again.
        """
        self._catalogue_rows(catalog)

    def _indices(self, recent: Sequence[ItemId]) -> list[int]:
        return [self.index[item_id] + 1 for item_id in recent if item_id in self.index][-self.max_len:]

    def _catalogue_rows(self, catalog: ItemCatalog) -> np.ndarray:
        generation, n = catalog.generation, len(catalog)  # the generation first (see prepare)
        if generation != self._generation:  # rows moved: map them all again
            self._rows, self._generation = np.zeros(0, dtype=np.intp), generation
            self._scoring, self._projection = self.vectors, None
        if self._rows.size < n:  # new rows are appended: map only those
            start = self._rows.size
            added = np.asarray([self.index.get(item_id, -1) for item_id in catalog.item_ids(range(start, n))],
                               dtype=np.intp)
            unknown = np.flatnonzero(added < 0)
            if unknown.size:
                if self._projection is None:
                    self._projection = fit_projection(catalog, self.index, self.vectors)
                if self._projection is not None:
                    projected = with_bias(catalog.matrix()[start + unknown]) @ self._projection
                    added[unknown] = len(self._scoring) + np.arange(unknown.size)
                    self._scoring = np.vstack((self._scoring, projected.astype(np.float32)))
            self._rows = np.concatenate((self._rows, added))
        return self._rows[:n]


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
