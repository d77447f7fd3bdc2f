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
from ._validation import check_finite

# Rows per block: a float32 block of this size and its products with the small basis stay in
# cache-sized working memory while the pass streams A.
_BLOCK_BYTES = 32 << 20


def _host_power_pass(A: np.ndarray, Y: np.ndarray, last: bool, ids: np.ndarray):
    """One pass over the rows of A: (Z^T Z, the centred X^T Z or None on the last pass)."""
    N, M = A.shape
    work = np.float64 if A.dtype == np.float64 else np.float32
    Yw = Y.astype(work)
    y_sum = Y.sum(axis=0)
    Y_next = np.zeros(Y.shape)
    mu_z = np.zeros(Y.shape[1])
    gram = np.zeros((Y.shape[1], Y.shape[1]))
    for r0, r1 in row_blocks(N, 4 * M, _BLOCK_BYTES):
        block = np.asarray(A[r0:r1], dtype=work)
        mu = block.mean(axis=1, dtype=np.float64)
        check_finite(mu, "A", along="row", ids=ids[r0:r1])
        Z = block @ Yw - np.outer(mu, y_sum)
        gram += Z.T @ Z
        if not last:
            Y_next += block.T @ Z.astype(work)
            mu_z += mu @ Z
    return gram, (None if last else Y_next - mu_z[None, :])


def sample_pca(
    A,
    n_components: int,
    rng: np.random.Generator,
    *,
    n_iter: int = 4,
    oversample: int = 8,
    row_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Scores of the samples of ``A`` (N x M) on their top principal components, shape (M, c).

    ``A`` is an array, or an object with ``shape`` and a ``power_pass(Y, last)`` method doing one
    pass elsewhere (the GPU's, ulcmod/core/_device.py) and returning what _host_power_pass does.
    Raises ``ValueError`` if ``A`` holds NaN or infinity (found from the block means); the row
    is reported as ``row_ids[row]`` when ``A`` holds selected rows of a larger matrix.
    """
    N, M = A.shape
    c = min(n_components, N, M)
    width = min(c + oversample, N, M)
    ids = row_ids if row_ids is not None else np.arange(N)
    power_pass = getattr(A, "power_pass", None) or (lambda Y, last: _host_power_pass(A, Y, last, ids))
    Y, _ = np.linalg.qr(rng.standard_normal((M, width)))
    for it in range(n_iter):
        last = it == n_iter - 1
        gram, Y_next = power_pass(Y, last)
        if not last:
            Y, _ = np.linalg.qr(Y_next)
    w, V = np.linalg.eigh(gram)
    top = np.argsort(w)[::-1][:c]
    return (Y @ V[:, top]) * np.sqrt(np.maximum(w[top], 0.0))
