"""The inner loops of the per-event path, compiled with numba.

They run once per event on a handful of vectors or one pass over the
catalogue, where numpy spends more time dispatching its many small calls than
computing (measured on ML-100K: the SGD step 30 µs in numpy against a few µs
here, top-k with masking 16 µs against 3 µs; the sequence model's query 296 µs
in numpy against 129 µs with the layer norms and attention here, its matrix
products left to BLAS). Callers go through
:func:`streamrec.models.online_mf.step_stacked`,
:func:`streamrec.models.online_mf.top_rows` and
:class:`streamrec.models.sequence_query.NumpyEncoder`, which document the contracts.

Compiled code is cached on disk (``cache=True``: next to this file, or in
numba's user-wide cache directory when the package is read-only), so only the
first process after an install pays the compile time (about a second each).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit


class Followers(NamedTuple):
    """The co-visit followers of ``items`` (catalogue rows) where they lie in a pool
    (:class:`~streamrec.models.followers.FollowerPool`): item ``r``'s are ``rows`` and
    ``weights`` ``[start[r]:start[r] + size[r]]``, heaviest first; only the first ``limit`` count."""

    start: np.ndarray
    size: np.ndarray
    rows: np.ndarray
    weights: np.ndarray
    items: np.ndarray
    limit: int


NO_FOLLOWERS = Followers(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32),
                         np.zeros(0), np.zeros(0, dtype=np.intp), 0)


SOURCES = ("ann", "co-visit", "trending", "sequence")
"""What each code in :func:`fuse_top_k`'s ``sources`` means (the names recommendations carry)."""


@njit(cache=True)
def sgd_step_kernel(user: np.ndarray, item: np.ndarray, items: np.ndarray, negative_rows: np.ndarray,
                    weight: float, lr: float, user_lr_multiplier: float, regularization: float, max_norm: float,
                    item_bias: bool, isgd: bool) -> np.ndarray:  # pragma: no cover
    """One SGD step on a user, an item and the negatives ``items[negative_rows]`` (all float32).

    Returns the updated ``[user, item, *negatives]``, shape ``(m + 2, d)``; the inputs are not
    modified. ``weight`` and ``lr`` must already be clipped to finite values >= 0.
    """
    n, d = negative_rows.shape[0] + 2, user.shape[0]
    vectors = np.empty((n, d), dtype=np.float32)
    vectors[0] = user
    vectors[1] = item
    for r in range(n - 2):
        vectors[r + 2] = items[negative_rows[r]]
    if item_bias:
        vectors[0, d - 1] = 1.0
    # 1. A non-finite or overlong vector (its square norm fails the test, NaN included) is
    #    sanitised first: non-finite components to 0, rows clipped to max_norm.
    longest_allowed = (1.0 + 1e-4) * max_norm * max_norm + (1.0 if item_bias else 0.0)
    valid = True
    for r in range(n):
        squared = 0.0
        for j in range(d):
            squared += float(vectors[r, j]) * float(vectors[r, j])
        if not squared <= longest_allowed:
            valid = False
    if not valid:
        for r in range(n):
            squared = 0.0
            for j in range(d):
                value = float(vectors[r, j])
                if not math.isfinite(value):
                    value = 0.0
                value = min(max(value, -max_norm), max_norm)
                vectors[r, j] = value
                squared += value * value
            if squared > max_norm * max_norm:
                scale = max_norm / math.sqrt(squared)
                for j in range(d):
                    vectors[r, j] *= scale
    # 2. Scores of the item and the negatives (dot products with the user), and the derivative
    #    of the event's objective w.r.t. each, times lr. BPR: mean over negatives of
    #    log sigmoid(item - negative). ISGD: (1 - item)^2 plus the mean of negative^2.
    m = n - 2
    scores = np.zeros(n - 1)
    for r in range(1, n):
        total = 0.0
        for j in range(d):
            total += float(vectors[0, j]) * float(vectors[r, j])
        scores[r - 1] = total
    steps = np.zeros(n - 1)
    if isgd:
        steps[0] = lr * weight * (1.0 - scores[0])
        for r in range(1, n - 1):
            steps[r] = -lr * scores[r] / m
    elif m > 0:
        for r in range(1, n - 1):
            x = scores[r] - scores[0]  # sigmoid(x) without overflow
            sigmoid = 1.0 / (1.0 + math.exp(-x)) if x >= 0.0 else math.exp(x) / (1.0 + math.exp(x))
            steps[r] = -lr * weight / m * sigmoid
            steps[0] -= steps[r]
    # 3. Shrink every vector by the L2 penalty and move it along its gradient:
    #    user += sum_r multiplier * steps[r] * vector[r];  vector[r] += steps[r] * user.
    shrink = 1.0 - min(1.0, lr * regularization)
    updated = np.empty((n, d), dtype=np.float32)
    for j in range(d):
        user = float(vectors[0, j])
        total = shrink * user
        for r in range(1, n):
            total += user_lr_multiplier * steps[r - 1] * float(vectors[r, j])
            updated[r, j] = shrink * float(vectors[r, j]) + steps[r - 1] * user
        updated[0, j] = total
    if item_bias:
        updated[0, d - 1] = 1.0
    # 4. Clip every row to max_norm: no input grows a vector unboundedly.
    for r in range(n):
        squared = 0.0
        for j in range(d):
            squared += float(updated[r, j]) * float(updated[r, j])
        if squared > max_norm * max_norm:
            scale = max_norm / math.sqrt(squared)
            for j in range(d):
                updated[r, j] = float(updated[r, j]) * scale
    return updated


@njit(cache=True)
def all_finite(values: np.ndarray) -> bool:  # pragma: no cover
    """Whether every number of the 1-D array ``values`` is finite.

    ``np.isfinite(values).all()`` in one call: 0.2 against 1.4 µs on a 32-component vector
    (two numpy calls and a temporary array). Every item record a worker decodes is checked.
    """
    for value in values:
        if not math.isfinite(value):
            return False
    return True


@njit(cache=True)
def uniform_vector_kernel(words: np.ndarray, scale: float) -> np.ndarray:  # pragma: no cover
    """``((2 (w + 0.5) / 2**32 - 1) * scale`` per 32-bit word ``w``, in float64, as float32.

    The initial vectors' last step in one call: numpy took a call per operation (4.9 against
    2.3 µs per vector with the hash; a new user's first event needs one); the arithmetic is
    the same, so are the bits (checked on 200k vectors).
    """
    out = np.empty(words.shape[0], dtype=np.float32)
    for i in range(words.shape[0]):
        unit = (float(words[i]) + 0.5) / 4294967296.0
        out[i] = np.float32((2.0 * unit - 1.0) * scale)
    return out


@njit(cache=True)
def top_k_kernel(scores: np.ndarray, masked: np.ndarray, k: int) -> np.ndarray:  # pragma: no cover
    """Rows of the ``k`` largest scores above ``-inf`` (NaN never), best first, ties by lowest row.

    The ``masked`` rows are set to ``-inf`` first (in place), so they are never returned.
    One pass with a sorted buffer of ``k``: O(n) for the usual k << n.
    """
    n = scores.shape[0]
    for row in masked:
        if 0 <= row < n:  # compiled code does not check bounds
            scores[row] = -np.inf
    k = max(0, min(k, n))
    rows = np.empty(k, dtype=np.intp)
    best = np.empty(k, dtype=np.float64)
    size, floor = 0, -np.inf if k > 0 else np.inf
    for row in range(n):
        value = float(scores[row])
        if value > floor:
            size, floor = _keep(rows, best, size, row, value)
    return rows[:size]


@njit(cache=True, inline="always")
def _keep(rows: np.ndarray, best: np.ndarray, size: int, row: int, value: float) -> tuple[int, float]:  # pragma: no cover
    """Insert ``(row, value)`` into the best-first buffers holding ``size`` entries; returns the new
    size and the floor a later value must beat strictly (so an earlier row keeps a tie).

    Callers test ``value > floor`` before calling: one comparison per row in the usual case
    (a list over 10k items ranked in 5 us, against 12 with the full test inline).
    """
    k = rows.shape[0]
    place = size if size < k else k - 1
    while place > 0 and best[place - 1] < value:
        best[place] = best[place - 1]
        rows[place] = rows[place - 1]
        place -= 1
    best[place] = value
    rows[place] = row
    size = min(size + 1, k)
    return size, best[k - 1] if size == k else -np.inf


@njit(cache=True)
def set_followers_kernel(start: np.ndarray, size: np.ndarray, room: np.ndarray, pool_rows: np.ndarray,
                         pool_weights: np.ndarray, end: int, row: int, items: np.ndarray, weights: np.ndarray,
                         first: int) -> tuple[int, int]:  # pragma: no cover
    """Set ``row``'s weight to ``weights[i]`` among the followers of ``items[i]``, for ``i`` from ``first``.

    An item's followers fill ``pool_*[start:start + size]`` of its ``room`` slots, heaviest
    first (ties: lowest row first), so a reader can take the heaviest few; a full
    segment moves to ``end`` with twice the room. Returns ``(i, end)``: ``i`` is
    ``len(items)`` when done, else the first item whose segment did not fit before the
    pool's end (the caller repacks the pool and calls again from ``i``).
    """
    for i in range(first, items.shape[0]):
        item = items[i]
        begin, count = start[item], size[item]
        slot = -1
        for j in range(begin, begin + count):
            if pool_rows[j] == row:
                slot = j
                break
        if slot < 0:
            if count == room[item]:
                grown = max(4, 2 * count)
                if end + grown > pool_rows.shape[0]:
                    return i, end
                pool_rows[end:end + count] = pool_rows[begin:begin + count]
                pool_weights[end:end + count] = pool_weights[begin:begin + count]
                start[item] = begin = end
                room[item] = grown
                end += grown
            slot = begin + count
            pool_rows[slot] = row
            size[item] = count = count + 1
        pool_weights[slot] = weights[i]
        _reorder(pool_rows, pool_weights, begin, begin + count, slot)
    return items.shape[0], end


@njit(cache=True, inline="always")
def _reorder(rows: np.ndarray, weights: np.ndarray, begin: int, end: int, slot: int) -> None:  # pragma: no cover
    """Move the entry at ``slot`` to its place in ``[begin, end)``, sorted heaviest first, ties by row."""
    row, weight = rows[slot], weights[slot]
    while slot > begin and (weights[slot - 1] < weight or (weights[slot - 1] == weight and rows[slot - 1] > row)):
        rows[slot], weights[slot] = rows[slot - 1], weights[slot - 1]
        slot -= 1
    while slot + 1 < end and (weights[slot + 1] > weight or (weights[slot + 1] == weight and rows[slot + 1] < row)):
        rows[slot], weights[slot] = rows[slot + 1], weights[slot + 1]
        slot += 1
    rows[slot], weights[slot] = row, weight


@njit(cache=True)
def remove_followers_kernel(start: np.ndarray, size: np.ndarray, pool_rows: np.ndarray, pool_weights: np.ndarray,
                            row: int, items: np.ndarray) -> None:  # pragma: no cover
    """Drop ``row`` from the followers of each of ``items`` (the ones after it move up: the order stays)."""
    for item in items:
        begin, count = start[item], size[item]
        for j in range(begin, begin + count):
            if pool_rows[j] == row:
                last = begin + count - 1
                pool_rows[j:last] = pool_rows[j + 1:last + 1]
                pool_weights[j:last] = pool_weights[j + 1:last + 1]
                size[item] = count - 1
                break


@njit(cache=True)
def repack_followers_kernel(start: np.ndarray, size: np.ndarray, room: np.ndarray, pool_rows: np.ndarray,
                            pool_weights: np.ndarray, new_rows: np.ndarray,
                            new_weights: np.ndarray) -> int:  # pragma: no cover
    """Copy every non-empty segment, room kept, to the front of ``new_*`` in item order; free
    the empty ones. Returns the new end (the caller made ``new_*`` large enough)."""
    end = 0
    for item in range(start.shape[0]):
        count = size[item]
        if count == 0:
            start[item] = room[item] = 0
            continue
        begin = start[item]
        new_rows[end:end + count] = pool_rows[begin:begin + count]
        new_weights[end:end + count] = pool_weights[begin:begin + count]
        start[item] = end
        end += room[item]
    return end


@njit(cache=True)
def gather_followers_kernel(start: np.ndarray, size: np.ndarray, pool_rows: np.ndarray, pool_weights: np.ndarray,
                            items: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """The ``limit`` heaviest followers of each of ``items`` in turn, as one ``(rows, weights)`` pair of arrays."""
    total = 0
    for item in items:
        total += min(size[item], limit)
    rows = np.empty(total, dtype=np.intp)
    weights = np.empty(total, dtype=np.float64)
    at = 0
    for item in items:
        begin, count = start[item], min(size[item], limit)
        rows[at:at + count] = pool_rows[begin:begin + count]
        weights[at:at + count] = pool_weights[begin:begin + count]
        at += count
    return rows, weights


@njit(cache=True)
def _scaling(value_range: tuple[float, float], weight: float, used: bool) -> tuple[float, float]:  # pragma: no cover
    """``(factor, low)`` that min-max scale values in ``value_range`` (highest, lowest) to ``[0, weight]``
    (0 kept as the floor when all are positive); factor 0: skipped, as unused or all equal."""
    high, low = value_range[0], min(value_range[1], 0.0)
    if not (weight > 0.0 and used and high - low > 1e-300):
        return 0.0, 0.0
    return weight / (high - low), low


@njit(cache=True)
def fuse_top_k(mf: np.ndarray, mf_weight: float, mf_range: tuple[float, float], covisit_rows: np.ndarray,
               covisit_weights: np.ndarray, followers: Followers, covisit_weight: float, trending: np.ndarray,
               trending_high: float, trending_weight: float, masked: np.ndarray, k: int, sequence: np.ndarray,
               sequence_weight: float,
               sequence_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """Fuse four signals over ``n`` candidates; the top ``k`` ``(positions, scores, sources)``, best first.

    ``sources`` names, per returned candidate, the signal that added most to its score:
    0 embeddings, 1 co-visits, 2 trending, 3 the sequence model (see :data:`SOURCES`).

    Candidates are positions ``0..n-1`` (the whole catalogue in row order, or a candidate
    set). ``trending`` has one score per candidate (its length is ``n``); ``mf`` and
    ``sequence`` too, or are empty, and their ``*_range`` is their ``(highest, lowest)`` score
    (see :func:`score_range`). Co-visits come as ``(position, weight)`` pairs, positions may
    repeat, and as the :class:`Followers` of some items, read in place from their pool. Each
    signal is scaled to at most 1 (divided by its maximum, or min-max scaled
    when it has negative scores), weighted and summed; trending is divided by ``trending_high``
    (its maximum over the whole catalogue) when that is above 0. A signal whose scores (nearly)
    all agree says nothing and is skipped. ``masked`` positions and scores of 0 or less are
    never returned; ties go to the lowest position.
    """
    n = trending.shape[0]
    return _fuse(mf, mf_weight, mf_range, covisit_rows, covisit_weights, followers, covisit_weight, trending,
                 trending_high, trending_weight, masked, k, sequence, sequence_weight, sequence_range, np.zeros(n),
                 np.empty(n))


@njit(cache=True)
def _fuse(mf: np.ndarray, mf_weight: float, mf_range: tuple[float, float], covisit_rows: np.ndarray,
          covisit_weights: np.ndarray, followers: Followers, covisit_weight: float, trending: np.ndarray,
          trending_high: float, trending_weight: float, masked: np.ndarray, k: int, sequence: np.ndarray,
          sequence_weight: float, sequence_range: tuple[float, float], covisits: np.ndarray,
          total: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """:func:`fuse_top_k` with its work arrays given: ``covisits`` all zeros (the co-visited rows
    are left non-zero), ``total`` any content (overwritten); both ``n`` long."""
    n = trending.shape[0]
    mf_factor, mf_low = _scaling(mf_range, mf_weight, mf.shape[0] == n)
    sequence_factor, sequence_low = _scaling(sequence_range, sequence_weight, sequence.shape[0] == n)
    # Min-max shifts are the same for every row, so they are added to the returned scores only.
    offset = -mf_low * mf_factor - sequence_low * sequence_factor
    covisit_factor = trending_factor = 0.0  # 0: the signal is not used
    if covisit_weight > 0.0:
        high = _add_covisits(covisits, covisit_rows, covisit_weights, followers)
        if high > 1e-300:
            covisit_factor = covisit_weight / high
    if trending_weight > 0.0:
        high = trending_high
        if not high > 0.0:
            for row in range(n):
                high = max(high, float(trending[row]))
        if high > 1e-300:
            trending_factor = trending_weight / high
    if mf_factor == 0.0 and sequence_factor == 0.0 and covisit_factor == 0.0 and trending_factor == 0.0:
        return np.zeros(0, dtype=np.intp), np.zeros(0), np.zeros(0, dtype=np.int8)
    # One pass sums the dense signals, then top_k_kernel ranks. (One list over 10k items, caches
    # warm: 24 us with compiled min/max scans and the full test per row in the ranking, 16 so;
    # one pass doing both was slower.) An unused signal adds 0.0, which changes no sum, and its
    # test is the same for every row, so the compiler takes it out of the loop.
    with_mf, with_sequence = mf_factor != 0.0, sequence_factor != 0.0
    for row in range(n):
        personal = float(mf[row]) * mf_factor if with_mf else 0.0
        if with_sequence:
            personal += float(sequence[row]) * sequence_factor
        total[row] = (personal + covisits[row] * covisit_factor) + float(trending[row]) * trending_factor
    rows = top_k_kernel(total, masked, k)
    size = rows.shape[0]
    scores = np.empty(size)
    sources = np.empty(size, dtype=np.int8)
    kept = 0
    for i in range(size):
        row = rows[i]
        score = total[row] + offset
        if score > 0.0:  # no signal says anything for the rest: never pad a list with them
            rows[kept] = row
            scores[kept] = score
            # The signal that added most to the score (see SOURCES).
            top, sources[kept] = (float(mf[row]) - mf_low) * mf_factor if mf_factor > 0.0 else -1.0, 0
            if covisit_factor > 0.0 and covisits[row] * covisit_factor > top:
                top, sources[kept] = covisits[row] * covisit_factor, 1
            if trending_factor > 0.0 and float(trending[row]) * trending_factor > top:
                top, sources[kept] = float(trending[row]) * trending_factor, 2
            if sequence_factor > 0.0 and (float(sequence[row]) - sequence_low) * sequence_factor > top:
                sources[kept] = 3
            kept += 1
    return rows[:kept], scores[:kept], sources[:kept]


@njit(cache=True)
def fuse_many(mf: np.ndarray, mf_weights: np.ndarray, mf_ranges: np.ndarray, covisit_rows: np.ndarray,
              covisit_weights: np.ndarray, covisit_bounds: np.ndarray, followers: Followers,
              follower_bounds: np.ndarray, covisit_user_weights: np.ndarray, trending: np.ndarray,
              trending_high: float, trending_weights: np.ndarray, masked: np.ndarray, masked_bounds: np.ndarray,
              k: int, sequence: np.ndarray, sequence_weights: np.ndarray,
              sequence_ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """:func:`fuse_top_k` for each of a batch's users in one call: ``(positions, scores, sources, sizes)``,
    user ``u``'s list in row ``u`` of the first three, ``sizes[u]`` long.

    The candidates and ``trending`` are shared. Per user ``u``: ``mf[u]`` and ``sequence[u]``
    (rows of 2-D arrays with ``n`` columns, or none) with their weights and ``(highest, lowest)``
    ranges; the co-visit pairs ``[covisit_bounds[u]:covisit_bounds[u + 1]]`` of ``covisit_*``,
    the followers of ``followers.items[follower_bounds[u]:follower_bounds[u + 1]]`` and the
    masked positions ``masked[masked_bounds[u]:masked_bounds[u + 1]]``. One call instead of
    one per list saves the per-call cost of passing a dozen arguments from Python.
    """
    users = mf_weights.shape[0]
    positions = np.empty((users, k), dtype=np.intp)
    scores = np.empty((users, k))
    sources = np.empty((users, k), dtype=np.int8)
    sizes = np.empty(users, dtype=np.intp)
    no_scores = np.zeros(0, dtype=np.float32)
    n = trending.shape[0]
    covisits, total = np.zeros(n), np.empty(n)  # shared by the users: a fresh pair costs each list a few us
    for u in range(users):
        own = Followers(followers.start, followers.size, followers.rows, followers.weights,
                        followers.items[follower_bounds[u]:follower_bounds[u + 1]], followers.limit)
        pairs = covisit_rows[covisit_bounds[u]:covisit_bounds[u + 1]]
        rows, fused, signals = _fuse(
            mf[u] if mf.shape[1] > 0 else no_scores, mf_weights[u], (mf_ranges[u, 0], mf_ranges[u, 1]), pairs,
            covisit_weights[covisit_bounds[u]:covisit_bounds[u + 1]], own, covisit_user_weights[u],
            trending, trending_high, trending_weights[u], masked[masked_bounds[u]:masked_bounds[u + 1]], k,
            sequence[u] if sequence.shape[1] > 0 else no_scores, sequence_weights[u],
            (sequence_ranges[u, 0], sequence_ranges[u, 1]), covisits, total)
        covisits[pairs] = 0.0  # back to all zeros for the next user, row by row
        for item in own.items:
            begin = own.start[item]
            covisits[own.rows[begin:begin + min(own.size[item], own.limit)]] = 0.0
        size = rows.shape[0]
        positions[u, :size] = rows
        scores[u, :size] = fused
        sources[u, :size] = signals
        sizes[u] = size
    return positions, scores, sources, sizes


@njit(cache=True)
def _add_covisits(covisits: np.ndarray, rows: np.ndarray, weights: np.ndarray,
                  followers: Followers) -> float:  # pragma: no cover
    """Add the co-visit pairs' and the followers' weights to ``covisits`` (see :func:`fuse_top_k`);
    returns the highest sum.

    The pairs and followers lie at random rows, so the cost is in memory accesses and this
    is the one pass over them: with weights >= 0 (as co-visits are) the highest running sum
    is the highest sum; only a negative weight costs a second pass.
    """
    start, size, pool_rows, pool_weights, items, limit = followers
    high, negative = _add_span(covisits, rows, weights, 0, rows.shape[0], 0.0, False)
    for item in items:
        begin = start[item]
        high, negative = _add_span(covisits, pool_rows, pool_weights, begin, begin + min(size[item], limit), high,
                                   negative)
    if negative:
        high = 0.0
        for i in range(rows.shape[0]):
            high = max(high, covisits[rows[i]])
        for item in items:
            for i in range(start[item], start[item] + min(size[item], limit)):
                high = max(high, covisits[pool_rows[i]])
    return high


@njit(cache=True, inline="always")
def _add_span(covisits: np.ndarray, rows: np.ndarray, weights: np.ndarray, begin: int, end: int, high: float,
              negative: bool) -> tuple[float, bool]:  # pragma: no cover
    for i in range(begin, end):
        weight = weights[i]
        covisits[rows[i]] += weight
        high = max(high, covisits[rows[i]])
        negative = negative or weight < 0.0
    return high, negative


def score_range(scores: np.ndarray) -> tuple[float, float]:
    """``(highest, lowest)`` of ``scores`` for :func:`fuse_top_k` (``(0, 0)`` when empty)."""
    return (float(scores.max()), float(scores.min())) if scores.size else (0.0, 0.0)


_REDUCE = {"reassoc", "contract"}
"""Fast-math flags that let sums vectorise; not ``ninf``/``nnan``, which the softmax's maximum must not assume."""


@njit(cache=True, fastmath=_REDUCE)
def layer_norm_kernel(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Layer normalisation of each row of ``x`` ``(rows, d)`` float32 (epsilon 1e-5, as torch's)."""
    rows, d = x.shape
    out = np.empty_like(x)
    for i in range(rows):
        mean = np.float32(0.0)
        for j in range(d):
            mean += x[i, j]
        mean /= d
        variance = np.float32(0.0)
        for j in range(d):
            centred = x[i, j] - mean
            variance += centred * centred
        scale = np.float32(1.0) / np.sqrt(variance / d + np.float32(1e-5))
        for j in range(d):
            out[i, j] = (x[i, j] - mean) * scale * weight[j] + bias[j]
    return out


@njit(cache=True, fastmath=_REDUCE)
def attention_kernel(qkv: np.ndarray, first: np.ndarray, heads: int, last_only: bool) -> np.ndarray:  # pragma: no cover
    """Causal scaled dot-product attention of ``qkv`` ``(batch, n, 3 d)`` (queries, keys, values).

    Position ``i`` of sequence ``b`` attends to positions ``first[b]..i`` (the ones before
    ``first[b]`` are padding: never attended to, their own outputs are zero). Returns
    ``(batch, n, d)``, or only the last position ``(batch, 1, d)`` with ``last_only``.
    """
    batch, n, three_d = qkv.shape
    d = three_d // 3
    width = d // heads
    scale = np.float32(1.0 / math.sqrt(width))
    start = n - 1 if last_only else 0
    out = np.zeros((batch, n - start, d), dtype=np.float32)
    weights = np.empty(n, dtype=np.float32)
    query = np.empty(width, dtype=np.float32)
    keys = np.empty((n, width), dtype=np.float32)  # one head's, contiguous: the loops below vectorise
    values = np.empty((n, width), dtype=np.float32)
    row = np.empty(width, dtype=np.float32)
    for b in range(batch):
        low = first[b]
        for h in range(heads):
            q0, k0, v0 = h * width, d + h * width, 2 * d + h * width
            for j in range(low, n):
                for c in range(width):
                    keys[j, c] = qkv[b, j, k0 + c]
                    values[j, c] = qkv[b, j, v0 + c]
            for i in range(max(start, low), n):
                for c in range(width):
                    query[c] = qkv[b, i, q0 + c] * scale
                for j in range(low, i + 1):
                    dot = np.float32(0.0)
                    for c in range(width):
                        dot += query[c] * keys[j, c]
                    weights[j] = dot
                top = weights[low]
                for j in range(low + 1, i + 1):
                    top = max(top, weights[j])
                total = np.float32(0.0)
                for j in range(low, i + 1):
                    weights[j] = np.exp(weights[j] - top)
                    total += weights[j]
                row[:] = 0.0
                for j in range(low, i + 1):
                    weight = weights[j] / total
                    for c in range(width):
                        row[c] += weight * values[j, c]
                for c in range(width):
                    out[b, i - start, q0 + c] = row[c]
    return out


def _compile_at_import() -> None:
    """Compile (or load from the cache) every kernel for the dtypes the model passes, now:
    a worker must not stall for a second on its first event."""
    vectors = np.zeros((3, 2), dtype=np.float32)
    rows = np.zeros(1, dtype=np.intp)
    sgd_step_kernel(vectors[0], vectors[1], vectors, rows, 1.0, 0.1, 1.0, 0.0, 1.0, True, False)
    trending = np.ones(2)
    trending.flags.writeable = False  # the catalogue's cached popularity is read-only
    dense = np.ones(2, dtype=np.float32)
    spread = (1.0, 0.0)
    batch, ranges, bounds, users = np.ones((1, 2), dtype=np.float32), np.zeros((1, 2)), np.zeros(2, np.intp), np.ones(1)
    for popularity in (trending, np.ones(2)):
        fuse_top_k(dense, 1.0, spread, rows, np.ones(1), NO_FOLLOWERS, 1.0, popularity, 0.0, 1.0, rows, 1, dense, 1.0,
                   spread)
        fuse_many(batch, users, ranges, rows, np.ones(1), bounds, NO_FOLLOWERS, bounds, users, popularity, 0.0, users,
                  rows, bounds, 1, batch, users, ranges)
    top_k_kernel(np.ones(2, dtype=np.float32), rows, 1)
    followers = [np.zeros(2, dtype=np.int64) for _ in range(3)]
    pool_rows, pool_weights = np.zeros(8, dtype=np.int32), np.zeros(8)
    set_followers_kernel(*followers, pool_rows, pool_weights, 0, 1, rows, np.ones(1), 0)
    remove_followers_kernel(followers[0], followers[1], pool_rows, pool_weights, 1, rows)
    repack_followers_kernel(*followers, pool_rows, pool_weights, pool_rows.copy(), pool_weights.copy())
    gather_followers_kernel(followers[0], followers[1], pool_rows, pool_weights, rows, 1)
    layer_norm_kernel(vectors, vectors[0], vectors[0])
    for last_only in (False, True):
        attention_kernel(np.ones((1, 2, 6), dtype=np.float32), rows, 1, last_only)


_compile_at_import()
