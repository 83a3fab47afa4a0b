"""The replica's pool of co-visit followers against a dict of dicts doing the same."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.models import followers
from streamrec.models.followers import FollowerPool

ROWS = 12

operations = st.lists(st.tuples(st.booleans(), st.integers(0, ROWS - 1),
                                st.lists(st.integers(0, ROWS - 1), max_size=8, unique=True),
                                st.floats(0.0, 4.0)), max_size=120)


@settings(max_examples=80, deadline=None)
@given(operations, st.integers(1, 64))
def test_the_pool_holds_what_a_dict_of_dicts_would_through_moves_and_repacks(
        steps: list[tuple[bool, int, list[int], float]], first_pool: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(followers, "_FIRST_POOL", first_pool)  # small: segments move and the pool repacks often
        pool = FollowerPool(rows=ROWS // 2)
        pool.grow(ROWS)
    expected: dict[int, dict[int, float]] = {row: {} for row in range(ROWS)}
    for n, (remove, row, items, weight) in enumerate(steps):
        targets = np.asarray(items, dtype=np.intp)
        if remove:
            pool.remove(row, targets)
            for item in items:
                expected[item].pop(row, None)
        else:
            weights = np.full(len(items), float(round(weight)))  # few values: ties, and weights going down
            pool.set(row, targets, weights)
            for item in items:
                expected[item][row] = float(round(weight))
    for item in range(ROWS):
        rows, weights = pool.gather(np.array([item], dtype=np.intp))
        heaviest_first = sorted(expected[item].items(), key=lambda pair: (-pair[1], pair[0]))
        assert list(zip(rows.tolist(), weights.tolist(), strict=True)) == heaviest_first
        assert pool.count(item) == len(expected[item])
        limited = pool.gather(np.array([item], dtype=np.intp), limit=2)
        assert list(zip(*(part.tolist() for part in limited), strict=True)) == heaviest_first[:2]
    everyone = np.arange(ROWS, dtype=np.intp)
    rows, weights = pool.gather(everyone)
    assert rows.size == sum(len(of_item) for of_item in expected.values())
    assert pool.capacity >= rows.size


def test_the_pool_grows_by_doubling_and_keeps_its_followers_heaviest_first() -> None:
    pool = FollowerPool(rows=2)
    start = pool.capacity
    for row in range(start + 1):  # one more follower than the first pool holds
        pool.set(row, np.array([1], dtype=np.intp), np.array([float(row)]))
    rows, weights = pool.gather(np.array([1, 0], dtype=np.intp))
    assert rows.tolist() == list(range(start, -1, -1))
    assert weights.tolist() == [float(row) for row in range(start, -1, -1)]
    assert pool.capacity >= 2 * start
