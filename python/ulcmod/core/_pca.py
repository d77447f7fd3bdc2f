"""Randomized PCA of the samples (columns) of a neurons x samples matrix, out of core.

The samples are the observations and the neurons the features, so the centred data matrix is
``X = A.T - 1 mu.T`` with ``mu`` the per-neuron mean. Each pass reads ``A`` once in row blocks
and, per block, computes ``Z = X_block.T Y`` and ``X_block Z`` while the block is in cache, so one
power iteration ``Y <- X X.T Y`` costs one pass over ``A``. The passes run in the compiled core
(``_core.pca_pass``, cpp/pca.cpp): float16/bfloat16/float32 blocks are widened to float32
(float64 stays float64) one block at a time and multiplied on OpenBLAS, on every thread. The
final Rayleigh-Ritz step reuses the Gram matrix ``Z.T Z`` of the last pass, so ``n_iter`` passes
give ``n_iter - 1`` power iterations.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from .. import _core
from ._blocks import row_blocks
from ._validation import check_finite

# Rows per block when A is not an array (e.g. a cluster's rows, gathered block by block): a
# float32 block of this size is what one core call widens and multiplies.
_BLOCK_BYTES = 32 << 20


def _row_blocks(A):
    """(first row, block) for the core: all of an array at once, read in place; array-likes
    (anything with shape, dtype and row slicing) in blocks."""
    if isinstance(A, np.ndarray):
        yield 0, A
        return
    N, M = A.shape
    for r0, r1 in row_blocks(N, 4 * M, _BLOCK_BYTES):
        yield r0, np.asarray(A[r0:r1])


def _host_power_pass(A, Y: np.ndarray, last: bool, rows, row_ids):
    """One pass of the core over the rows of A (those listed in ``rows`` when given; the core
    reads them in place): (Z^T Z, the centred X^T Z or None on the last pass). Raises for the
    first row whose mean is not finite, named ``row_ids[position]`` when given."""
    n, M = (A.shape[0] if rows is None else len(rows)), A.shape[1]
    width = Y.shape[1]
    gram, Y_next, mu_z = np.zeros((width, width)), np.zeros((M, width)), np.zeros(width)
    for r0, block in _row_blocks(A):
        g, y, m, bad = _core.pca_pass(block, rows, np.ascontiguousarray(Y), last)
        if bad >= 0:  # the first row whose mean is not finite, reported as check_finite does
            means = np.zeros(n)
            means[r0 + bad] = np.nan
            check_finite(means, "A", along="row", ids=row_ids)
        gram += g
        if not last:
            Y_next += y
            mu_z += m
    return gram, (None if last else Y_next - mu_z[None, :])


def sample_pca(
    A,
    n_components: int,
    rng: np.random.Generator,
    *,
    n_iter: int = 4,
    oversample: int = 8,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Scores of the samples of ``A`` on their top principal components, shape (M, c), with the
    neurons listed in ``rows`` (sorted indices; default all) as the features.

    ``A`` is an array (the listed rows are read in place), an array-like read in row blocks, or
    an object with ``shape`` and a ``power_pass(Y, last)`` method doing one pass elsewhere (the
    GPU's, ulcmod/core/_device.py) and returning what _host_power_pass does; for the last two the
    listed rows are gathered first. Raises ``ValueError`` if the rows hold NaN or infinity (found
    from the block means), naming the row of ``A``.
    """
    in_place = isinstance(A, np.ndarray) and rows is not None
    X = A if rows is None or in_place else A[rows]
    M = A.shape[1]
    n = X.shape[0] if not in_place else len(rows)
    c = min(n_components, n, M)
    width = min(c + oversample, n, M)
    if in_place:
        ids = np.ascontiguousarray(rows, dtype=np.int64)
        host = lambda Y, last: _host_power_pass(A, Y, last, ids, ids)  # noqa: E731
    else:
        host = lambda Y, last: _host_power_pass(X, Y, last, None, rows)  # noqa: E731
    power_pass = getattr(X, "power_pass", None) or host
    # The small dense steps below take milliseconds on one thread; NumPy's BLAS threads would
    # only wait for each other (seconds on a busy machine).
    with threadpool_limits(limits=1, user_api="blas"):
        Y, _ = np.linalg.qr(rng.standard_normal((M, width)))
        for it in range(n_iter):
            last = it == n_iter - 1
            gram, Y_next = power_pass(Y, last)
            if not last:
                Y, _ = np.linalg.qr(Y_next)
        w, V = np.linalg.eigh(gram)
        top = np.argsort(w)[::-1][:c]
        return (Y @ V[:, top]) * np.sqrt(np.maximum(w[top], 0.0))
