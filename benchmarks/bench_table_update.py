"""Incremental table update vs full rebuild: where IterD's cost model should switch.

    python benchmarks/bench_table_update.py

For a 100,000 x 7,000 matrix (50,000 x 7,000 for float64; K=20, C-ordered) it times a full
build of each table and updates by a growing number of moved columns, and prints update time /
rebuild time. R (neurons x K) is updated by moved samples, which are scattered within each
contiguous row of A; C (samples x K) by moved neurons, which are contiguous rows of A. The
break-even is where the ratio crosses 1, as moved columns per column of the table: the core
updates while `moved * per_moved < columns` (cpp/tables.cpp, update_is_cheaper), with
per_moved printed in the last column for comparison.

Times are the best of 3 wall-clock runs; because the development machine is shared, the ratio
of process CPU times (all threads) is printed as well and is the steadier of the two.
"""


from functools import partial

import numpy as np

from ulcmod import _core

from _common import best_wall_and_cpu, write_table


def model_per_moved(view):
    """The core's per_moved for this view (update_is_cheaper): its columns over the fewest moved
    columns for which it rebuilds, found by bisection."""
    lo, hi = 1, view.shape[1]
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if _core.update_is_cheaper(view, mid) else (lo, mid)
    return view.shape[1] / lo


def crossover(counts, ratios):
    """Moved count where the ratio first reaches 1 (linear interpolation), or None."""
    for (m0, r0), (m1, r1) in zip(zip(counts, ratios), zip(counts[1:], ratios[1:])):
        if r0 < 1 <= r1:
            return m0 + (1 - r0) * (m1 - m0) / (r1 - r0)
    return None


def main():
    rng = np.random.default_rng(0)
    M, K = 7_000, 20
    rows, notes = [], []
    for dtype, N in ((np.float16, 100_000), (np.float32, 100_000), (np.float64, 50_000)):
        A = np.empty((N, M), dtype=dtype)
        for r0 in range(0, N, 10_000):
            A[r0:r0 + 10_000] = rng.standard_normal((min(10_000, N - r0), M), dtype=np.float32)
        for table, view, counts in (("R", A, (100, 875, 1750, 2500, 3500, 5000, 7000)),
                                    ("C", A.T, (N // 20, N // 4, N // 3, N // 2, 2 * N // 3, N))):
            n_cols = view.shape[1]
            labels = rng.integers(0, K, n_cols).astype(np.int32)
            T = np.empty((view.shape[0], K))
            b_wall, b_cpu = best_wall_and_cpu(partial(_core.build_table, view, labels, K, out=T))
            ratios = []
            for moved in counts:
                idx = np.sort(rng.choice(n_cols, moved, replace=False))
                frm, to = labels[idx], ((labels[idx] + 1) % K).astype(np.int32)
                u_wall, u_cpu = best_wall_and_cpu(partial(_core.update_table, view, idx, frm, to, T))
                ratios.append(u_cpu / b_cpu)
                rows.append([np.dtype(dtype).name, table, f"{moved:,} of {n_cols:,}", f"{b_wall:.3f}",
                             f"{u_wall:.3f}", f"{u_wall / b_wall:.2f}", f"{u_cpu / b_cpu:.2f}"])
                print(rows[-1], flush=True)
            cross = crossover(counts, ratios)
            measured = f"{n_cols / cross:.1f}" if cross else f"> {n_cols / counts[-1]:.1f}" if ratios[-1] < 1 else "?"
            notes.append(f"{np.dtype(dtype).name} {table}: break-even at {measured} columns per moved column "
                         f"(CPU-time ratio); the model uses {model_per_moved(view):.1f}")
    write_table("table_update", "Table update vs rebuild (C-ordered A, 7,000 samples, K=20)",
                "python benchmarks/bench_table_update.py",
                ["dtype", "table", "moved", "rebuild s", "update s", "update / rebuild", "same, CPU time"], rows,
                notes=notes + [f"ISA level: {_core.build_info()['isa']}, {_core.build_info()['max_threads']} threads.",
                               "Shared 2-core machine: wall times vary with other users' load; the CPU-time "
                               "ratio is the steadier one."])


if __name__ == "__main__":
    main()
