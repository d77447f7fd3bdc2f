"""Would a module appear again? IterD over restarts and bootstrap resamples of the samples.

Every run partitions all the neurons (a bootstrap resample draws samples, never neurons), so runs
are compared on their neuron sets: each run's modules are matched one to one with the reference
modules by the Hungarian method on their Jaccard overlaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..core._validation import check_choice, check_int, check_n_modules
from ..core.iterd import IterDResult
from ..core.objective import assign_samples
from ._resampling import (
    RUN,
    bootstrap_columns,
    prepare,
    progress_bar,
    real_run,
    run_iterd,
    stream,
    warn_not_converged,
)

RESAMPLES = ("bootstrap", "none")


@dataclass(frozen=True)
class StabilityResult:
    """Outcome of :func:`stability` for one K.

    Attributes
    ----------
    n_modules : int
        K.
    reference : IterDResult
        The run on all of A whose modules are scored (given, or made with the analysis' seed).
    module_stability : ndarray of shape (K,)
        For each reference module ``U_k``: the mean, over the runs, of its Jaccard overlap
        ``|U_k & V| / |U_k | V|`` with the run's module ``V`` matched to it. The matching is one
        to one, the assignment of the run's K modules to the K reference modules with the
        largest total Jaccard (Hungarian method), so a module that splits in two scores the
        overlap with one half only. 1 means every run reproduces the module exactly.
    matched_jaccard : ndarray of shape (n_runs, K)
        The overlaps behind ``module_stability``, per run.
    ari : ndarray of shape (n_runs, n_runs)
        Adjusted Rand index between the neuron labellings of every two runs (1 on the diagonal).
    mean_ari : float
        Mean of ``ari`` over the pairs of distinct runs: 1 for identical partitions, about 0 for
        unrelated ones.
    ari_to_reference : ndarray of shape (n_runs,)
        ARI of each run's neuron labels with the reference's.
    consensus_labels : ndarray of shape (n_neurons,)
        Each neuron's most frequent module over the runs, after relabelling every run's modules
        by their match with the reference; ties go to the reference's module. A reference
        module that no run reproduces can end up empty.
    consensus_sample_labels : ndarray of shape (n_samples,)
        The module each sample of A activates most on average over the consensus modules' neurons
        (:func:`ulcmod.assign_samples`), among the non-empty ones.
    agreement : ndarray of shape (n_neurons,)
        Fraction of the runs that put the neuron in its consensus module.
    run_labels : ndarray of shape (n_runs, n_neurons)
        Every run's neuron labels, as IterD returned them (not relabelled).
    run_L : ndarray of shape (n_runs,)
        IterD's L of every run (on its resampled matrix).
    n_not_converged : int
        Runs that stopped at ``max_iter`` (a ConvergenceWarning was given).
    """

    n_modules: int
    reference: IterDResult
    module_stability: np.ndarray
    matched_jaccard: np.ndarray
    ari: np.ndarray
    mean_ari: float
    ari_to_reference: np.ndarray
    consensus_labels: np.ndarray
    consensus_sample_labels: np.ndarray
    agreement: np.ndarray
    run_labels: np.ndarray
    run_L: np.ndarray
    n_not_converged: int

    @property
    def n_runs(self) -> int:
        """Number of runs."""
        return int(self.run_L.size)


def contingency(a, b, K: int, K_b: int | None = None) -> np.ndarray:
    """K x K_b (default K x K) counts ``C[p, q] = #{i : a[i] = p and b[i] = q}``."""
    K_b = K if K_b is None else K_b
    return np.bincount(np.asarray(a, dtype=np.int64) * K_b + b, minlength=K * K_b).reshape(K, K_b)


def split_shares(a, b, K: int, K_b: int) -> np.ndarray:
    """Share of each of the K modules of labels `a` that lands in each of the K_b modules of labels
    `b` (how modules split or merge between two numbers of modules); rows of empty modules are 0."""
    C = contingency(a, b, K, K_b).astype(np.float64)
    return C / np.maximum(C.sum(axis=1, keepdims=True), 1)


def jaccard_matrix(a, b, K: int) -> np.ndarray:
    """``J[p, q] = |{a = p} & {b = q}| / |{a = p} | {b = q}|`` (0 where both sets are empty)."""
    C = contingency(a, b, K).astype(np.float64)
    union = C.sum(axis=1)[:, None] + C.sum(axis=0)[None, :] - C
    return np.divide(C, union, out=np.zeros_like(C), where=union > 0)


def match_modules(reference, labels, K: int):
    """One-to-one match of `labels`' modules to the reference's, maximising the total Jaccard.

    Returns ``(matched, relabel)``: the Jaccard of each reference module with its match, shape
    (K,), and the map ``relabel[q] = p`` from a module of `labels` to its reference module.
    """
    J = jaccard_matrix(reference, labels, K)
    rows, cols = linear_sum_assignment(J, maximize=True)
    relabel = np.empty(K, dtype=np.int32)
    relabel[cols] = rows
    return J[rows, cols], relabel


def adjusted_rand_index(a, b, K: int) -> float:
    """ARI of two labellings with labels in [0, K) (Hubert and Arabie), from their contingency table."""
    C = contingency(a, b, K).astype(np.float64)
    n = C.sum()

    def pairs(x):
        return float((x * (x - 1)).sum() / 2)

    index, rows, cols = pairs(C), pairs(C.sum(axis=1)), pairs(C.sum(axis=0))
    expected = rows * cols / pairs(np.array([n]))
    top = (rows + cols) / 2
    return 1.0 if top == expected else (index - expected) / (top - expected)


def stability_runs(A, ks, n_runs: int, resample: str, settings: dict, entropy: int, show: bool) -> dict:
    """IterD on n_runs resamples of A for every K in ks: {K: (neuron labels (n_runs, N), L, not converged)}.

    Resample r is drawn once (from the stream (RUN, r)) and shared by every K; bootstrap draws go
    into one buffer of A's dtype.
    """
    labels = {K: np.empty((n_runs, A.shape[0]), dtype=np.int32) for K in ks}
    L = {K: np.empty(n_runs) for K in ks}
    bad = dict.fromkeys(ks, 0)
    buffer = np.empty(A.shape, dtype=A.dtype) if resample == "bootstrap" else None
    with progress_bar(n_runs * len(ks), "stability runs", show) as bar:
        for r in range(n_runs):
            data = A if buffer is None else bootstrap_columns(A, stream(entropy, RUN, r), buffer)
            for K in ks:
                res = run_iterd(data, K, settings, stream(entropy, RUN, r, K))
                labels[K][r] = res.neuron_labels
                L[K][r] = res.L
                bad[K] += not res.converged
                bar.update(1)
    return {K: (labels[K], L[K], bad[K]) for K in ks}


def _consensus(reference, labels, relabels, K: int):
    """Majority module of each neuron over the relabelled runs (ties: the reference's) and its share."""
    N = reference.size
    rows = np.arange(N)
    votes = np.zeros((N, K), dtype=np.int32)
    for run, relabel in zip(labels, relabels):
        votes[rows, relabel[run]] += 1
    score = 2 * votes  # the reference adds half a vote: it decides ties and nothing else
    score[rows, reference] += 1
    consensus = score.argmax(axis=1).astype(np.int32)
    return consensus, (votes[rows, consensus] / len(labels)).astype(np.float32)


def _samples_of(A, neuron_labels, K: int) -> np.ndarray:
    """Sample labels given neuron labels that may leave modules empty (those are skipped)."""
    used, compact = np.unique(neuron_labels, return_inverse=True)
    return used[assign_samples(A, compact.astype(np.int32), n_modules=used.size)].astype(np.int32)


def summarise_stability(A, reference: IterDResult, labels, run_L, n_bad: int) -> StabilityResult:
    """The StabilityResult of one K from its reference and its runs' neuron labels."""
    K = reference.n_modules
    ref = reference.neuron_labels
    n_runs = labels.shape[0]
    matched = np.empty((n_runs, K))
    relabels = []
    for r in range(n_runs):
        matched[r], relabel = match_modules(ref, labels[r], K)
        relabels.append(relabel)
    ari = np.eye(n_runs)
    for r in range(n_runs):
        for q in range(r + 1, n_runs):
            ari[r, q] = ari[q, r] = adjusted_rand_index(labels[r], labels[q], K)
    pairs = ari[np.triu_indices(n_runs, k=1)]
    consensus, agreement = _consensus(ref, labels, relabels, K)
    return StabilityResult(
        n_modules=K,
        reference=reference,
        module_stability=matched.mean(axis=0),
        matched_jaccard=matched,
        ari=ari,
        mean_ari=float(pairs.mean()) if pairs.size else 1.0,
        ari_to_reference=np.array([adjusted_rand_index(ref, run, K) for run in labels]),
        consensus_labels=consensus,
        consensus_sample_labels=_samples_of(A, consensus, K),
        agreement=agreement,
        run_labels=labels,
        run_L=run_L,
        n_not_converged=n_bad,
    )


def stability(A, n_modules, n_runs=20, *, resample="bootstrap", iterd_params=None, reference=None,
              random_state=None, progress="auto") -> StabilityResult:
    """How reproducible IterD's modules of A are over restarts and bootstrap resamples.

    Run ``r`` draws a new seed and, with ``resample="bootstrap"``, ``n_samples`` samples (columns
    of A) with replacement; IterD then partitions all neurons again. Each run's modules are matched
    one to one with the reference's (Hungarian method on the Jaccard overlaps of their neuron
    sets); a module's stability is its mean matched Jaccard over the runs. The runs also give the
    mean adjusted Rand index between runs and a consensus labelling (see :class:`StabilityResult`).

    Parameters
    ----------
    A : array of shape (n_neurons, n_samples), float16, bfloat16, float32 or float64
        Activations, read in place as by :func:`ulcmod.iterd` (memmaps included). Bootstrap
        resamples are gathered into one reused buffer of A's shape and dtype (one pass each).
    n_modules : int
        K.
    n_runs : int, default 20
        Runs, >= 2.
    resample : {"bootstrap", "none"}, default "bootstrap"
        "bootstrap": every run on a bootstrap resample of the samples, with its own seed.
        "none": restarts only (new seeds on A itself), which measures the optimisation's
        dependence on the initialisation alone.
    iterd_params : dict, optional
        Settings of :func:`ulcmod.iterd` shared by every run and the reference: ``init`` (a
        name), ``n_init``, ``max_iter``, ``tol``, ``order``, ``pca_neurons``.
    reference : IterDResult, optional
        The modules to score (e.g. the ones being reported), from ``ulcmod.iterd(A, K, ...)`` with
        the same settings; it is checked to belong to A. None runs IterD on A here, with the seed
        that :func:`ulcmod.null_test` uses for its run on A (same ``random_state``, same run).
    random_state : None, int or numpy Generator
        Seeds the resamples and every run; the same seed gives the same result. Run ``r`` does
        not depend on ``n_runs``.
    progress : "auto" or bool, default "auto"
        A progress bar over the runs ("auto": when stderr is a terminal).

    Returns
    -------
    StabilityResult

    Examples
    --------
    >>> import numpy as np, ulcmod
    >>> from ulcmod.core.synthetic import planted
    >>> A, _, _ = planted(120, 60, 3, 1.5, random_state=0)  # 3 modules of 40 neurons x 20 samples
    >>> res = ulcmod.stability(A, 3, n_runs=5, random_state=0, progress=False)
    >>> bool(res.module_stability.min() > 0.9), bool(res.mean_ari > 0.9)
    (True, True)
    >>> np.bincount(res.consensus_labels).tolist()
    [40, 40, 40]
    """
    A, settings, show, entropy = prepare(A, iterd_params, random_state, progress)
    K = check_n_modules(n_modules, *A.shape)
    n_runs = check_int(n_runs, "n_runs", minimum=2)
    resample = check_choice(resample, "resample", RESAMPLES)
    ref = real_run(A, K, settings, entropy, reference, "reference")
    labels, run_L, n_bad = stability_runs(A, [K], n_runs, resample, settings, entropy, show)[K]
    warn_not_converged(n_bad, n_runs, f"stability runs at K={K}")
    return summarise_stability(A, ref, labels, run_L, n_bad)
