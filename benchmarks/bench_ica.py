"""FastICA speed and recovery: ulcmod against sklearn.decomposition.FastICA.

    python benchmarks/bench_ica.py            # both sizes, float32 and float64 (~15 min on 2 cores)
    python benchmarks/bench_ica.py --quick    # the smaller size only

Data: c known non-Gaussian sources (a mix of binary, uniform, Laplace and sparse ones) mixed into
p signals with 1% Gaussian noise: 46,080 x 300 with 20 sources and 100,000 x 1,000 with 64.
Both run logcosh, parallel, max_iter=200, tol=1e-4, unit-variance whitening and the same
w_init. sklearn runs with whiten_solver="eigh" (the same whitening as ulcmod, matched) and with
its default "svd". Recovery: |correlation| of each true source with its matched estimate
(Hungarian matching), mean and minimum.
"""

from __future__ import annotations

import argparse
import time
import warnings
from functools import partial

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import FastICA as SkFastICA

import ulcmod

from _common import write_table


def sources(n, c, rng):
    kinds = [lambda: np.sign(rng.normal(size=n)), lambda: rng.uniform(-1, 1, size=n),
             lambda: rng.laplace(size=n), lambda: rng.normal(size=n) * (rng.random(n) < 0.1)]
    S = np.stack([kinds[k % 4]() for k in range(c)], axis=1)
    return (S - S.mean(0)) / S.std(0)


def recovery(S, S_hat):
    c = S.shape[1]
    C = np.abs(np.corrcoef(S.T, S_hat.T)[:c, c:])
    r, k = linear_sum_assignment(-C)
    return C[r, k].mean(), C[r, k].min()


def timed(make, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a non-converged run is reported by its iteration count
        est = make()
        t0 = time.perf_counter()
        S_hat = est.fit_transform(X)
        return time.perf_counter() - t0, S_hat, est.n_iter_


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sizes = [(46_080, 300, 20)] + ([] if args.quick else [(100_000, 1_000, 64)])
    rng = np.random.default_rng(0)
    rows = []
    for n, p, c in sizes:
        S = sources(n, c, rng)
        X64 = S @ rng.normal(size=(c, p)) + 0.01 * rng.normal(size=(n, p))
        w0 = rng.normal(size=(c, c))
        kw = dict(fun="logcosh", algorithm="parallel", max_iter=200, tol=1e-4, w_init=w0)
        for dtype in (np.float32, np.float64):
            X = X64.astype(dtype)
            t_ours, S_ours, it_ours = timed(partial(ulcmod.FastICA, c, **kw), X)
            t_eigh, S_eigh, it_eigh = timed(partial(SkFastICA, c, whiten_solver="eigh", **kw), X)
            t_svd, S_svd, it_svd = timed(partial(SkFastICA, c, whiten_solver="svd", **kw), X)
            rec = [recovery(S, s) for s in (S_ours, S_eigh, S_svd)]
            rows.append([f"{n:,} x {p:,} -> {c}", np.dtype(dtype).name,
                         f"{t_ours:.2f} ({it_ours})", f"{t_eigh:.2f} ({it_eigh})", f"{t_svd:.2f} ({it_svd})",
                         f"{t_eigh / t_ours:.1f}x", f"{t_svd / t_ours:.1f}x",
                         " / ".join(f"{m:.4f} (min {lo:.4f})" for m, lo in rec)])
            print(rows[-1], flush=True)
    write_table("ica" if not args.quick else "ica_quick", "FastICA: ulcmod vs scikit-learn",
                "python benchmarks/bench_ica.py" + (" --quick" if args.quick else ""),
                ["data", "dtype", "ulcmod s (iters)", "sklearn eigh s (iters)", "sklearn svd s (iters)",
                 "speed-up vs eigh", "speed-up vs svd", "recovery: ulcmod / sklearn eigh / sklearn svd"],
                rows,
                notes=["logcosh, parallel, max_iter=200, tol=1e-4, the same w_init for all; times include whitening.",
                       f"ulcmod build: {ulcmod.build_info()}"])


if __name__ == "__main__":
    main()
