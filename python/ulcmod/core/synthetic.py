"""Synthetic activations with known modules, for examples, tests and benchmarks."""

from __future__ import annotations

import numpy as np

from ._blocks import row_blocks
from ._validation import check_int, check_random_state

_BLOCK_BYTES = 64 << 20  # per row block (with its float64 signal mask): bounded memory at any size


def planted(n_neurons, n_samples, n_modules, signal, random_state=None, *, dtype=np.float64):
    """Noise plus `signal` on K planted diagonal blocks: ``(A, neuron_labels, sample_labels)``.

    ``A[i, j]`` is standard normal noise, plus `signal` where neuron i and sample j share a
    module. Modules get ``n // K`` or ``n // K + 1`` members each, in random order. The noise is
    drawn in float32 row blocks, so a matrix of any size needs no float64 copy.

    Examples
    --------
    >>> from ulcmod.core.synthetic import planted
    >>> A, u, s = planted(300, 60, 3, 1.0, random_state=0)
    >>> A.shape, sorted(set(u.tolist())), len(s)
    ((300, 60), [0, 1, 2], 60)
    """
    N = check_int(n_neurons, "n_neurons", minimum=1)
    M = check_int(n_samples, "n_samples", minimum=1)
    K = check_int(n_modules, "n_modules", minimum=1)
    rng = check_random_state(random_state)
    u = rng.permutation(np.arange(N) % K)
    s = rng.permutation(np.arange(M) % K)
    A = np.empty((N, M), dtype=dtype)
    for r0, r1 in row_blocks(N, 8 * M, _BLOCK_BYTES):
        block = rng.standard_normal((r1 - r0, M), dtype=np.float32)
        block += signal * (u[r0:r1, None] == s[None, :])
        A[r0:r1] = block
    return A, u, s
