"""Full default ``ulcmod.iterd(A, K)`` in passes over A (issue: IterD on CPU at memory bandwidth).

    python benchmarks/bench_passes.py            # the three sizes (~5 min, ~3 GiB)
    python benchmarks/bench_passes.py --quick    # 20,000 x 1,000 only

A pass is one read of A's bytes: ``np.bitwise_or.reduce`` over A viewed as uint64 (one NumPy
thread, no arithmetic to speak of), best of 5, measured in the same run. Every time below is
divided by it, so the figures are ratios that hold on a loaded machine as long as the load is
steady. Each matrix is planted (noise + 0.5 on K blocks); the orders compare the default
parallel sweep with the published random order from the same initial labels.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import adjusted_rand_score

import ulcmod
from ulcmod.core.synthetic import planted

from _common import best_time, write_table


def one_pass(A) -> float:
    words = A.reshape(-1).view(np.uint64)
    return best_time(lambda: np.bitwise_or.reduce(words), repeat=5)[0]


def timed_iterd(A, K, **kw):
    t0 = time.perf_counter()
    res = ulcmod.iterd(A, K, random_state=0, **kw)
    return time.perf_counter() - t0, res


def run(N, M, K, dtype, rng):
    A, u_true, s_true = planted(N, M, K, 0.5, rng, dtype=dtype)
    t_pass = one_pass(A)
    rows = []
    for order in ("parallel", "random"):
        t, res = min((timed_iterd(A, K, order=order) for _ in range(2)), key=lambda x: x[0])
        init = float(res.history.seconds[0])
        rows.append({
            "size": f"{N:,} x {M:,} {np.dtype(dtype).name} K={K}",
            "order": order,
            "pass ms": f"{t_pass * 1e3:.1f}",
            "iterd s": f"{t:.2f}",
            "passes": f"{t / t_pass:.1f}",
            "init passes": f"{init / t_pass:.1f}",
            "iterations (passes)": f"{res.n_iter} ({(t - init) / t_pass:.1f})",
            "L": f"{res.L:.6g}",
            "ARI neurons / samples vs planted": f"{adjusted_rand_score(u_true, res.neuron_labels):.3f} / "
                                                f"{adjusted_rand_score(s_true, res.sample_labels):.3f}",
        })
        print(rows[-1], flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only 20,000 x 1,000")
    args = ap.parse_args()
    sizes = [(20_000, 1_000, 10, np.float32)] if args.quick else [
        (100_000, 4_000, 10, np.float16), (100_000, 4_000, 10, np.float32), (1_000_000, 500, 64, np.float16)]
    rng = np.random.default_rng(0)
    rows = [r for size in sizes for r in run(*size, rng)]
    header = list(rows[0])
    write_table(
        "passes_quick" if args.quick else "passes",
        "Full default iterd in passes over A",
        "python benchmarks/bench_passes.py" + (" --quick" if args.quick else ""),
        header, [[r[h] for h in header] for r in rows],
        notes=["pass = np.bitwise_or.reduce over A viewed as uint64 (one read of A's bytes), best of 5.",
               "iterd s: best of 2 calls with the default settings but the order; passes = iterd s / pass.",
               "init = randomized PCA of the samples on 16,384 random neurons, balanced k-means of the "
               "samples, the first neuron table and the neuron labels derived from it.",
               f"ulcmod build: {ulcmod.build_info()}"],
    )


if __name__ == "__main__":
    main()
