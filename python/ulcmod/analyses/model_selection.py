"""Which K do the data support? Significance against the null and stability, for every K."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..core._validation import check_choice, check_int, check_n_modules
from ._resampling import prepare, real_run, warn_not_converged
from .module_stability import RESAMPLES, StabilityResult, stability_runs, summarise_stability
from .significance import NullTestResult, null_runs, summarise_null


@dataclass(frozen=True)
class SelectKResult:
    """Outcome of :func:`select_k`: one entry per K of ``ks`` (in increasing order).

    Attributes
    ----------
    ks : ndarray of int
        The Ks tried.
    L : ndarray
        IterD's L on A.
    null_mean, null_std : ndarray
        Mean and standard deviation (ddof=1) of L over the null runs.
    gap : ndarray
        ``log L - mean(log null_L)``: how far A's L is above the null's, on a scale that does not
        shrink with K as L itself does (L falls roughly as 1 / K^2 on any matrix); nan where an
        L is not positive.
    z : ndarray
        ``(L - null_mean) / null_std``.
    p_values : ndarray
        The permutation p-values of :func:`ulcmod.null_test`.
    mean_ari : ndarray
        Mean adjusted Rand index between the stability runs (:func:`ulcmod.stability`).
    mean_module_stability : ndarray
        Mean over the modules of their stability (matched Jaccard with the reference).
    recommended_k : int or None
        Among the Ks with ``p_value <= alpha``, the one with the highest ``mean_ari`` (the smaller
        K on a tie); None if no K is significant. A K below the true number of modules merges
        modules in ways that change from resample to resample, a K above it splits one, so
        agreement between runs peaks at the K the data hold.
    alpha : float
        The significance level used.
    null_tests : tuple of NullTestResult
    stabilities : tuple of StabilityResult
    """

    ks: np.ndarray
    L: np.ndarray
    null_mean: np.ndarray
    null_std: np.ndarray
    gap: np.ndarray
    z: np.ndarray
    p_values: np.ndarray
    mean_ari: np.ndarray
    mean_module_stability: np.ndarray
    recommended_k: int | None
    alpha: float
    null_tests: tuple
    stabilities: tuple


def recommend_k(ks, p_values, mean_ari, alpha: float):
    """The K of highest mean ARI among those with p <= alpha (smallest on ties); None if none."""
    ok = np.flatnonzero(np.asarray(p_values) <= alpha)
    if ok.size == 0:
        return None
    ari = np.asarray(mean_ari)[ok]
    return int(np.asarray(ks)[ok[np.flatnonzero(ari == ari.max())[0]]])


def _check_ks(ks, N: int, M: int) -> list:
    try:
        values = list(ks)
    except TypeError:
        raise TypeError(f"ks must be a list of numbers of modules, e.g. [2, 3, 4, 5], got {ks!r}") from None
    if not values:
        raise ValueError("ks is empty; give at least one number of modules, e.g. ks=range(2, 9)")
    for k in values:
        if not isinstance(k, numbers.Integral) or isinstance(k, bool):
            raise TypeError(f"ks must hold integers, got {k!r} ({type(k).__name__})")
    return sorted({check_n_modules(k, N, M, name="ks") for k in values})


def _check_results(results, ks) -> dict:
    if results is None:
        return {}
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be a dict {{K: IterDResult}}, got {type(results).__name__}")
    extra = sorted(set(results) - set(ks))
    if extra:
        raise ValueError(f"results holds runs for K={extra}, which are not in ks={ks}; add them to ks or drop them")
    return dict(results)


def _log_gap(test: NullTestResult) -> float:
    """log L - mean(log null_L); nan where an L is not positive (no log scale there)."""
    if test.L <= 0 or (test.null_L <= 0).any():
        return float("nan")
    return float(np.log(test.L) - np.log(test.null_L).mean())


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    return float(alpha)


def select_k(A, ks, *, n_null=20, n_runs=20, alpha=0.05, resample="bootstrap", iterd_params=None,
             results=None, random_state=None, progress="auto") -> SelectKResult:
    """Significance against the row-permutation null and stability for every K; a recommended K.

    For each K, :func:`ulcmod.null_test` and :func:`ulcmod.stability` with these settings and
    ``random_state`` (their results are exactly those of the two functions called alone). The
    null matrices and the resamples are drawn once and shared by every K, so the cost is
    ``len(ks) * (1 + n_null + n_runs)`` IterD runs and ``n_null + n_runs`` passes to make the
    matrices.

    The rule: among the Ks whose L beats the null (``p_value <= alpha``), recommend the one with
    the highest mean adjusted Rand index between the stability runs; on a tie, the smaller K.

    Parameters
    ----------
    A : array of shape (n_neurons, n_samples), float16, bfloat16, float32 or float64
        Activations, read in place (memmaps included).
    ks : iterable of int
        The Ks to try (each 2 <= K <= min(n_neurons, n_samples)).
    n_null : int, default 20
        Null runs per K; the smallest p-value is ``1 / (1 + n_null)``, so ``alpha`` must be at
        least that for a K to pass (19 runs for alpha = 0.05).
    n_runs : int, default 20
        Stability runs per K.
    alpha : float, default 0.05
        Significance level of the null test.
    resample : {"bootstrap", "none"}, default "bootstrap"
        As in :func:`ulcmod.stability`.
    iterd_params : dict, optional
        Settings of :func:`ulcmod.iterd` shared by every run (see :func:`ulcmod.null_test`).
    results : dict {K: IterDResult}, optional
        The runs on A to test and score for some or all of the Ks (e.g. the ones being reported),
        made with the same settings; each is checked to belong to A, as ``result`` is in
        :func:`ulcmod.null_test`. IterD runs on A here for the Ks it does not hold.
    random_state : None, int or numpy Generator
        Seeds everything; the same seed gives the same result.
    progress : "auto" or bool, default "auto"
        Progress bars over the runs ("auto": when stderr is a terminal).

    Returns
    -------
    SelectKResult

    Examples
    --------
    >>> import ulcmod
    >>> from ulcmod.core.synthetic import planted
    >>> A, _, _ = planted(120, 60, 3, 1.5, random_state=0)  # 3 modules of 40 neurons x 20 samples
    >>> sel = ulcmod.select_k(A, [2, 3, 4], n_null=19, n_runs=4, random_state=0, progress=False)
    >>> sel.recommended_k
    3
    """
    A, settings, show, entropy = prepare(A, iterd_params, random_state, progress)
    ks = _check_ks(ks, *A.shape)
    n_null = check_int(n_null, "n_null", minimum=2)
    n_runs = check_int(n_runs, "n_runs", minimum=2)
    alpha = _check_alpha(alpha)
    resample = check_choice(resample, "resample", RESAMPLES)

    results = _check_results(results, ks)
    reals = {K: real_run(A, K, settings, entropy, results.get(K), f"results[{K}]") for K in ks}
    nulls = null_runs(A, ks, n_null, settings, entropy, show)
    runs = stability_runs(A, ks, n_runs, resample, settings, entropy, show)
    tests: list[NullTestResult] = []
    stabilities: list[StabilityResult] = []
    for K in ks:
        warn_not_converged(nulls[K][2] + runs[K][2], n_null + n_runs, f"null and stability runs at K={K}")
        tests.append(summarise_null(A, reals[K], *nulls[K]))
        stabilities.append(summarise_stability(A, reals[K], *runs[K]))

    p = np.array([t.p_value for t in tests])
    ari = np.array([s.mean_ari for s in stabilities])
    return SelectKResult(
        ks=np.array(ks),
        L=np.array([t.L for t in tests]),
        null_mean=np.array([t.null_L.mean() for t in tests]),
        null_std=np.array([t.null_L.std(ddof=1) for t in tests]),
        gap=np.array([_log_gap(t) for t in tests]),
        z=np.array([t.z for t in tests]),
        p_values=p,
        mean_ari=ari,
        mean_module_stability=np.array([s.module_stability.mean() for s in stabilities]),
        recommended_k=recommend_k(ks, p, ari, alpha),
        alpha=alpha,
        null_tests=tuple(tests),
        stabilities=tuple(stabilities),
    )
