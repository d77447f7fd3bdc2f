"""What the significance and stability analyses share.

* One set of IterD settings for every run, so the real run, its null runs and its resampled runs
  differ only in their data and seeds.
* Seed streams keyed by purpose and index (``SeedSequence(entropy, spawn_key=...)``): null run
  ``r`` or resampled run ``r`` gets the same data and the same IterD seed whatever ``n_null``,
  ``n_runs`` or the list of K, so ``select_k`` repeats ``null_test`` and ``stability`` exactly.
* The resampled matrices, written into one reused buffer of A's dtype: independent row
  permutations (the C++ core, on every core) and bootstrap draws of the samples (columns).
* The run loop: a progress bar over runs, and one ConvergenceWarning for all runs that stopped at
  ``max_iter`` instead of one per run.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping

import numpy as np
from tqdm.auto import tqdm

from .. import _core
from ..core._validation import check_activations, check_labels, check_random_state, seed_from
from ..core.exceptions import ConvergenceWarning
from ..core.iterd import IterDResult, iterd
from ..core.objective import module_features, objective

# Settings of iterd() that every run of an analysis shares; the seed and progress are per run.
ITERD_SETTINGS = ("init", "n_init", "max_iter", "tol", "order", "pca_neurons")

# Purposes of the seed streams (the first entry of their spawn keys).
REAL, NULL, RUN = 0, 1, 2

# Relative difference allowed between a given result's L and L recomputed on A (summation order).
RESULT_L_RTOL = 1e-6


def prepare(A, iterd_params, random_state, progress):
    """The common arguments checked: ``(A, iterd settings, show a bar, root entropy)``."""
    return (check_activations(A), check_iterd_params(iterd_params), check_progress(progress),
            root_entropy(random_state))


def check_iterd_params(iterd_params) -> dict:
    """The IterD settings shared by every run: a dict with keys from ITERD_SETTINGS."""
    if iterd_params is None:
        return {}
    if not isinstance(iterd_params, Mapping):
        raise TypeError(f"iterd_params must be a dict of iterd() settings, got {type(iterd_params).__name__}")
    unknown = sorted(set(iterd_params) - set(ITERD_SETTINGS))
    if unknown:
        raise ValueError(
            f"iterd_params has unknown or per-run key(s) {unknown}; allowed keys are {list(ITERD_SETTINGS)} "
            f"(the seed comes from random_state, progress from progress)"
        )
    if not isinstance(iterd_params.get("init", "balanced-kmeans"), str):
        raise ValueError(
            "iterd_params['init'] must name an initialisation ('balanced-kmeans', 'kmeans' or 'random'): "
            "given labels cannot fit permuted or resampled data"
        )
    return dict(iterd_params)


def check_progress(progress) -> bool:
    """Whether to show a bar: True/False, or "auto" (on when stderr is a terminal)."""
    if progress == "auto":
        return sys.stderr.isatty()
    if isinstance(progress, (bool, np.bool_)):
        return bool(progress)
    raise ValueError(f"progress must be True, False or 'auto', got {progress!r}")


def root_entropy(random_state) -> int:
    """The entropy every seed stream of one analysis derives from."""
    return seed_from(check_random_state(random_state))


def stream(entropy: int, *key: int) -> np.random.Generator:
    """The generator of one purpose and index, e.g. ``stream(e, NULL, r)``."""
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=tuple(int(k) for k in key)))


def run_iterd(A, K: int, settings: dict, rng: np.random.Generator) -> IterDResult:
    """One IterD run; a run stopping at max_iter is counted by the caller, not warned about here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return iterd(A, K, random_state=rng, progress=False, **settings)


def real_run(A, K: int, settings: dict, entropy: int, result, name: str) -> IterDResult:
    """The run on A itself: `result` after checking it belongs to A and K, or a fresh IterD run."""
    if result is None:
        res = run_iterd(A, K, settings, stream(entropy, REAL, K))
        warn_not_converged(int(not res.converged and settings.get("max_iter", 1) > 0), 1, "the run on A")
        return res
    if not isinstance(result, IterDResult):
        raise TypeError(f"{name} must be an IterDResult from ulcmod.iterd(A, K, ...) or None, "
                        f"got {type(result).__name__}")
    N, M = A.shape
    u = check_labels(result.neuron_labels, N, K, f"{name}.neuron_labels")
    s = check_labels(result.sample_labels, M, K, f"{name}.sample_labels")
    L = objective(A, u, s, n_modules=K).L
    if not np.isclose(L, result.L, rtol=RESULT_L_RTOL, atol=0.0):
        raise ValueError(
            f"{name} has L={result.L:.6g} but its labels give L={L:.6g} on A: it was computed on another "
            f"matrix; pass the A it was fitted on, or result=None to run IterD here"
        )
    return result


def warn_not_converged(n_bad: int, n_total: int, what: str) -> None:
    if n_bad:
        warnings.warn(
            f"{n_bad} of {n_total} IterD runs ({what}) stopped at max_iter with elements still moving; "
            f"raise iterd_params['max_iter'] to let them converge",
            ConvergenceWarning,
            stacklevel=3,
        )


def progress_bar(total: int, desc: str, show: bool):
    return tqdm(total=total, desc=desc, unit="run", leave=False, disable=not show)


def permute_rows(A, seed: int, out: np.ndarray | None = None) -> np.ndarray:
    """Every row of A in an independent random order, drawn from (seed, row index) alone.

    Each neuron keeps exactly its own values (the same multiset per row, bit for bit), while
    their co-activation across neurons is destroyed: the null model of :func:`ulcmod.null_test`.
    Runs on every core in the C++ core, one pass over A; `out` (C-ordered, A's shape and dtype)
    is reused when given. The result does not depend on the number of threads. Any dtype the core
    reads (float16, bfloat16, float32, float64) works: values are moved as bits.

    Examples
    --------
    >>> import numpy as np
    >>> from ulcmod.analyses._resampling import permute_rows
    >>> A = np.arange(12, dtype=np.float32).reshape(3, 4)
    >>> P = permute_rows(A, seed=0)
    >>> bool((np.sort(P, axis=1) == A).all())
    True
    """
    A = np.asarray(A)  # checked by the callers; the core rejects dtypes it cannot read
    if out is None:
        out = np.empty(A.shape, dtype=A.dtype)
    _core.permute_rows(A, out, int(seed) % 2**64)
    return out


def bootstrap_columns(A, rng: np.random.Generator, out: np.ndarray) -> np.ndarray:
    """A with its samples (columns) drawn with replacement, written into `out` (one pass).

    The drawn indices are sorted: IterD does not depend on the order of samples beyond its seeds,
    and sorted indices read A front to back (memmaps page in sequentially).
    """
    M = A.shape[1]
    columns = np.sort(rng.integers(0, M, size=M))
    np.take(A, columns, axis=1, out=out)
    return out


def block_means(A, res: IterDResult) -> np.ndarray:
    """Mean of A over each diagonal block ``U_k x S_k`` of a result: shape (K,), one pass over A."""
    K = res.n_modules
    X = module_features(A, res.neuron_labels, n_modules=K)  # (M, K): means over each U_k
    sums = np.bincount(res.sample_labels, weights=X[np.arange(X.shape[0]), res.sample_labels], minlength=K)
    return sums / np.bincount(res.sample_labels, minlength=K)
