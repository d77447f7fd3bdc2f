"""Is a module structure real? IterD on A against IterD on row-permuted copies of A.

The null model permutes every row of A (a neuron's activations over the samples) independently:
each neuron keeps exactly its own distribution of values, while any co-activation between
neurons, which is what a module is, is destroyed. IterD always returns K modules, also on such a
matrix; :func:`null_test` says how often the permuted matrices give an L (and a best diagonal
block) as high as A's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core._validation import check_int, check_n_modules, seed_from
from ..core.iterd import IterDResult
from ._resampling import (
    NULL,
    block_means,
    permute_rows,
    prepare,
    progress_bar,
    real_run,
    run_iterd,
    stream,
    warn_not_converged,
)


@dataclass(frozen=True)
class NullTestResult:
    """Outcome of :func:`null_test` for one K.

    Attributes
    ----------
    n_modules : int
        K.
    L : float
        IterD's objective on A (the run in ``result``).
    null_L : ndarray of shape (n_null,)
        IterD's L on each row-permuted matrix.
    z : float
        ``(L - mean(null_L)) / std(null_L, ddof=1)``.
    p_value : float
        ``(1 + #{null_L >= L}) / (1 + n_null)``: the permutation p-value with the +1 correction
        (the real matrix counts as one draw of the null), never 0; at least ``1 / (1 + n_null)``.
    module_sizes : ndarray of shape (K, 2)
        Neurons and samples of each module: ``(n_k, m_k)``.
    module_means : ndarray of shape (K,)
        Each module's diagonal-block mean ``b_k = mean of A[i, j] over i in U_k, j in S_k``.
    null_best_means : ndarray of shape (n_null,)
        For each null run, its best block mean ``max_k b_k`` (its K blocks computed the same way).
    module_z : ndarray of shape (K,)
        ``(b_k - mean(null_best_means)) / std(null_best_means, ddof=1)``.
    module_p_values : ndarray of shape (K,)
        ``(1 + #{null_best_means >= b_k}) / (1 + n_null)``. Comparing each module with the null's
        *best* block is the max-statistic permutation test: the probability that any module of a
        structureless matrix gets p <= alpha is at most alpha (family-wise over the K modules),
        so no further multiple-testing correction is needed across modules.
    result : IterDResult
        The run on A whose modules are tested.
    n_not_converged : int
        Null runs that stopped at ``max_iter`` (a ConvergenceWarning was given).
    """

    n_modules: int
    L: float
    null_L: np.ndarray
    z: float
    p_value: float
    module_sizes: np.ndarray
    module_means: np.ndarray
    null_best_means: np.ndarray
    module_z: np.ndarray
    module_p_values: np.ndarray
    result: IterDResult
    n_not_converged: int

    @property
    def n_null(self) -> int:
        """Number of null runs."""
        return int(self.null_L.size)


def _standardised(x, null) -> np.ndarray:
    sd = np.std(null, ddof=1)
    return (np.asarray(x, dtype=np.float64) - np.mean(null)) / sd if sd > 0 else np.full(np.shape(x), np.inf)


def _p_values(x, null) -> np.ndarray:
    """(1 + #{null >= x}) / (1 + n_null) for each x."""
    null = np.sort(np.asarray(null, dtype=np.float64))
    at_least = null.size - np.searchsorted(null, np.asarray(x, dtype=np.float64), side="left")
    return (1.0 + at_least) / (1.0 + null.size)


def null_runs(A, ks, n_null: int, settings: dict, entropy: int, show: bool) -> dict:
    """IterD on n_null row-permuted copies of A, for every K in ks.

    Permuted matrix r is drawn once (from the stream (NULL, r)) and shared by every K, in one
    buffer of A's dtype. Returns {K: (null L values, best block mean per run, runs not converged)}.
    """
    L = {K: np.empty(n_null) for K in ks}
    best = {K: np.empty(n_null) for K in ks}
    bad = dict.fromkeys(ks, 0)
    buffer = np.empty(A.shape, dtype=A.dtype)
    with progress_bar(n_null * len(ks), "null runs", show) as bar:
        for r in range(n_null):
            permuted = permute_rows(A, seed_from(stream(entropy, NULL, r)), out=buffer)
            for K in ks:
                res = run_iterd(permuted, K, settings, stream(entropy, NULL, r, K))
                L[K][r] = res.L
                best[K][r] = block_means(permuted, res).max()
                bad[K] += not res.converged
                bar.update(1)
    return {K: (L[K], best[K], bad[K]) for K in ks}


def summarise_null(A, real: IterDResult, null_L, null_best, n_bad: int) -> NullTestResult:
    """The NullTestResult of one K from its real run and its null runs."""
    means = block_means(A, real)
    K = real.n_modules
    sizes = np.stack([np.bincount(real.neuron_labels, minlength=K),
                      np.bincount(real.sample_labels, minlength=K)], axis=1)
    return NullTestResult(
        n_modules=K,
        L=float(real.L),
        null_L=null_L,
        z=float(_standardised(real.L, null_L)),
        p_value=float(_p_values(real.L, null_L)),
        module_sizes=sizes,
        module_means=means,
        null_best_means=null_best,
        module_z=_standardised(means, null_best),
        module_p_values=_p_values(means, null_best),
        result=real,
        n_not_converged=n_bad,
    )


def null_test(A, n_modules, n_null=100, *, iterd_params=None, result=None, random_state=None,
              progress="auto") -> NullTestResult:
    """Test IterD's modules of A against matrices whose rows are permuted independently.

    Null matrix ``r`` is A with every row (one neuron's activations over the samples) shuffled in
    an order of its own: each neuron keeps exactly its own values, the co-activation between
    neurons is gone. IterD runs on each with the same settings as on A; the real L is compared
    with the ``n_null`` null L values, and each module's diagonal-block mean with the best block
    mean of every null run (see :class:`NullTestResult` for the exact definitions).

    Parameters
    ----------
    A : array of shape (n_neurons, n_samples), float16, bfloat16, float32 or float64
        Activations, read in place as by :func:`ulcmod.iterd` (memmaps included). The null
        matrices are written into one reused buffer of A's shape and dtype.
    n_modules : int
        K.
    n_null : int, default 100
        Null runs, >= 2. The smallest reachable p-value is ``1 / (1 + n_null)``: 100 runs are
        needed for p < 0.01, 19 for p < 0.05.
    iterd_params : dict, optional
        Settings of :func:`ulcmod.iterd` shared by the run on A and every null run: ``init``
        (a name), ``n_init``, ``max_iter``, ``tol``, ``order``, ``pca_neurons``.
    result : IterDResult, optional
        The run on A to test (e.g. the one being reported), made by ``ulcmod.iterd(A, K, ...)``
        with the same settings as ``iterd_params``; it is checked to belong to A (its L is
        recomputed). None runs IterD on A here.
    random_state : None, int or numpy Generator
        Seeds the permutations and every run; the same seed gives the same result. Null run ``r``
        does not depend on ``n_null``, so a larger ``n_null`` extends a smaller one.
    progress : "auto" or bool, default "auto"
        A progress bar over the null runs ("auto": when stderr is a terminal).

    Returns
    -------
    NullTestResult

    Examples
    --------
    >>> import numpy as np, ulcmod
    >>> from ulcmod.core.synthetic import planted
    >>> A, _, _ = planted(120, 60, 3, 1.0, random_state=0)  # 3 modules of 40 neurons x 20 samples
    >>> rng = np.random.default_rng(0)
    >>> res = ulcmod.null_test(A, 3, n_null=20, random_state=0, progress=False)
    >>> res.p_value == 1 / 21, bool(res.z > 10), bool((res.module_p_values < 0.05).all())
    (True, True, True)
    >>> noise = rng.normal(size=(120, 60))
    >>> bool(ulcmod.null_test(noise, 3, n_null=20, random_state=0, progress=False).p_value > 0.05)
    True
    """
    A, settings, show, entropy = prepare(A, iterd_params, random_state, progress)
    K = check_n_modules(n_modules, *A.shape)
    n_null = check_int(n_null, "n_null", minimum=2)
    real = real_run(A, K, settings, entropy, result, "result")
    null_L, null_best, n_bad = null_runs(A, [K], n_null, settings, entropy, show)[K]
    warn_not_converged(n_bad, n_null, f"null runs at K={K}")
    return summarise_null(A, real, null_L, null_best, n_bad)
