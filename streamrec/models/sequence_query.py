"""Querying a sequence-model snapshot: a user's recent items in, a score per catalogue item out.

:class:`SequenceQuery` wraps one :class:`~streamrec.models.sequence_training.SequenceSnapshot`
for the query path. Its scores come aligned with the rows of an
:class:`~streamrec.models.items.ItemCatalog`, so :func:`~streamrec.models.online_recommender.recommend`
fuses them with the online signals like any other dense signal. Items the snapshot
does not know (new since it was trained) score the snapshot's lowest, adding nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from streamrec.models.items import ItemCatalog
from streamrec.models.sequence_training import SequenceSnapshot, left_padded

ItemId = str


class SequenceQuery:
    """One snapshot, ready for queries (not thread-safe: one per worker or evaluator)."""

    def __init__(self, snapshot: SequenceSnapshot) -> None:
        self.snapshot = snapshot
        self.version = snapshot.version
        self.max_len = snapshot.config.max_len
        self.model = snapshot.model()
        with torch.no_grad():
            self.vectors = self.model.item_vectors().numpy().copy()  # (items, dim) float32
        self.index = {item_id: i for i, item_id in enumerate(snapshot.item_ids)}
        # Catalogue row -> snapshot item (-1: unknown), extended as the catalogue grows.
        self._rows = np.zeros(0, dtype=np.intp)
        self._generation = -1

    def query(self, recent: Sequence[ItemId]) -> np.ndarray | None:
        """The query vector ``(dim,)`` for a user whose recent items are ``recent`` (oldest first),
        or ``None`` when the snapshot knows none of them."""
        indices = [self.index[item_id] + 1 for item_id in recent if item_id in self.index]
        if not indices:
            return None
        with torch.inference_mode():
            return self.model.query(left_padded([indices], self.max_len))[0].numpy()

    def scores(self, recent: Sequence[ItemId], catalog: ItemCatalog) -> np.ndarray | None:
        """Every catalogue row's score for this user (float32, shape ``(len(catalog),)``), or ``None``."""
        query = self.query(recent)
        if query is None:
            return None
        by_item = self.vectors @ query
        rows = self._catalogue_rows(catalog)
        scores = np.full(rows.size, by_item.min() if by_item.size else 0.0, dtype=np.float32)
        known = rows >= 0
        scores[known] = by_item[rows[known]]
        return scores

    def _catalogue_rows(self, catalog: ItemCatalog) -> np.ndarray:
        n = len(catalog)
        if catalog.generation != self._generation:  # rows moved: map them all again
            self._rows, self._generation = np.zeros(0, dtype=np.intp), catalog.generation
        if self._rows.size < n:  # new rows are appended: map only those
            added = [self.index.get(item_id, -1) for item_id in catalog.item_ids(range(self._rows.size, n))]
            self._rows = np.concatenate((self._rows, np.asarray(added, dtype=np.intp)))
        return self._rows[:n]


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
