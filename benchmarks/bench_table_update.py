"""Incremental table update vs full rebuild: where IterD's cost model should switch.

    python benchmarks/bench_table_update.py

For a 100,000 x 7,000 matrix (float16 and float32, K=20) it times a full build of each table and
an update by a growing number of moved columns, and prints update time / rebuild time. R (neurons
x K) is updated by moved samples, which are scattered within each contiguous row of a C-ordered
A; C (samples x K) by moved neurons, which are contiguous rows of A. The core updates while
`moved * 8 < n_samples` for R and `moved * 4 < n_neurons` for C (cpp/tables.cpp).
"""

import time
from functools import partial

import numpy as np

from ulcmod import _core

from _common import best_time, write_table


def main():
    rng = np.random.default_rng(0)
    N, M, K = 100_000, 7_000, 20
    rows = []
    for dtype in (np.float16, np.float32):
        A = rng.standard_normal((N, M), dtype=np.float32).astype(dtype)
        for table, view, n_cols, counts in (("R", A, M, (50, 200, 875, 2000)),
                                            ("C", A.T, N, (1000, 10_000, 25_000, 50_000))):
            labels = rng.integers(0, K, n_cols).astype(np.int32)
            t_build, T = best_time(partial(_core.build_table, view, labels, K))
            for moved in counts:
                idx = np.sort(rng.choice(n_cols, moved, replace=False))
                t0 = time.perf_counter()
                _core.update_table(view, idx, labels[idx], (labels[idx] + 1) % K, T)
                t_upd = time.perf_counter() - t0
                rows.append([np.dtype(dtype).name, table, f"{moved:,} of {n_cols:,}",
                             f"{t_build:.3f}", f"{t_upd:.3f}", f"{t_upd / t_build:.2f}"])
                print(rows[-1], flush=True)
    write_table("table_update", "Table update vs rebuild (100,000 x 7,000, K=20, C-ordered A)",
                "python benchmarks/bench_table_update.py",
                ["dtype", "table", "moved", "rebuild s", "update s", "update / rebuild"], rows,
                notes=["The core's break-even points: moved * 8 < samples (R), moved * 4 < neurons (C)."])


if __name__ == "__main__":
    main()
