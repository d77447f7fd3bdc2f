"""Balanced k-means: ulcmod against k-means-constrained (min-cost flow by OR-tools per step).

    pip install k-means-constrained
    python benchmarks/bench_balanced_kmeans.py

Both get the same data, cluster sizes floor(n/K)..ceil(n/K), n_init=10, max_iter=300,
tol=1e-4 and random_state=0. Sizes: 1,536 x 576 with K=16 (MoEfication: L2-normalised rows of
one layer's FFN input weight, here a synthetic stand-in with 16 directions plus noise) and
20,000 x 16 with K=20 (IterD's initialisation: samples in 16 PCA dimensions).
"""

from __future__ import annotations

import time

import numpy as np
from k_means_constrained import KMeansConstrained

import ulcmod

from _common import write_table


def moefication_like(n, d, groups, rng):
    centers = rng.standard_normal((groups, d))
    X = centers[rng.integers(0, groups, n)] + 1.5 * rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def pca_scores_like(n, d, groups, rng):
    centers = 3.0 * rng.standard_normal((groups, d))
    return centers[rng.integers(0, groups, n)] + rng.standard_normal((n, d))


def main():
    rng = np.random.default_rng(0)
    cases = [
        ("1,536 x 576, K=16", moefication_like(1536, 576, 16, rng), 16),
        ("20,000 x 16, K=20", pca_scores_like(20_000, 16, 20, rng), 20),
    ]
    rows = []
    for name, X, K in cases:
        n = len(X)
        t0 = time.perf_counter()
        _, labels, inertia = ulcmod.balanced_kmeans(X, K, n_init=10, max_iter=300, tol=1e-4, random_state=0)
        t_ours = time.perf_counter() - t0
        ref = KMeansConstrained(n_clusters=K, size_min=n // K, size_max=-(-n // K), n_init=10,
                                max_iter=300, tol=1e-4, random_state=0)
        t0 = time.perf_counter()
        ref.fit(X)
        t_ref = time.perf_counter() - t0
        sizes_ok = set(np.bincount(labels, minlength=K)) <= {n // K, -(-n // K)}
        rows.append([name, f"{t_ours:.3f}", f"{t_ref:.2f}", f"{t_ref / t_ours:.0f}x",
                     f"{inertia:.6g}", f"{ref.inertia_:.6g}", f"{100 * (inertia / ref.inertia_ - 1):+.2f}%",
                     "yes" if sizes_ok else "NO"])
        print(rows[-1], flush=True)
    write_table(
        "balanced_kmeans",
        "Balanced k-means: ulcmod vs k-means-constrained",
        "python benchmarks/bench_balanced_kmeans.py",
        ["data", "ulcmod s", "k-means-constrained s", "speed-up", "ulcmod inertia",
         "k-means-constrained inertia", "inertia difference", "sizes exact"],
        rows,
        notes=["Both: n_init=10, max_iter=300, tol=1e-4, random_state=0, sizes floor(n/K)..ceil(n/K).",
               "Negative inertia difference: ulcmod found a better (lower) inertia."],
    )


if __name__ == "__main__":
    main()
