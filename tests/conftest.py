"""Shared helpers: independent (brute-force) computations."""

import numpy as np
import pytest


def brute_objective(A, u, s, K):
    """(L, xi, B) by explicit block sums over the K diagonal blocks, in float64."""
    A = np.asarray(A, dtype=np.float64)
    D = sum(A[np.ix_(u == k, s == k)].sum() for k in range(K))
    n = np.bincount(u, minlength=K).astype(float)
    m = np.bincount(s, minlength=K).astype(float)
    P = float((n * m).sum())
    H = float((1.0 / (n * m)).sum())
    return K * D / (P * H), D / P, K / H


def best_single_move_gain(A, u, s, K):
    """Largest relative gain in L over every single legal neuron or sample move (brute force)."""
    L0 = brute_objective(A, u, s, K)[0]
    best = -np.inf
    for labels in (u, s):
        counts = np.bincount(labels, minlength=K)
        for i in range(labels.size):
            a = labels[i]
            if counts[a] == 1:
                continue
            for b in range(K):
                if b == a:
                    continue
                labels[i] = b
                L = brute_objective(A, u, s, K)[0]
                labels[i] = a
                best = max(best, (L - L0) / abs(L0))
    return best


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
