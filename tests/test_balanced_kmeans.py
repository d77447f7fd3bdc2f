import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import ulcmod
from ulcmod import _core


def exact_balanced_assignment_cost(cost):
    """Optimal cost under sizes floor(n/K)/ceil(n/K), via the Hungarian method on slots.

    Every cluster offers q = n // K mandatory slots (made attractive by a bonus larger than any
    difference of costs, so all are filled) and one optional slot; exactly n - qK optional slots
    then get used. The cost is summed from the original entries, not the shifted ones.
    """
    n, K = cost.shape
    q = n // K
    bonus = np.ptp(cost) + 1.0
    slots = np.concatenate([np.repeat(cost, q, axis=1) - bonus, cost], axis=1)
    rows, cols = linear_sum_assignment(slots)
    labels = np.where(cols < q * K, cols // max(q, 1), cols - q * K)
    return cost[rows, labels].sum()


@pytest.mark.parametrize("n, K", [(10, 3), (50, 7), (64, 8), (200, 13), (37, 37), (40, 1), (101, 2)])
def test_assignment_is_exact_and_balanced(rng, n, K):
    for _ in range(5):
        cost = rng.random((n, K)) ** 3 * 10
        labels = _core.balanced_assignment(cost)
        sizes = np.bincount(labels, minlength=K)
        assert set(sizes) <= {n // K, -(-n // K)}
        assert sizes.sum() == n
        assert cost[np.arange(n), labels].sum() == pytest.approx(exact_balanced_assignment_cost(cost), rel=1e-9)


def test_assignment_of_squared_distances_is_exact(rng):
    X = rng.normal(size=(300, 4))
    C = rng.normal(size=(12, 4))
    cost = ((X[:, None] - C[None]) ** 2).sum(axis=2)
    labels = _core.balanced_assignment(cost)
    assert cost[np.arange(300), labels].sum() == pytest.approx(exact_balanced_assignment_cost(cost), rel=1e-12)


def balanced_start(rng, n, K):
    return rng.permutation(np.arange(n) % K).astype(np.int32)


@pytest.mark.parametrize("n, K", [(10, 3), (64, 8), (200, 13), (37, 37), (101, 2), (600, 16)])
def test_assignment_from_any_balanced_start_is_exact(rng, n, K):
    for _ in range(3):
        cost = rng.random((n, K)) ** 3 * 10
        labels = _core.balanced_assignment(cost, balanced_start(rng, n, K))
        assert set(np.bincount(labels, minlength=K)) <= {n // K, -(-n // K)}
        assert cost[np.arange(n), labels].sum() == pytest.approx(exact_balanced_assignment_cost(cost), rel=1e-9)


def test_assignment_with_many_ties_is_exact(rng):
    """Small integer costs: sums are exact, so the optimum must be met exactly, from any start."""
    n, K = 150, 7
    cost = rng.integers(0, 4, size=(n, K)).astype(float)
    best = exact_balanced_assignment_cost(cost)
    for start in (None, balanced_start(rng, n, K)):
        labels = _core.balanced_assignment(cost, start)
        assert cost[np.arange(n), labels].sum() == best


def test_assignment_warm_started_from_a_nearby_optimum_is_exact(rng):
    """As in Lloyd's steps: the optimum for slightly moved centres, started from the old one."""
    X = rng.normal(size=(500, 4))
    C = rng.normal(size=(9, 4))
    old = _core.balanced_assignment(((X[:, None] - C[None]) ** 2).sum(axis=2))
    cost = ((X[:, None] - (C + 0.05 * rng.normal(size=C.shape))[None]) ** 2).sum(axis=2)
    labels = _core.balanced_assignment(cost, old)
    assert not np.array_equal(labels, old)  # the move changed the optimum
    assert cost[np.arange(500), labels].sum() == pytest.approx(exact_balanced_assignment_cost(cost), rel=1e-12)


@pytest.mark.parametrize("start, message", [
    (np.zeros(5, np.int32), "one label per row"),
    (np.array([0, 1, 2, 0, 3, 1], np.int32), r"start label 3 at index 4 is outside \[0, 3\)"),
    (np.array([0, 0, 0, 1, 1, 2], np.int32), "floor"),
])
def test_assignment_refuses_a_start_that_is_not_balanced(start, message):
    with pytest.raises(ValueError, match=message):
        _core.balanced_assignment(np.ones((6, 3)), start)


def test_final_labels_are_an_exact_assignment_to_the_final_centres(rng):
    """Every Lloyd step is warm-started; the last one must still be the exact optimum."""
    X = rng.normal(size=(400, 5)) + rng.integers(0, 4, size=(400, 1)) * 1.5
    for K in (6, 11):
        centers, labels, inertia = ulcmod.balanced_kmeans(X, K, n_init=1, random_state=1)
        cost = ((X[:, None] - centers[None]) ** 2).sum(axis=2)
        assert cost[np.arange(400), labels].sum() == pytest.approx(exact_balanced_assignment_cost(cost), rel=1e-12)


def reference_balanced_kmeans(X, K, n_init, rng, max_iter=100):
    """Constrained Lloyd with the Hungarian assignment, from random-point seeds: best inertia."""
    best = np.inf
    for _ in range(n_init):
        centers = X[rng.choice(len(X), K, replace=False)]
        labels = None
        for _ in range(max_iter):
            cost = ((X[:, None] - centers[None]) ** 2).sum(axis=2)
            q = len(X) // K
            slots = np.concatenate([np.repeat(cost, q, axis=1) - 1e6, cost], axis=1)
            rows, cols = linear_sum_assignment(slots)
            new = np.empty(len(X), dtype=int)
            new[rows] = np.where(cols < q * K, cols // max(q, 1), cols - q * K)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            centers = np.stack([X[labels == k].mean(axis=0) for k in range(K)])
        best = min(best, ((X - centers[labels]) ** 2).sum())
    return best


@pytest.mark.parametrize("n, K, d", [(120, 4, 2), (150, 6, 3), (90, 9, 5)])
def test_inertia_within_one_percent_of_exact_constrained_lloyd(rng, n, K, d):
    X = rng.normal(size=(n, d)) + rng.integers(0, 3, size=(n, 1)) * 2.0
    centers, labels, inertia = ulcmod.balanced_kmeans(X, K, n_init=10, random_state=0)
    sizes = np.bincount(labels, minlength=K)
    assert set(sizes) <= {n // K, -(-n // K)}
    assert inertia == pytest.approx(((X - centers[labels]) ** 2).sum(), rel=1e-12)
    assert inertia <= 1.01 * reference_balanced_kmeans(X, K, 10, rng)


def test_estimator_and_determinism(rng):
    X = rng.normal(size=(103, 3))
    a = ulcmod.BalancedKMeans(5, random_state=3).fit(X)
    b = ulcmod.BalancedKMeans(5, random_state=3).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert sorted(np.bincount(a.labels_)) == [20, 20, 21, 21, 21]
    assert a.n_iter_ >= 1 and a.cluster_centers_.shape == (5, 3)
    np.testing.assert_array_equal(a.predict(a.cluster_centers_), np.arange(5))
    # Restarts extend the first run's seed sequence, so more restarts are never worse.
    one = ulcmod.BalancedKMeans(5, n_init=1, random_state=3).fit(X).inertia_
    assert ulcmod.BalancedKMeans(5, n_init=8, random_state=3).fit(X).inertia_ <= one
