"""Content-based vectors for items that have no events yet: a map from content features to embeddings.

An item's content (categories, title, text) becomes a bag of hashed features
(:func:`content_features`); :class:`ContentMap` is a linear map from those features
to the embedding space, learnt online by least squares from every item whose
embedding the events have already shaped. A new item announced with content gets
``ContentMap.vector(features)`` at once, so the index can return it to users whose
taste matches before anybody has chosen it.

>>> features = content_features(["Comedy"], "Toy Story (1995)", None, buckets=1024)
>>> len(features), round(sum(value * value for value in features.values()), 6)  # comedy, toy, story
(3, 1.0)
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset({"the", "a", "an", "of", "and", "in", "on", "to", "for", "with", "la", "le", "de"})


def _bucket(token: str, buckets: int) -> int:
    # Stable across processes and machines (Python's hash() is salted per process).
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little") % buckets


def content_features(categories: Iterable[str], title: str | None, text: str | None,
                     buckets: int) -> dict[int, float]:
    """Hashed bag of features: every category, and the words of title and text (unit L2 norm)."""
    tokens = {f"category:{category.strip().lower()}" for category in categories if category.strip()}
    for field in (title, text):
        if field:
            tokens.update(f"word:{word}" for word in _WORD.findall(field.lower())
                          if word not in _STOP and not word.isdigit())
    counts: dict[int, float] = {}
    for token in tokens:
        bucket = _bucket(token, buckets)
        counts[bucket] = counts.get(bucket, 0.0) + 1.0
    norm = math.sqrt(sum(value * value for value in counts.values()))
    return {bucket: value / norm for bucket, value in counts.items()} if norm else {}


class ContentMap:
    """Linear map from hashed content features to item embeddings, learnt online.

    Parameters
    ----------
    dim
        Embedding size.
    buckets
        Hashed feature space (memory: ``buckets * dim`` floats).
    learning_rate
        Step of each least-squares update.
    """

    def __init__(self, dim: int, buckets: int = 4096, learning_rate: float = 0.1) -> None:
        self.dim = dim
        self.buckets = buckets
        self.learning_rate = learning_rate
        self.weights = np.zeros((buckets, dim), dtype=np.float32)
        self.updates = 0

    def vector(self, features: dict[int, float]) -> np.ndarray:
        """The embedding the content predicts, shape ``(dim,)`` float32 (zeros without features)."""
        if not features:
            return np.zeros(self.dim, dtype=np.float32)
        rows = np.fromiter(features, dtype=np.intp, count=len(features))
        values = np.fromiter(features.values(), dtype=np.float32, count=len(features))
        return values @ self.weights[rows]

    def learn(self, features: dict[int, float], target: np.ndarray) -> None:
        """One least-squares step towards an item's learnt embedding ``target`` (non-finite is ignored)."""
        if not features or not np.isfinite(target).all():
            return
        rows = np.fromiter(features, dtype=np.intp, count=len(features))
        values = np.fromiter(features.values(), dtype=np.float32, count=len(features))
        error = np.asarray(target, dtype=np.float32) - values @ self.weights[rows]
        self.weights[rows] += self.learning_rate * values[:, None] * error[None, :]
        self.updates += 1
