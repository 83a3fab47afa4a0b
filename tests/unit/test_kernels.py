"""The compiled kernels against plain numpy statements of what they compute."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.models.kernels import NO_FOLLOWERS, all_finite, fuse_many, fuse_top_k, score_range


def reference_fusion(mf: np.ndarray, mf_weight: float, covisit_rows: np.ndarray, covisit_weights: np.ndarray,
                     covisit_weight: float, trending: np.ndarray, trending_high: float, trending_weight: float,
                     masked: np.ndarray, k: int, sequence: np.ndarray,
                     sequence_weight: float) -> tuple[np.ndarray, list[int], np.ndarray]:
    """The fusion written out in numpy: scale, weigh, sum, mask, stable sort, drop scores <= 0.

    Returns every row's fused score, the top ``k`` rows and each signal's contribution per row.
    """
    n = trending.size
    total = np.zeros(n)
    contributions = np.full((n, 4), -1.0)  # per signal, -1 when unused
    signals = [(mf_weight, mf.astype(np.float64) if mf.size == n else None, None),
               (covisit_weight, np.bincount(covisit_rows, weights=covisit_weights, minlength=n), None),
               (trending_weight, trending, trending_high if trending_high > 0 else None),
               (sequence_weight, sequence.astype(np.float64) if sequence.size == n else None, None)]
    for signal, (weight, scores, given_high) in enumerate(signals):
        if weight > 0 and scores is not None:
            low = min(scores.min(), 0.0)
            high = scores.max() if given_high is None else given_high
            if high - low > 1e-300:
                contributions[:, signal] = weight * (scores - low) / (high - low)
                total += contributions[:, signal]
    total[masked] = -np.inf
    return total, [row for row in np.argsort(-total, kind="stable") if total[row] > 0][:k], contributions


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 40), st.integers(0, 12), st.data())
def test_fusion_equals_its_numpy_statement(n: int, k: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    with_mf = data.draw(st.booleans())
    mf = rng.normal(size=n).astype(np.float32) if with_mf else np.zeros(0, dtype=np.float32)
    pairs = data.draw(st.integers(0, 3 * n))
    covisit_rows = rng.integers(0, n, pairs).astype(np.intp)
    covisit_weights = rng.integers(1, 4, pairs).astype(np.float64)  # small integers: ties happen
    trending = rng.integers(0, 3, n).astype(np.float64)
    masked = rng.integers(0, n, data.draw(st.integers(0, n))).astype(np.intp)
    with_sequence = data.draw(st.booleans())
    sequence = rng.normal(size=n).astype(np.float32) if with_sequence else np.zeros(0, dtype=np.float32)
    weights = [data.draw(st.sampled_from([0.0, 0.5, 1.0])) for _ in range(4)]
    trending_high = data.draw(st.sampled_from([0.0, 5.0]))  # 0: its own maximum; 5: a catalogue-wide one
    args = (mf, weights[0], covisit_rows, covisit_weights, weights[1], trending, trending_high, weights[2], masked, k,
            sequence, weights[3])

    rows, scores, sources = fuse_top_k(mf, weights[0], score_range(mf), covisit_rows, covisit_weights, NO_FOLLOWERS,
                                       *args[4:11], weights[3], score_range(sequence))
    expected_total, expected_rows, contributions = reference_fusion(*args)

    # The same list up to rounding: rows whose fused scores differ in the last bits may swap.
    assert len(rows) == len(expected_rows) and len(set(rows.tolist())) == len(rows)
    np.testing.assert_allclose(expected_total[rows], expected_total[expected_rows], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(scores, expected_total[expected_rows], rtol=1e-9, atol=1e-12)
    for row, source in zip(rows.tolist(), sources.tolist(), strict=True):  # the largest contribution
        assert contributions[row, source] >= contributions[row].max() - 1e-9


def test_initial_vectors_equal_their_numpy_statement_bit_for_bit() -> None:
    import hashlib
    import math

    from streamrec.models.online_mf import init_vector

    for n in range(2_000):
        key, dim, std = f"user:{n}", (4, 7, 32)[n % 3], (0.1, 0.37)[n % 2]
        digest = hashlib.shake_256(f"3\x1f{key}".encode()).digest(4 * dim)
        unit = (np.frombuffer(digest, dtype="<u4").astype(np.float64) + 0.5) / 2.0**32
        expected = ((2.0 * unit - 1.0) * (math.sqrt(3.0) * std)).astype(np.float32)
        assert init_vector(key, dim, std, seed=3).tobytes() == expected.tobytes()


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 30), st.booleans(), st.data())
def test_followers_read_in_place_fuse_as_the_same_pairs_gathered(n: int, negative: bool, data: st.DataObject) -> None:
    from streamrec.models.followers import FollowerPool

    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    pool = FollowerPool(n)
    for row in range(n):  # each item follows a few others
        items = np.unique(rng.integers(0, n, rng.integers(0, n)))
        weights = rng.integers(-2 if negative else 1, 4, items.size).astype(np.float64)  # ties happen
        pool.set(row, items.astype(np.intp), weights)
    followed = rng.integers(0, n, rng.integers(0, 6)).astype(np.intp)
    pairs = rng.integers(0, n, rng.integers(0, 10)).astype(np.intp)
    pair_weights = rng.integers(1, 4, pairs.size).astype(np.float64)
    mf = rng.normal(size=n).astype(np.float32)
    trending = rng.integers(0, 3, n).astype(np.float64)
    masked = rng.integers(0, n, rng.integers(0, n)).astype(np.intp)
    common = (1.0, trending, 0.0, 0.5, masked, 5, np.zeros(0, dtype=np.float32), 0.0, (0.0, 0.0))

    limit = data.draw(st.integers(0, n))
    in_place = fuse_top_k(mf, 1.0, score_range(mf), pairs, pair_weights, pool.of(followed, limit), *common)
    follower_rows, follower_weights = pool.gather(followed, limit)
    gathered = fuse_top_k(mf, 1.0, score_range(mf), np.concatenate((pairs, follower_rows)),
                          np.concatenate((pair_weights, follower_weights)), NO_FOLLOWERS, *common)

    for got, expected in zip(in_place, gathered, strict=True):
        np.testing.assert_array_equal(got, expected)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.integers(1, 6), st.integers(0, 8), st.data())
def test_a_batch_of_lists_fuses_as_each_list_alone(n: int, users: int, k: int, data: st.DataObject) -> None:
    from streamrec.models.followers import FollowerPool

    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    pool = FollowerPool(n)
    for row in range(n):
        items = np.unique(rng.integers(0, n, rng.integers(0, n)))
        pool.set(row, items.astype(np.intp), rng.integers(1, 4, items.size).astype(np.float64))
    limit = data.draw(st.integers(0, n))
    trending = rng.integers(0, 3, n).astype(np.float64)
    with_mf, with_sequence = data.draw(st.booleans()), data.draw(st.booleans())
    mf = rng.normal(size=(users, n if with_mf else 0)).astype(np.float32)
    sequence = rng.normal(size=(users, n if with_sequence else 0)).astype(np.float32)
    weights = rng.choice([0.0, 0.5, 1.0], size=(4, users))
    pairs = [rng.integers(0, n, rng.integers(0, 10)).astype(np.intp) for _ in range(users)]
    pair_weights = [rng.integers(1, 4, p.size).astype(np.float64) for p in pairs]
    followed = [rng.integers(0, n, rng.integers(0, 4)).astype(np.intp) for _ in range(users)]
    masked = [rng.integers(0, n, rng.integers(0, n)).astype(np.intp) for _ in range(users)]

    def bounds(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(([0], np.cumsum([p.size for p in parts]))).astype(np.intp)

    def ranges(scores: np.ndarray) -> np.ndarray:
        return np.array([score_range(row) for row in scores]) if scores.shape[1] else np.zeros((users, 2))

    positions, scores, sources, sizes = fuse_many(
        mf, weights[0], ranges(mf), np.concatenate([np.zeros(0, np.intp), *pairs]),
        np.concatenate([np.zeros(0), *pair_weights]), bounds(pairs), pool.of(np.concatenate(followed), limit),
        bounds(followed), weights[1], trending, 0.0, weights[2], np.concatenate(masked), bounds(masked), k, sequence,
        weights[3], ranges(sequence))

    for u in range(users):
        alone = fuse_top_k(mf[u], weights[0, u], score_range(mf[u]), pairs[u], pair_weights[u],
                           pool.of(followed[u], limit), weights[1, u], trending, 0.0, weights[2, u], masked[u], k,
                           sequence[u], weights[3, u], score_range(sequence[u]))
        size = sizes[u]
        for got, expected in zip((positions[u, :size], scores[u, :size], sources[u, :size]), alone, strict=True):
            np.testing.assert_array_equal(got, expected)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0.0, -1.5, 3e38, 1e-40, np.inf, -np.inf, np.nan]), max_size=40),
       st.sampled_from([np.float32, np.float64]))
def test_all_finite_agrees_with_numpy(values: list[float], dtype: type) -> None:
    array = np.array(values, dtype=dtype)
    assert all_finite(array) == bool(np.isfinite(array).all())
