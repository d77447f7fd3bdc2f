"""The ULCMOD objective and module features, computed from scratch from labels."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _core
from . import _device
from ._blocks import row_blocks
from ._validation import check_activations, check_finite, check_int, check_labels, largest_abs, overflow_error

_BLOCK_BYTES = 64 << 20  # samples of A per block in module_features_many: read once, kept in cache


class Objective(NamedTuple):
    """IterD's objective ``L = xi * B`` (the paper prints L and B scaled by 1e-6).

    ``xi = D / P`` is the mean activation inside the K diagonal blocks and ``B = K / H`` the
    harmonic mean of the block sizes ``n_k * m_k``.
    """

    L: float
    xi: float
    B: float


def _n_modules(neuron_labels, n_modules) -> int:
    if n_modules is not None:
        return check_int(n_modules, "n_modules", minimum=1)
    labels = np.asarray(neuron_labels)
    if labels.dtype.kind not in "iu" or labels.ndim != 1 or labels.size == 0:
        raise TypeError(f"neuron_labels must be a non-empty 1-D integer array, got {labels.dtype} {labels.shape}")
    return int(labels.max()) + 1


def _on_host(A) -> np.ndarray:
    """A as a host array, to look at its values once a check failed (a GPU array is copied)."""
    return _device.to_host(A) if _device.on_device(A) else A


def _sample_block_sums(A: np.ndarray, neuron_labels: np.ndarray, K: int) -> np.ndarray:
    """C[j, k] = sum of A[i, j] over neurons i in module k: one pass over A, in float64."""
    C = A.table(neuron_labels, K, "samples") if _device.on_device(A) else _core.build_table(A.T, neuron_labels, K)
    with np.errstate(over="ignore", invalid="ignore"):
        totals = C.sum(axis=1)
    check_finite(totals, "A", along="column", source=lambda j: _on_host(A)[:, j])
    return C


def objective(A, neuron_labels, sample_labels, *, n_modules: int | None = None,
              allow_empty: bool = False) -> Objective:
    """L, xi and B of a joint labelling, recomputed from scratch.

    Parameters
    ----------
    A : array of shape (n_neurons, n_samples), float16/32/64
        Activations, read in place.
    neuron_labels, sample_labels : integer arrays of length n_neurons / n_samples
        Module of each neuron and each sample, in ``[0, n_modules)``.
    n_modules : int, optional
        K; defaults to ``max(neuron_labels) + 1``.
    allow_empty : bool, default False
        IterD never empties a module, so by default an empty module is an error. With True
        (for labellings from other methods) an empty diagonal block makes ``H`` infinite, hence
        ``B = 0`` and ``L = 0``, the objective's limit; ``xi`` is the mean over the other blocks.

    Examples
    --------
    >>> import numpy as np, ulcmod
    >>> A = np.array([[3.0, 0.0], [0.0, 1.0]])
    >>> ulcmod.objective(A, [0, 1], [0, 1]).xi
    2.0
    """
    A = _device.prepare_activations(A, "auto")  # CUDA arrays stay on their GPU
    N, M = A.shape
    K = _n_modules(neuron_labels, n_modules)
    u = check_labels(neuron_labels, N, K, "neuron_labels", require_all=not allow_empty)
    s = check_labels(sample_labels, M, K, "sample_labels", require_all=not allow_empty)
    C = _sample_block_sums(A, u, K)
    with np.errstate(over="ignore"):
        D = float(C[np.arange(M), s].sum())
    if not np.isfinite(D):  # every column sum is finite (checked), so their total overflowed
        raise overflow_error("A", largest_abs(_on_host(A)))
    nm = np.bincount(u, minlength=K).astype(np.float64) * np.bincount(s, minlength=K)
    xi = D / float(nm.sum()) if nm.any() else 0.0  # no diagonal block holds anything: no mean to take
    if (nm == 0).any():
        return Objective(0.0, xi, 0.0)
    B = K / float((1.0 / nm).sum())
    return Objective(xi * B, xi, B)


def module_features(A, neuron_labels, *, n_modules: int | None = None) -> np.ndarray:
    """Mean activation of each sample on each module's neurons, shape (n_samples, K).

    ``x[j, k] = mean over neurons i in module k of A[i, j]`` (the paper's module features).
    Works for new samples too: pass their activations, z-scored with the training statistics.

    Examples
    --------
    >>> import numpy as np, ulcmod
    >>> ulcmod.module_features(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), [0, 0, 1])
    array([[2., 5.],
           [3., 6.]])
    """
    A = _device.prepare_activations(A, "auto")  # CUDA arrays stay on their GPU
    K = _n_modules(neuron_labels, n_modules)
    n = np.shape(neuron_labels)
    if len(n) == 1 and n[0] != A.shape[0]:
        raise ValueError(f"A has {A.shape[0]} rows (neurons) but the modules hold {n[0]} neurons; pass the "
                         f"activations of the same neurons, one row each, samples as columns")
    u = check_labels(neuron_labels, A.shape[0], K, "neuron_labels")
    return _sample_block_sums(A, u, K) / np.bincount(u, minlength=K)


def assign_samples(A, neuron_labels, *, n_modules: int | None = None) -> np.ndarray:
    """Module of each (new) sample given a neuron partition: the one it activates most on average.

    ``A`` is (n_neurons, n_new_samples); returns int labels of length n_new_samples (the argmax of
    :func:`module_features`).
    """
    return module_features(A, neuron_labels, n_modules=n_modules).argmax(axis=1).astype(np.int32)


def module_features_many(A, labelings) -> list:
    """:func:`module_features` for several neuron partitions, from one pass over A.

    `labelings` is a list of ``(neuron_labels, n_modules)``; returns one (n_samples, K) array per
    partition. A is read block by block along its contiguous axis and every partition's sums are
    taken from a block while it is in memory, so a memory-mapped A larger than RAM is read from
    disk once instead of once per partition. Activations in GPU memory (a CUDA tensor or array,
    or the z-scored matrices of ``zscore_files(device="cuda")``) are summed there.

    Examples
    --------
    >>> import numpy as np
    >>> from ulcmod.core.objective import module_features_many
    >>> A = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    >>> [x.tolist() for x in module_features_many(A, [([0, 0, 1], 2), ([0, 1, 1], 2)])]
    [[[2.0, 5.0], [3.0, 6.0]], [[1.0, 4.0], [2.0, 5.0]]]
    """
    A = _device.prepare_activations(A, "auto")  # CUDA arrays stay on their GPU
    N = A.shape[0]
    checked = [(check_labels(u, N, check_int(K, "n_modules", minimum=1), "neuron_labels"), int(K))
               for u, K in labelings]
    if _device.on_device(A):  # one pass over A in GPU memory per partition
        return [_sample_block_sums(A, u, K) / np.bincount(u, minlength=K) for u, K in checked]
    sums = _host_sample_sums(A, checked)
    for out in sums:
        check_finite(out.sum(axis=1), "A", along="column")
    return [out / np.bincount(u, minlength=K) for out, (u, K) in zip(sums, checked)]


def _host_sample_sums(A: np.ndarray, checked) -> list:
    """Per partition (u, K), the (n_samples, K) sums of A's rows by module, from one blocked pass."""
    N, M = A.shape
    sums = [np.zeros((M, K)) for _, K in checked]
    if A.strides[0] < A.strides[1]:  # sample-major: blocks of whole samples
        for c0, c1 in row_blocks(M, N * A.itemsize, _BLOCK_BYTES):
            block = A[:, c0:c1].T
            for out, (u, K) in zip(sums, checked):
                out[c0:c1] = _core.build_table(block, u, K)
    else:  # neuron-major: blocks of neurons, partial sums
        for r0, r1 in row_blocks(N, M * A.itemsize, _BLOCK_BYTES):
            block = A[r0:r1].T
            for out, (u, K) in zip(sums, checked):
                out += _core.build_table(block, np.ascontiguousarray(u[r0:r1]), K)
    return sums


def assign_neurons(A, sample_labels, *, n_modules: int | None = None) -> np.ndarray:
    """Module of each neuron given a sample partition: the one whose samples it activates most on
    average (the mirror of :func:`assign_samples`; IterD's initialisation places neurons so).

    ``A`` is (n_neurons, n_samples), read in place in one pass; modules without samples are never
    chosen.

    Examples
    --------
    >>> import numpy as np, ulcmod
    >>> from ulcmod.core.objective import assign_neurons
    >>> assign_neurons(np.array([[5.0, 0.0, 1.0], [0.0, 3.0, 4.0]]), [0, 1, 1]).tolist()
    [0, 1]
    """
    A = check_activations(A)
    K = _n_modules(sample_labels, n_modules)
    s = check_labels(sample_labels, A.shape[1], K, "sample_labels", require_all=False)
    R = _core.build_table(A, s, K)
    check_finite(R.sum(axis=1), "A", along="row")
    m = np.bincount(s, minlength=K)
    means = np.where(m > 0, R / np.maximum(m, 1), -np.inf)
    return means.argmax(axis=1).astype(np.int32)
