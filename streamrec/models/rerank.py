"""Re-ranking a scored candidate list: diversity (MMR) and the intra-list diversity metric.

>>> vectors = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]], dtype=np.float32)
>>> mmr(np.array([0, 1, 2]), np.array([1.0, 0.95, 0.6]), vectors, 2, 0.0).tolist()
[0, 1]
>>> mmr(np.array([0, 1, 2]), np.array([1.0, 0.95, 0.6]), vectors, 2, 0.5).tolist()
[0, 2]
"""

from __future__ import annotations

import numpy as np


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    lengths = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(lengths, 1e-12)


def mmr(rows: np.ndarray, scores: np.ndarray, vectors: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """Maximal marginal relevance: the ``k`` of ``rows`` to show, in order.

    One at a time, pick the candidate maximising ``(1 - diversity) * relevance -
    diversity * (its largest cosine similarity to those already picked)``, relevance
    being ``scores`` divided by their maximum. ``diversity`` 0 keeps the order of
    ``scores`` (which must be best first); 1 ignores relevance after the first pick.
    ``vectors`` is the catalogue matrix (``rows`` index it).
    """
    take = min(k, rows.size)
    if diversity <= 0.0 or take <= 1:
        return rows[:take]
    relevance = scores / max(float(scores.max()), 1e-12)
    unit = _unit_rows(vectors[rows].astype(np.float64))
    similarity = unit @ unit.T  # (n, n)
    closest = np.full(rows.size, -1.0)  # largest similarity to a picked item (none yet: -1, no penalty)
    picked = np.zeros(rows.size, dtype=bool)
    order = []
    for _ in range(take):
        value = (1.0 - diversity) * relevance - diversity * np.maximum(closest, 0.0)
        value[picked] = -np.inf
        best = int(np.argmax(value))
        order.append(best)
        picked[best] = True
        np.maximum(closest, similarity[best], out=closest)
    return rows[order]


def intra_list_diversity(vectors: np.ndarray) -> float:
    """Mean cosine distance ``1 - cos`` over all pairs of a list's item vectors (0 for fewer than 2)."""
    n = vectors.shape[0]
    if n < 2:
        return 0.0
    unit = _unit_rows(vectors.astype(np.float64))
    similarity = unit @ unit.T
    return float((n * n - similarity.sum()) / (n * (n - 1)))  # the diagonal's n ones cancel out
