"""The cost of null_test (100 null runs) and stability (20 runs) at the default run's size.

    python benchmarks/bench_significance.py [--n-null 100] [--n-runs 20]

A synthetic 46,080 x 4,200 float16 matrix (the default run's neurons x training samples) on a
read-only memmap, as `ulcmod discover` keeps its z-scored activations: K=10 planted modules of
weak signal, plus shared low-rank activity and heavy-tailed noise, z-scored per neuron (see
`activations`). One `iterd` call is timed before and after the two analyses in the same process,
and their times are given as multiples of its mean, since the machine's load changes over a run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import ulcmod
from ulcmod.analyses._resampling import bootstrap_columns, permute_rows
from ulcmod.analyses.module_stability import adjusted_rand_index

from _common import best_time, write_table

N, M, K = 46_080, 4_200, 10  # the default run: 30 layers x 1,536 neurons, 7 x 600 prompts; K=10 of 4/7/10/16
SIGNAL = 0.25  # planted block offset, in units of the noise's standard deviation
RANK, FACTOR_SCALE = 8, 0.5  # shared low-rank activity: neurons co-vary outside the modules too
T_DF = 5  # Student-t noise: heavy tails like real activations
ROWS_PER_BLOCK = 4096  # generation in row blocks of 4096 x 4200 float32 (69 MB)


def activations(path: Path, rng):
    """Planted modules + low-rank activity + t noise, z-scored per neuron, float16 on disk.

    Returns the read-only memmap and the planted neuron labels.
    """
    u = rng.permutation(np.arange(N) % K)
    s = rng.permutation(np.arange(M) % K)
    loadings = rng.standard_normal((N, RANK), dtype=np.float32) * FACTOR_SCALE
    factors = rng.standard_normal((RANK, M), dtype=np.float32)
    noise_sd = np.sqrt(T_DF / (T_DF - 2))
    A = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(N, M))
    for r0 in range(0, N, ROWS_PER_BLOCK):
        r1 = min(N, r0 + ROWS_PER_BLOCK)
        block = (rng.standard_t(T_DF, size=(r1 - r0, M)) / noise_sd).astype(np.float32)
        block += loadings[r0:r1] @ factors
        block += SIGNAL * (u[r0:r1, None] == s[None, :])
        block -= block.mean(axis=1, keepdims=True)
        block /= block.std(axis=1, keepdims=True)
        A[r0:r1] = block
    A.flush()
    del A
    return np.load(path, mmap_mode="r"), u


def pass_times(A):
    """Seconds of one pass over A (a sum), one row permutation (ours, NumPy's) and one bootstrap gather."""
    buffer = np.empty(A.shape, dtype=A.dtype)
    rng = np.random.default_rng(0)
    return (best_time(lambda: A.sum(dtype=np.float64))[0],
            best_time(lambda: permute_rows(A, 0, out=buffer))[0],
            best_time(lambda: rng.permuted(A, axis=1, out=buffer), repeat=1)[0],
            best_time(lambda: bootstrap_columns(A, rng, buffer))[0])


def timed(name: str, fn, loads: list):
    """(seconds, result) of fn(); the load average afterwards goes into `loads` and is printed."""
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    loads.append(f"after {name}: {load()}")
    print(f"{name}: {seconds / 60:.1f} min; load {load()}", flush=True)
    return seconds, out


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min) / {five:.1f} (5 min)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-null", type=int, default=100)
    parser.add_argument("--n-runs", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    loads = [f"start: {load()}"]
    with tempfile.TemporaryDirectory() as tmp:
        A, planted = activations(Path(tmp) / "A.npy", rng)
        t_sum, t_perm, t_numpy_perm, t_boot = pass_times(A)
        t_iterds = []

        def one_iterd():
            t0 = time.perf_counter()
            res = ulcmod.iterd(A, K, random_state=0, progress=False)
            t_iterds.append(time.perf_counter() - t0)
            print(f"iterd: {t_iterds[-1]:.1f} s, {res.n_iter} iterations; load {load()}", flush=True)
            return res

        res = one_iterd()
        t_null, null = timed("null_test", lambda: ulcmod.null_test(A, K, n_null=args.n_null, result=res,
                                                                    random_state=0), loads)
        one_iterd()
        t_stab, stab = timed("stability", lambda: ulcmod.stability(A, K, n_runs=args.n_runs, reference=res,
                                                                   random_state=0), loads)
        one_iterd()
    t_iterd = float(np.mean(t_iterds))

    rows = [
        ["one `iterd` (mean of 3: before, between and after)", f"{t_iterd / 60:.2f}", "1.0",
         ", ".join(f"{t:.1f}" for t in t_iterds) + f" s; {res.n_iter} iterations"],
        [f"`null_test`, n_null={args.n_null}", f"{t_null / 60:.1f}", f"{t_null / t_iterd:.0f}",
         f"p = {null.p_value:.4f}, z = {null.z:.0f}; {null.n_not_converged} null runs not converged"],
        [f"`stability`, n_runs={args.n_runs}, bootstrap", f"{t_stab / 60:.1f}", f"{t_stab / t_iterd:.0f}",
         f"mean ARI {stab.mean_ari:.3f}, module stability {stab.module_stability.min():.3f}-"
         f"{stab.module_stability.max():.3f}"],
        ["one row permutation (`permute_rows`, C++)", f"{t_perm / 60:.4f}", f"{t_perm / t_iterd:.2f}",
         f"{t_perm:.2f} s; NumPy's `Generator.permuted(A, axis=1)` {t_numpy_perm:.2f} s; one pass over A "
         f"(`A.sum()`) {t_sum:.2f} s"],
        ["one bootstrap gather of the samples", f"{t_boot / 60:.4f}", f"{t_boot / t_iterd:.2f}", f"{t_boot:.2f} s"],
    ]
    write_table(
        "significance",
        f"null_test and stability at the default run's size ({N:,} x {M:,} float16, K={K})",
        "python benchmarks/bench_significance.py" + (
            "" if (args.n_null, args.n_runs) == (100, 20) else f" --n-null {args.n_null} --n-runs {args.n_runs}"),
        ["what", "minutes", "x one iterd", "notes"],
        rows,
        notes=[
            f"Data: synthetic, on a read-only memmap: {K} planted modules (block offset {SIGNAL} sd), "
            f"rank-{RANK} shared activity (loadings sd {FACTOR_SCALE}), Student-t noise (df {T_DF}), "
            f"z-scored per neuron, float16. ARI of the run on A with the planted partition: "
            f"{adjusted_rand_index(planted, res.neuron_labels, K):.2f}.",
            "The analyses reuse the timed `iterd` result as their run on A (`result=`, `reference=`), so "
            "their times are the null runs and the resampled runs alone.",
            "The machine was shared with other jobs; load averages on its 2 cores: " + "; ".join(loads) + ". "
            "Times are noisy: the multiples of one `iterd` call, timed in the same process, are the figures to use.",
        ],
    )


if __name__ == "__main__":
    main()
