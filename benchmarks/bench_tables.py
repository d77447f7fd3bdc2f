"""Table builds against the memory bandwidth, per dtype, layout and ISA level; and the PCA pass.

    python benchmarks/bench_tables.py [--only tables|pca]

A "pass" is one read of A's bytes by NumPy (`np.bitwise_or.reduce` over A viewed as uint64, one
thread): the physical floor a table build competes with. For 100,000 x 4,000 (K=10) and
1,000,000 x 500 (K=10 and K=64), C-ordered, float16 / bfloat16 / float32 / float64, it times
both tables at every ISA level this CPU runs: R = table(A, sample labels) (rows of the view
contiguous) and C = table(A.T, neuron labels) (columns contiguous), into preallocated tables as
IterD keeps them. It reports each build's time, A's bytes per second, and the fraction of the
pass: by wall clock (best of 5), and by CPU time (pass CPU time over build CPU time per
thread), which is what the build reaches with its threads to itself and is the figure that
survives other users' load on the shared development machine. F-ordered A is checked at
100,000 x 4,000.

It also times the initialisation's randomized PCA (4 passes over 16,384 sampled neurons of
100,000 x 4,000, the `iterd` default) in NumPy (the implementation before cpp/pca.cpp, kept
below as the reference) and in the core, in passes over the whole of A.

Results: benchmarks/results/tables.md and benchmarks/results/pca.md.
"""

from __future__ import annotations

import argparse
from functools import partial

import ml_dtypes
import numpy as np

from ulcmod import _core
from ulcmod.core._pca import sample_pca

from _common import best_wall_and_cpu, write_table

BF16 = ml_dtypes.bfloat16

CASES = [(100_000, 4_000, 10), (1_000_000, 500, 10), (1_000_000, 500, 64)]
DTYPES = ["float16", "bfloat16", "float32", "float64"]
REPEAT = 5


def make(N, M, dtype, rng, order="C"):
    A = np.empty((N, M), dtype=BF16 if dtype == "bfloat16" else dtype, order=order)
    step = max(1, (64 << 20) // (4 * M))
    for r0 in range(0, N, step):
        block = rng.standard_normal((min(step, N - r0), M), dtype=np.float32)
        A[r0:r0 + step] = block.astype(A.dtype) if dtype == "bfloat16" else block
    return A


def pass_time(A):
    flat = A.reshape(-1, order="A").view(np.uint8)
    words = flat[: flat.size // 8 * 8].view(np.uint64)
    return best_wall_and_cpu(partial(np.bitwise_or.reduce, words), REPEAT)


def build_rows(name, A, K, rng, isas, threads, order="C"):
    """Result rows for both tables of A at every ISA level."""
    N, M = A.shape
    s = rng.integers(0, K, M).astype(np.int32)
    u = rng.integers(0, K, N).astype(np.int32)
    R, C = np.empty((N, K)), np.empty((M, K))
    p_wall, p_cpu = pass_time(A)
    rows = []
    for isa in isas:
        _core._set_isa(isa)
        for table, fn in (("R", partial(_core.build_table, A, s, K, out=R)),
                          ("C", partial(_core.build_table, A.T, u, K, out=C))):
            wall, cpu = best_wall_and_cpu(fn, REPEAT)
            rows.append([name, order, table, isa, f"{p_wall * 1e3:.1f}", f"{wall * 1e3:.1f}",
                         f"{A.nbytes / wall / 1e9:.1f}", f"{p_wall / wall:.2f}", f"{p_cpu / (cpu / threads):.2f}"])
            print(rows[-1], flush=True)
    p2_wall, _ = pass_time(A)  # the pass again, after the builds: the machine may have changed
    if p2_wall < p_wall:
        print(f"  (pass {p2_wall * 1e3:.1f} ms after the builds)", flush=True)
    return rows


# --- PCA ------------------------------------------------------------------------------------


def numpy_sample_pca(A, n_components, rng, *, n_iter=4, oversample=8):
    """python/ulcmod/_pca.py before cpp/pca.cpp: float16 blocks widened and multiplied in NumPy."""
    N, M = A.shape
    c = min(n_components, N, M)
    width = min(c + oversample, N, M)
    work = np.float64 if A.dtype == np.float64 else np.float32
    Y, _ = np.linalg.qr(rng.standard_normal((M, width)))
    step = max(1, (32 << 20) // (4 * M))
    for it in range(n_iter):
        last = it == n_iter - 1
        Yw, y_sum = Y.astype(work), Y.sum(axis=0)
        Y_next, mu_z, gram = np.zeros((M, width)), np.zeros(width), np.zeros((width, width))
        for r0 in range(0, N, step):
            block = np.asarray(A[r0:r0 + step], dtype=work)
            mu = block.mean(axis=1, dtype=np.float64)
            Z = block @ Yw - np.outer(mu, y_sum)
            gram += Z.T @ Z
            if not last:
                Y_next += block.T @ Z.astype(work)
                mu_z += mu @ Z
        if not last:
            Y, _ = np.linalg.qr(Y_next - mu_z[None, :])
    w, V = np.linalg.eigh(gram)
    top = np.argsort(w)[::-1][:c]
    return (Y @ V[:, top]) * np.sqrt(np.maximum(w[top], 0.0))


def pca_rows(rng, threads, n_rows=16_384):
    rows = []
    for dtype in ("float16", "float32"):
        A = make(100_000, 4_000, dtype, rng)
        ids = np.sort(rng.choice(A.shape[0], n_rows, replace=False))
        p_wall, p_cpu = pass_time(A)
        copy_wall, copy_cpu = best_wall_and_cpu(partial(A.__getitem__, ids), 3)
        sub = A[ids]
        for name, fn in (("NumPy (before)", numpy_sample_pca), ("core (cpp/pca.cpp)", sample_pca)):
            wall, cpu = best_wall_and_cpu(partial(fn, sub, 16, np.random.default_rng(0)), 3)
            rows.append([dtype, name, f"{p_wall * 1e3:.1f}", f"{wall:.3f}", f"{wall / p_wall:.1f}",
                         f"{cpu / threads / p_cpu:.1f}"])
            print(rows[-1], flush=True)
        rows.append([dtype, "A[rows] copy (iterd.py, before either)", f"{p_wall * 1e3:.1f}", f"{copy_wall:.3f}",
                     f"{copy_wall / p_wall:.1f}", f"{copy_cpu / p_cpu:.1f}"])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["tables", "pca"], help="run one of the two parts")
    only = parser.parse_args().only
    info = _core.build_info()
    isas, threads = info["isa_supported"], info["max_threads"]
    rng = np.random.default_rng(0)
    if only != "pca":
        tables(info, isas, threads, rng)
    if only != "tables":
        write_table("pca", "Randomized PCA of the initialisation: 16,384 sampled neurons of 100,000 x 4,000",
                    "python benchmarks/bench_tables.py --only pca",
                    ["dtype", "implementation", "pass ms (all of A)", "seconds", "passes (wall)", "passes (CPU)"],
                    pca_rows(rng, threads),
                    notes=[f"ISA level {info['isa']}, {threads} threads; best of 3 runs on the shared machine. "
                           "passes (CPU): CPU time per thread over the pass's CPU time, the figure with the "
                           "threads to itself (NumPy's BLAS threads count like ours).",
                           "Passes are over the whole of A (100,000 x 4,000), as iterd() reports its time; the "
                           "PCA itself reads only the 16,384 sampled rows, 4 times, and is bound by its GEMMs "
                           "(4 x 24 multiply-adds per element per pass)."])


def tables(info, isas, threads, rng):
    rows = []
    for N, M, K in CASES:
        for dtype in DTYPES:
            A = make(N, M, dtype, rng)
            rows += build_rows(f"{N:,} x {M:,} {dtype} K={K}", A, K, rng, isas, threads)
            del A
    for dtype in ("float16", "float32"):
        A = make(100_000, 4_000, dtype, rng, order="F")
        rows += build_rows(f"100,000 x 4,000 {dtype} K=10", A, 10, rng, [info["isa"]], threads, order="F")
        del A
    _core._set_isa(info["isa"])
    notes = [
        f"ISA levels compiled: {', '.join(info['isa_compiled'])}; supported here: {', '.join(isas)}; "
        f"{threads} OpenMP threads; compiler {info['compiler']}.",
        "pass: NumPy's one-thread read of A's bytes (bitwise_or.reduce over a uint64 view), best of 5.",
        "fraction (wall): pass time / build time, best of 5 each, measured back to back.",
        "fraction (CPU): pass CPU time / (build CPU time / threads): the build with its threads to itself. "
        "The development machine is shared (2 cores, other users' jobs running): wall-clock figures "
        "there swing by 2x between runs, the CPU-time ones by about 10%.",
        "R: rows of the view contiguous (scatter by column label: 8-row tiles transposed in registers, "
        "label-sorted column groups summed in registers); C: columns contiguous (label-sorted groups of "
        "columns, each run of equal labels summed 16 columns at a time down the task's rows, the next 16 "
        "prefetched). Sums in float64.",
    ]
    write_table("tables", "Table builds vs one pass over A", "python benchmarks/bench_tables.py --only tables",
                ["A, K", "order", "table", "ISA", "pass ms", "build ms", "GB/s", "fraction (wall)",
                 "fraction (CPU)"], rows, notes=notes)


if __name__ == "__main__":
    main()
