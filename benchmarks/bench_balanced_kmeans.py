"""Balanced k-means: ulcmod against k-means-constrained (min-cost flow by OR-tools per step).

    pip install k-means-constrained
    python benchmarks/bench_balanced_kmeans.py

Both get the same data, cluster sizes floor(n/K)..ceil(n/K), max_iter=300, tol=1e-4 and
random_state=0. Cases: 1,536 x 576 with K=16 (MoEfication: L2-normalised rows of one layer's
FFN input weight, here a synthetic stand-in with 16 directions plus noise), 20,000 x 16 with
K=20 (samples in 16 PCA dimensions), both with n_init=10; and IterD's own initialisation,
n_init=1 as iterd runs it: the PCA scores of 7,000 samples from 16,384 neurons of a planted
matrix (16 modules, signal 0.3, as benchmarks/bench_gpu.py), K=16.

A second table puts that k-means next to the rest of ``ulcmod.iterd`` on the CPU, for planted
matrices of 7,000 samples in float16: its share of the whole call.
"""

from __future__ import annotations

import importlib
import time

import numpy as np
from k_means_constrained import KMeansConstrained

import ulcmod
from ulcmod.core._pca import sample_pca
from ulcmod.core.balanced_kmeans import run_kmeans
from ulcmod.core.synthetic import planted

from _common import best_time, write_table


def moefication_like(n, d, groups, rng):
    centers = rng.standard_normal((groups, d))
    X = centers[rng.integers(0, groups, n)] + 1.5 * rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def pca_scores_like(n, d, groups, rng):
    centers = 3.0 * rng.standard_normal((groups, d))
    return centers[rng.integers(0, groups, n)] + rng.standard_normal((n, d))


def iterd_init_scores(n_neurons, n_samples, rng):
    """The samples' PCA scores iterd's default initialisation clusters, for a planted matrix."""
    A, _, _ = planted(n_neurons, n_samples, 16, 0.3, rng, dtype=np.float32)
    return sample_pca(A, 16, rng)


def kmeans_share_of_iterd(rng):
    """iterd on planted N x 7,000 float16 matrices, with the balanced k-means it runs timed inside."""
    module = importlib.import_module("ulcmod.core.iterd")
    kmeans_times = []

    def timed_kmeans(*args, **kwargs):
        t0 = time.perf_counter()
        fit = run_kmeans(*args, **kwargs)
        kmeans_times.append((time.perf_counter() - t0, fit.n_iter))
        return fit

    rows = []
    module.run_kmeans = timed_kmeans
    try:
        for N in (65_536, 262_144):
            A, _, _ = planted(N, 7_000, 16, 0.3, rng, dtype=np.float16)
            kmeans_times.clear()
            total, _ = best_time(lambda A=A: ulcmod.iterd(A, 16, random_state=0))
            t_km, steps = min(kmeans_times)
            rows.append([f"{N:,} x 7,000 float16", f"{total:.2f}", f"{t_km:.3f}", f"{100 * t_km / total:.1f}%",
                         str(steps)])
            print(rows[-1], flush=True)
            del A
    finally:
        module.run_kmeans = run_kmeans
    return rows


def main():
    rng = np.random.default_rng(0)
    cases = [
        ("1,536 x 576, K=16, n_init=10", moefication_like(1536, 576, 16, rng), 16, 10),
        ("20,000 x 16, K=20, n_init=10", pca_scores_like(20_000, 16, 20, rng), 20, 10),
        ("IterD init: 7,000 x 16, K=16, n_init=1", iterd_init_scores(16_384, 7_000, rng), 16, 1),
    ]
    rows = []
    for name, X, K, n_init in cases:
        n = len(X)
        t_ours, (_, labels, inertia) = best_time(
            lambda X=X, K=K, n_init=n_init: ulcmod.balanced_kmeans(X, K, n_init=n_init, max_iter=300, tol=1e-4,
                                                                   random_state=0))
        ref = KMeansConstrained(n_clusters=K, size_min=n // K, size_max=-(-n // K), n_init=n_init,
                                max_iter=300, tol=1e-4, random_state=0)
        t0 = time.perf_counter()
        ref.fit(X)
        t_ref = time.perf_counter() - t0
        sizes_ok = set(np.bincount(labels, minlength=K)) <= {n // K, -(-n // K)}
        rows.append([name, f"{t_ours:.3f}", f"{t_ref:.2f}", f"{t_ref / t_ours:.0f}x",
                     f"{inertia:.6g}", f"{ref.inertia_:.6g}", f"{100 * (inertia / ref.inertia_ - 1):+.2f}%",
                     "yes" if sizes_ok else "NO"])
        print(rows[-1], flush=True)
    share = kmeans_share_of_iterd(rng)
    write_table(
        "balanced_kmeans",
        "Balanced k-means: ulcmod vs k-means-constrained",
        "python benchmarks/bench_balanced_kmeans.py",
        ["data", "ulcmod s", "k-means-constrained s", "speed-up", "ulcmod inertia",
         "k-means-constrained inertia", "inertia difference", "sizes exact"],
        rows,
        notes=["Both: max_iter=300, tol=1e-4, random_state=0, sizes floor(n/K)..ceil(n/K); ulcmod: best of 3.",
               "Negative inertia difference: ulcmod found a better (lower) inertia."],
        more=[("Balanced k-means within ulcmod.iterd on the CPU",
               ["matrix", "iterd(A, 16) s", "its balanced k-means s", "share", "Lloyd steps"], share,
               ["Planted modules (16, signal 0.3). Best of 3 calls each: the whole call, and the "
                "balanced k-means of its initialisation, timed inside it."])],
    )


if __name__ == "__main__":
    main()
