"""The pure learning step in ``streamrec.models.online_mf``: initial vectors, schedule, step, clipping."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamrec.models.online_mf import (
    OnlineMFConfig,
    init_vector,
    initial_item_vector,
    initial_user_vector,
    sgd_step,
    top_rows,
    user_learning_rate,
)

Event = tuple[str, str, int]  # user_id, item_id, ts_ms

# -- initial vectors and the schedule -------------------------------------------------------


def test_init_vector_is_a_pure_function_of_key_and_seed() -> None:
    vector = init_vector("item:42", 32, 0.1, seed=3)

    assert vector.dtype == np.float32 and vector.shape == (32,)
    np.testing.assert_array_equal(vector, init_vector("item:42", 32, 0.1, seed=3))
    assert not np.array_equal(vector, init_vector("item:43", 32, 0.1, seed=3))
    assert not np.array_equal(vector, init_vector("item:42", 32, 0.1, seed=4))


def test_init_vector_is_pinned_so_every_worker_and_version_agrees() -> None:
    """SHAKE-256 bytes, not Python's salted hash() nor numpy's generator streams."""
    np.testing.assert_allclose(init_vector("x", 3, 1.0, seed=0), [-0.614, 0.059, -1.164], atol=1e-3)


def test_init_vector_has_the_requested_standard_deviation() -> None:
    values = np.concatenate([init_vector(str(n), 32, 0.1, seed=0) for n in range(300)])

    assert values.std() == pytest.approx(0.1, rel=0.05)
    assert abs(values.mean()) < 0.01


def test_users_and_items_with_the_same_id_get_different_vectors() -> None:
    config = OnlineMFConfig()

    assert not np.array_equal(initial_user_vector("7", config), initial_item_vector("7", config))


def test_user_learning_rate_decays_with_the_users_events() -> None:
    config = OnlineMFConfig(learning_rate=0.1, lr_decay=0.1)

    assert [user_learning_rate(config, n) for n in (0, 10, 30)] == pytest.approx([0.1, 0.05, 0.025])


@pytest.mark.parametrize("field, value", [("dim", 0), ("learning_rate", float("nan")), ("max_norm", 0.0),
                                          ("regularization", -1.0), ("loss", "mse")])
def test_config_rejects_values_that_cannot_work(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        OnlineMFConfig(**{field: value})


# -- the pure step ----------------------------------------------------------------------------

CONFIG = OnlineMFConfig(dim=8, max_norm=3.0)


def random_vectors(seed: int, m: int = 4, dim: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.3, dim).astype(np.float32), rng.normal(0, 0.3, dim).astype(np.float32),
            rng.normal(0, 0.3, (m, dim)).astype(np.float32))


@pytest.mark.parametrize("loss", ["bpr", "isgd"])
def test_a_step_raises_the_items_score_above_the_negatives(loss: str) -> None:
    config = OnlineMFConfig(dim=8, loss=loss, learning_rate=0.1)
    user, item, negs = random_vectors(0)

    new_user, new_item, new_negs = sgd_step(user, item, negs, 1.0, 0.1, config)

    assert new_user @ new_item > user @ item
    assert (new_negs @ new_user - new_user @ new_item).mean() < (negs @ user - user @ item).mean()


def objective(loss: str, user: np.ndarray, item: np.ndarray, negs: np.ndarray, weight: float) -> float:
    """What a step ascends: BPR's mean log-sigmoid margin, or ISGD's negated squared errors."""
    item_score, neg_scores = user @ item, negs @ user
    if loss == "bpr":
        return weight * float(np.mean(-np.log1p(np.exp(neg_scores - item_score))))
    return -0.5 * (weight * (1.0 - item_score) ** 2 + float(np.mean(neg_scores**2)))


def numerical_gradient(f: Any, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    gradient = np.zeros(x.shape)
    for index in np.ndindex(x.shape):
        step = np.zeros(x.shape)
        step[index] = eps
        gradient[index] = (f(x + step) - f(x - step)) / (2 * eps)
    return gradient


@pytest.mark.parametrize("loss", ["bpr", "isgd"])
def test_a_step_follows_the_gradient_of_its_objective(loss: str) -> None:
    config = OnlineMFConfig(dim=8, loss=loss, regularization=0.0, user_lr_multiplier=1.0, item_bias=False,
                            max_norm=100.0)
    user, item, negs = (a.astype(np.float64) for a in random_vectors(7))
    lr, weight = 1e-3, 2.0

    new_user, new_item, new_negs = sgd_step(user, item, negs, weight, lr, config)

    expected = [numerical_gradient(lambda u: objective(loss, u, item, negs, weight), user),
                numerical_gradient(lambda i: objective(loss, user, i, negs, weight), item),
                numerical_gradient(lambda n: objective(loss, user, item, n, weight), negs)]
    for new, old, gradient in zip((new_user, new_item, new_negs), (user, item, negs), expected, strict=True):
        np.testing.assert_allclose((new - old) / lr, gradient, atol=2e-3)


def test_the_user_vector_moves_user_lr_multiplier_times_faster_than_the_items() -> None:
    user, item, negs = random_vectors(8)
    base = OnlineMFConfig(dim=8, regularization=0.0, item_bias=False, max_norm=100.0, user_lr_multiplier=1.0)
    slow_user, slow_item, _ = sgd_step(user, item, negs, 1.0, 0.01, base)
    fast_user, fast_item, _ = sgd_step(user, item, negs, 1.0, 0.01,
                                       OnlineMFConfig(**{**asdict(base), "user_lr_multiplier": 10.0}))

    np.testing.assert_allclose(fast_user - user, 10.0 * (slow_user - user), rtol=1e-3)
    np.testing.assert_allclose(fast_item, slow_item)


def test_with_item_bias_the_users_last_component_stays_one_so_the_items_is_a_bias() -> None:
    config = OnlineMFConfig(dim=8, item_bias=True)
    user = initial_user_vector("u", config)
    item = initial_item_vector("i", config)
    bias_before = item[-1]
    for _ in range(20):
        user, item, _ = sgd_step(user, item, np.zeros((0, 8), np.float32), 1.0, 0.1,
                                 OnlineMFConfig(dim=8, loss="isgd"))

    assert user[-1] == 1.0
    assert item[-1] > bias_before  # a positive event raises the item's bias


def test_a_step_returns_float32_copies_and_leaves_its_inputs_alone() -> None:
    user, item, negs = random_vectors(1)
    before = [user.copy(), item.copy(), negs.copy()]

    out = sgd_step(user, item, negs, 1.0, 0.05, CONFIG)

    assert [a.dtype for a in out] == [np.float32] * 3 and [a.shape for a in out] == [(8,), (8,), (4, 8)]
    for original, now in zip(before, (user, item, negs), strict=True):
        np.testing.assert_array_equal(original, now)


def test_a_step_with_zero_weight_and_zero_regularisation_changes_nothing() -> None:
    user, item, negs = random_vectors(2)

    out = sgd_step(user, item, negs, 0.0, 0.05, OnlineMFConfig(dim=8, regularization=0.0, item_bias=False))

    for original, now in zip((user, item, negs), out, strict=True):
        np.testing.assert_allclose(original, now, rtol=1e-6)


def test_a_step_without_negatives_still_regularises() -> None:
    user, item, _ = random_vectors(3)

    new_user, _, new_negs = sgd_step(user, item, np.zeros((0, 8), np.float32), 1.0, 0.5,
                                     OnlineMFConfig(dim=8, regularization=0.1, item_bias=False))

    assert new_negs.shape == (0, 8)
    assert np.linalg.norm(new_user) < np.linalg.norm(user)


def test_a_step_rejects_mismatched_shapes_with_the_expected_ones() -> None:
    user, item, negs = random_vectors(4)

    with pytest.raises(ValueError, match=r"negatives \(m, 8\)"):
        sgd_step(user, item, negs[:, :4], 1.0, 0.05, CONFIG)


def test_norms_are_clipped_to_max_norm_after_many_heavy_steps() -> None:
    user, item, negs = random_vectors(5)
    for _ in range(200):
        user, item, negs = sgd_step(user, item, negs, 100.0, 1.0, CONFIG)

    norms = np.linalg.norm(np.vstack([user, item, negs]), axis=1)
    assert norms.max() <= 3.0 * (1 + 1e-5)
    assert norms.max() > 2.9  # the clip was needed


def test_inputs_longer_than_max_norm_are_clipped_before_the_step() -> None:
    user, item, negs = random_vectors(6)

    out = sgd_step(user * 1e20, item * 1e30, negs * 1e35, 1.0, 0.0, CONFIG)

    assert max(np.linalg.norm(np.atleast_2d(a), axis=1).max() for a in out) <= 3.0 * (1 + 1e-5)


floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
vector = hnp.arrays(np.float64, 8, elements=floats)


@settings(max_examples=300, deadline=None)
@given(user=vector, item=vector, negatives=hnp.arrays(np.float64, st.tuples(st.integers(0, 4), st.just(8)),
                                                        elements=floats),
       weight=floats, lr=floats, loss=st.sampled_from(["bpr", "isgd"]))
def test_a_step_never_produces_non_finite_or_too_long_vectors(user: np.ndarray, item: np.ndarray,
                                                               negatives: np.ndarray, weight: float, lr: float,
                                                               loss: str) -> None:
    config = OnlineMFConfig(dim=8, loss=loss)

    out = sgd_step(user, item, negatives, weight, lr, config)
    out = sgd_step(*out, weight, lr, config)  # twice: the output is a valid input

    for array in out:
        assert np.isfinite(array).all()
        assert (np.linalg.norm(np.atleast_2d(array), axis=1) <= 3.0 * (1 + 1e-5)).all()


@pytest.mark.parametrize("scores, k", [([3.0, 1.0, 3.0, 2.0], 2), ([1.0, 1.0, 1.0], 2), ([0.0, -np.inf], 5),
                                       ([5.0, 4.0], 0)])
def test_top_rows_equals_a_stable_argsort(scores: list[float], k: int) -> None:
    array = np.array(scores, dtype=np.float32)
    expected = [r for r in np.argsort(-array, kind="stable") if array[r] > -np.inf][:k]

    assert top_rows(array, k).tolist() == expected
