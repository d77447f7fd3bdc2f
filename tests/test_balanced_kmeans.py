import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import ulcmod
from ulcmod import _core


def exact_balanced_assignment_cost(cost):
    """Optimal cost under sizes floor(n/K)/ceil(n/K), via the Hungarian method on slots.

    Every cluster offers q = n // K mandatory slots (made attractive by a bonus so all are
    filled) and one optional slot; exactly n - qK optional slots then get used.
    """
    n, K = cost.shape
    q = n // K
    bonus = np.abs(cost).sum() + 1.0
    slots = np.concatenate([np.repeat(cost, q, axis=1) - bonus, cost], axis=1)
    rows, cols = linear_sum_assignment(slots)
    return slots[rows, cols].sum() + bonus * q * K


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
