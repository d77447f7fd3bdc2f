"""Randomized PCA of the samples (columns) of a neurons x samples matrix, out of core.

The samples are the observations and the neurons the features, so the centred data matrix is
``X = A.T - 1 mu.T`` with ``mu`` the per-neuron mean. Each pass reads ``A`` once in row blocks
and, per block, computes ``Z = X_block.T Y`` and ``X_block Z`` while the block is in cache, so one
power iteration ``Y <- X X.T Y`` costs one pass over ``A`` (float16 blocks are widened to float32
one block at a time). The final Rayleigh-Ritz step reuses the Gram matrix ``Z.T Z`` of the last
pass, so ``n_iter`` passes give ``n_iter - 1`` power iterations.
"""

from __future__ import annotations

import numpy as np

from ._blocks import row_blocks
from ._validation import check_finite, largest_abs, overflow_error

# Rows per block: a float32 block of this size and its products with the small basis stay in
# cache-sized working memory while the pass streams A.
_BLOCK_BYTES = 32 << 20


def sample_pca(
    A: np.ndarray,
    n_components: int,
    rng: np.random.Generator,
    *,
    n_iter: int = 4,
    oversample: int = 8,
    row_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Scores of the samples of ``A`` (N x M) on their top principal components, shape (M, c).

    Raises ``ValueError`` if ``A`` holds NaN or infinity (found from the block means); the row
    is reported as ``row_ids[row]`` when ``A`` holds selected rows of a larger matrix.
    """
    N, M = A.shape
    c = min(n_components, N, M)
    width = min(c + oversample, N, M)
    work = np.float64 if A.dtype == np.float64 else np.float32
    ids = row_ids if row_ids is not None else np.arange(N)
    Y, _ = np.linalg.qr(rng.standard_normal((M, width)))
    for it in range(n_iter):
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked below, with its cause
            Y, gram = _power_pass(A, Y, work, ids, last=it == n_iter - 1)
    w, V = np.linalg.eigh(gram)
    top = np.argsort(w)[::-1][:c]
    return (Y @ V[:, top]) * np.sqrt(np.maximum(w[top], 0.0))


def _power_pass(A, Y, work, ids, *, last: bool):
    """One pass over A: ``(Y for the next pass, Gram matrix of the projections)``."""
    N, M = A.shape
    width = Y.shape[1]
    Yw = Y.astype(work)
    y_sum = Y.sum(axis=0)
    Y_next = np.zeros((M, width))
    mu_z = np.zeros(width)
    gram = np.zeros((width, width))
    for r0, r1 in row_blocks(N, 4 * M, _BLOCK_BYTES):
        block = np.asarray(A[r0:r1], dtype=work)
        mu = block.mean(axis=1, dtype=np.float64)
        check_finite(mu, "A", along="row", ids=ids[r0:r1], source=lambda r, r0=r0: A[r0 + r])
        Z = block @ Yw - np.outer(mu, y_sum)
        gram += Z.T @ Z
        if not last:
            Y_next += block.T @ Z.astype(work)
            mu_z += mu @ Z
    if not (np.isfinite(gram).all() and np.isfinite(Y_next).all()):  # A is finite (its means are)
        raise overflow_error("A", largest_abs(A), what=f"the {np.dtype(work).name} products of its PCA overflow")
    if not last:
        Y, _ = np.linalg.qr(Y_next - mu_z[None, :])
    return Y, gram
