"""IterD speed: ulcmod's C++ sweeps against the published per-element algorithm in NumPy.

    python benchmarks/bench_iterd.py            # all sizes (~20 min on 2 cores, ~8 GiB)
    python benchmarks/bench_iterd.py --quick    # the smallest size only

Each size is a planted matrix (noise + 0.3 on K planted blocks). Columns:

* pass         -- ``A.sum()``, one streaming pass over A (NumPy, one thread): the unit of cost;
* published    -- one iteration of the published algorithm in plain NumPy (below): every element,
                  every candidate module, the harmonic mean recomputed from all K block sizes;
                  block-sum tables by BLAS in float64. Started from random balanced labels.
* ours it1     -- one ulcmod iteration from the same random labels, both tables built from scratch;
* ours steady  -- median ulcmod iteration after the first on that run (tables kept up to date
                  incrementally), and the number of iterations to convergence;
* ours full    -- ``ulcmod.iterd(A, K)`` with the default initialisation (randomized PCA of the
                  samples on 16,384 neurons, balanced k-means), in seconds and passes, split
                  into initialisation and IterD proper (table builds + iterations);
* sklearn      -- the paper's baseline: PCA to 16 dims of the neuron rows, then KMeans.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import ulcmod
from ulcmod import _core
from ulcmod.core.synthetic import planted

from _common import best_time, write_table


def _one_hot(labels, K):
    out = np.zeros((labels.size, K))
    out[np.arange(labels.size), labels] = 1.0
    return out


def _block_sums(A, labels, K, axis):
    """Float64 block sums by BLAS, in row chunks: axis=1 gives R (N x K), axis=0 gives C (M x K)."""
    H = _one_hot(labels, K)
    step = max(1, (128 << 20) // (8 * A.shape[1]))
    if axis == 1:
        return np.concatenate([A[r:r + step].astype(np.float64) @ H for r in range(0, A.shape[0], step)])
    return sum(A[r:r + step].astype(np.float64).T @ H[r:r + step] for r in range(0, A.shape[0], step))


def _published_sweep(T, labels, counts, other, K, rng):
    """Per element and per candidate: recompute P and the harmonic mean from all K sizes."""
    D = T[np.arange(labels.size), labels].sum()
    for i in rng.permutation(labels.size):
        a = labels[i]
        if counts[a] == 1:
            continue
        best_L = K * D / ((counts * other).sum() * (1.0 / (counts * other)).sum())
        best_b = a
        for b in range(K):
            if b == a:
                continue
            trial = counts.copy()
            trial[a] -= 1
            trial[b] += 1
            sizes = trial * other
            L = K * (D - T[i, a] + T[i, b]) / (sizes.sum() * (1.0 / sizes).sum())
            if L > best_L:
                best_L, best_b = L, b
        if best_b != a:
            D += T[i, best_b] - T[i, a]
            counts[a] -= 1
            counts[best_b] += 1
            labels[i] = best_b


def published_iteration(A, u, s, K, rng):
    u, s = u.copy(), s.copy()
    n = np.bincount(u, minlength=K).astype(np.float64)
    m = np.bincount(s, minlength=K).astype(np.float64)
    _published_sweep(_block_sums(A, s, K, axis=1), u, n, m, K, rng)
    _published_sweep(_block_sums(A, u, K, axis=0), s, m, n, K, rng)
    return u, s


def ours_from(A, K, u0, s0, max_iter=200):
    """Seconds of (table build + first iteration) and of each later iteration, to convergence."""
    t0 = time.perf_counter()
    state = _core.IterDState(A, K, u0, s0, 1e-9, 0)
    times = []
    for _ in range(max_iter):
        moved = state.iterate("parallel")
        state.objective()
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        if moved == (0, 0):
            break
    return times


def sklearn_baseline(A, K):
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    X = PCA(n_components=16, random_state=0).fit_transform(A)
    return KMeans(n_clusters=K, random_state=0).fit_predict(X)


def run(N, M, K, dtype, with_reference, rng):
    A, _, _ = planted(N, M, K, 0.3, rng, dtype=dtype)
    t_pass, _ = best_time(lambda: A.sum(dtype=np.float64 if dtype == np.float16 else None))
    u0 = rng.permutation(np.arange(N) % K).astype(np.int32)
    s0 = rng.permutation(np.arange(M) % K).astype(np.int32)
    times = ours_from(A, K, u0, s0)
    t_it1, t_steady = times[0], float(np.median(times[1:]))
    t0 = time.perf_counter()
    full = ulcmod.iterd(A, K, random_state=0)
    t_full = time.perf_counter() - t0
    t_iterd = float(full.history.seconds[1:].sum())  # the iterations, after the first table
    t_init = t_full - t_iterd
    row = {
        "size": f"{N:,} x {M:,} {np.dtype(dtype).name} K={K}",
        "pass s": f"{t_pass:.3f}",
        "ours it1 s": f"{t_it1:.3f}",
        "ours steady it s (its)": f"{t_steady:.4f} ({len(times)})",
        "ours full s (passes)": f"{t_full:.2f} ({t_full / t_pass:.1f})",
        "init incl. 1st table (passes)": f"{t_init:.2f} ({t_init / t_pass:.1f})",
        "iterations (passes, its)": f"{t_iterd:.2f} ({t_iterd / t_pass:.1f}, {full.n_iter})",
    }
    if with_reference:
        t_pub = time.perf_counter()
        published_iteration(A, u0, s0, K, np.random.default_rng(0))
        t_pub = time.perf_counter() - t_pub
        t_sk = time.perf_counter()
        sklearn_baseline(A, K)
        t_sk = time.perf_counter() - t_sk
        row.update({
            "published it s": f"{t_pub:.2f}",
            "published / ours it1": f"{t_pub / t_it1:.0f}x",
            "published / ours steady": f"{t_pub / t_steady:.0f}x",
            "sklearn PCA+KMeans s (passes)": f"{t_sk:.2f} ({t_sk / t_pass:.1f})",
        })
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the smallest size")
    args = ap.parse_args()
    sizes = [(20_000, 1_000, 10, np.float32, True)]
    if not args.quick:
        sizes += [(100_000, 4_000, 10, np.float32, True), (250_000, 7_000, 20, np.float16, False)]
    rng = np.random.default_rng(0)
    rows = []
    for N, M, K, dtype, ref in sizes:
        rows.append(run(N, M, K, dtype, ref, rng))
        print(rows[-1], flush=True)
    header = list(dict.fromkeys(k for r in rows for k in r))
    table = [[r.get(h, "-") for h in header] for r in rows]
    write_table(
        "iterd" if not args.quick else "iterd_quick",
        "IterD: ulcmod vs the published per-element algorithm (NumPy) and sklearn PCA+KMeans",
        "python benchmarks/bench_iterd.py" + (" --quick" if args.quick else ""),
        header, table,
        notes=[
            "pass = A.sum(), single-threaded NumPy; passes = time / pass. For float16 NumPy's pass "
            "is conversion-bound (slower than ulcmod's own table build over the same matrix).",
            "published, ours it1, ours steady: from the same random balanced labels.",
            "init = randomized PCA of the samples on 16,384 random neurons (4 passes over them) + "
            "balanced k-means + the first neuron table (one pass) and neuron labels.",
            f"ulcmod build: {ulcmod.build_info()}",
        ],
    )


if __name__ == "__main__":
    main()
