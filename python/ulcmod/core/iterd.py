"""IterD: joint partition of neurons and samples into K function modules (ULCMOD).

The Python side validates, initialises and records history; every sweep runs in the C++ core
(``_core.IterDState``) with the GIL released.
"""

from __future__ import annotations

import importlib
import sys
import time
import warnings
from dataclasses import dataclass, fields

import numpy as np
from tqdm.auto import tqdm

from .. import _core
from . import _device
from ._estimator import ParamsMixin, fit_function_signature
from ._files import read_npz
from ._pca import sample_pca
from ._validation import (
    check_choice,
    check_int,
    check_labels,
    check_n_modules,
    check_random_state,
    check_tol,
    largest_abs,
    overflow_error,
    seed_from,
)
from .balanced_kmeans import run_kmeans
from .exceptions import ConvergenceWarning
from .objective import Objective, assign_samples, module_features

INITS = ("balanced-kmeans", "kmeans", "random")
ORDERS = ("parallel", "random", "sequential")
PCA_COMPONENTS = 16  # the published initialisation clusters samples in 16 PCA dimensions
# One k-means run per IterD restart (the restarts are IterD's n_init), with sklearn's max_iter and tol.
_INIT_KMEANS = {"n_init": 1, "max_iter": 300, "tol": 1e-4}
_PROGRESS_MIN_ENTRIES = 2 * 10**8  # progress="auto" shows a bar from this size of A (runs of minutes)


@dataclass(frozen=True)
class IterDHistory:
    """Per-iteration record; row 0 is the initial labelling (its time is the initialisation's)."""

    L: np.ndarray
    neurons_moved: np.ndarray
    samples_moved: np.ndarray
    seconds: np.ndarray


@dataclass(frozen=True)
class IterDResult:
    """Outcome of :func:`iterd` (the best of ``n_init`` runs).

    ``L``, ``xi`` and ``B`` are exact for the returned labels (recomputed from the block sums).
    ``table_builds`` counts full passes over A spent on block-sum tables and ``update_reads`` the
    elements read by incremental table updates, so the cost of a run can be told in passes.
    """

    neuron_labels: np.ndarray
    sample_labels: np.ndarray
    L: float
    xi: float
    B: float
    n_iter: int
    converged: bool
    history: IterDHistory
    table_builds: int
    update_reads: int

    @property
    def n_modules(self) -> int:
        """K."""
        return int(self.neuron_labels.max()) + 1

    def module_features(self, A) -> np.ndarray:
        """Mean activation of each sample of A (N x M') on each module, shape (M', K)."""
        return module_features(A, self.neuron_labels, n_modules=self.n_modules)

    def assign_samples(self, A) -> np.ndarray:
        """Best module for each sample of A (N x M'): the one whose neurons it activates most."""
        return assign_samples(A, self.neuron_labels, n_modules=self.n_modules)

    def save(self, path) -> None:
        """Write every field to the ``.npz`` file `path` (the history as ``history_<field>``).

        The labels are stored as ``neuron_labels`` and ``sample_labels``, as for every method in
        a run folder, so ``np.load(path)["neuron_labels"]`` reads them too.
        """
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "history"}
        arrays.update({f"history_{f.name}": getattr(self.history, f.name) for f in fields(IterDHistory)})
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path) -> IterDResult:
        """Read a result written by :meth:`save` (ValueError naming the file when it is damaged)."""
        with read_npz(path) as f:
            history = IterDHistory(**{g.name: f[f"history_{g.name}"] for g in fields(IterDHistory)})
            values = {g.name: f[g.name] for g in fields(cls) if g.name != "history"}
        # 0-d arrays hold the scalar fields (L, n_iter, converged, ...): back to Python scalars
        return cls(history=history, **{k: v.item() if v.ndim == 0 else v for k, v in values.items()})


def _objective(state) -> Objective:
    """L, xi and B of a core ``IterDState`` (the one place that reads the core's objective)."""
    obj = state.objective()
    return Objective(obj.L, obj.xi, obj.B)


def _initial_labels(A, K, init, rng, scores):
    """(neuron labels or None, sample labels) for one restart. None: the core derives neurons."""
    N, M = A.shape
    if init == "random":
        return rng.permutation(np.arange(N) % K).astype(np.int32), rng.permutation(np.arange(M) % K).astype(np.int32)
    return None, run_kmeans(scores, K, balanced=init == "balanced-kmeans", random_state=rng, **_INIT_KMEANS).labels


def _given_labels(init, N, M, K):
    if isinstance(init, tuple):
        if len(init) != 2:
            raise ValueError("init as a tuple must be (neuron_labels, sample_labels)")
        return (check_labels(init[0], N, K, "init neuron labels"),
                check_labels(init[1], M, K, "init sample labels"))
    return None, check_labels(init, M, K, "init sample labels")


def _check_init(init, n_init, N, M, K):
    """(given labels or None, n_init): labels given as `init` allow one run only."""
    if isinstance(init, str):
        check_choice(init, "init", INITS)
        return None, n_init
    given = _given_labels(init, N, M, K)
    if n_init != 1:
        warnings.warn(f"init labels were given, so n_init={n_init} is ignored and one run is made",
                      RuntimeWarning, stacklevel=4)
    return given, 1


def _show_progress(progress, N, M) -> bool:
    if progress == "auto":
        return N * M >= _PROGRESS_MIN_ENTRIES and sys.stderr.isatty()
    return bool(progress)


def _sample_scores(A, init, given, pca_neurons, rng):
    """PCA scores of the samples for the k-means initialisations (None otherwise), and seconds."""
    t_start = time.perf_counter()
    scores = None
    if given is None and init != "random":
        N = A.shape[0]
        rows = None
        if pca_neurons is not None and N > pca_neurons:
            rows = np.sort(rng.choice(N, pca_neurons, replace=False))
        scores = sample_pca(A, PCA_COMPONENTS, rng, rows=rows)
    return scores, time.perf_counter() - t_start


def _new_state(A, source, K, u0, s0, tol, seed):
    """The core's IterD state on ``source()`` (A, or a backend holding it); finite values whose
    float64 sums overflow are told apart from NaN/inf (the core sees only the non-finite row sums)."""
    try:
        return _core.IterDState(source(), K, u0, s0, tol, seed)
    except ValueError as err:
        if "NaN or infinity" in str(err):
            _check_sums(A, float("inf"))
        raise


def _check_sums(A, L) -> None:
    """Raise the overflow error when A is finite but L (from its float64 sums) is not."""
    if not np.isfinite(L):  # the failure path only: a GPU's A is copied to look at it
        host = _device.to_host(A) if _device.on_device(A) else getattr(A, "host", A)  # a streamed A: its array
        for r0 in range(0, host.shape[0], 4096):
            bad = ~np.isfinite(np.asarray(host[r0:r0 + 4096])).all(axis=1)
            if bad.any():
                raise ValueError(f"A contains NaN or infinity (first in row {r0 + int(np.argmax(bad))}); replace "
                                 f"or drop the non-finite values first")
        raise overflow_error("A", largest_abs(host))


def _run(state, A, max_iter, order, verbose, bar, L0, t_init):
    _check_sums(A, L0)
    rows = [(L0, 0, 0, t_init)]
    converged = False
    for it in range(1, max_iter + 1):
        t0 = time.perf_counter()
        moved_n, moved_s = state.iterate(order)
        L = _objective(state).L
        _check_sums(A, L)  # never report a non-finite L, let alone as converged
        rows.append((L, moved_n, moved_s, time.perf_counter() - t0))
        if verbose:
            print(f"IterD iteration {it}: L={L:.6g}, neurons moved={moved_n}, samples moved={moved_s}, "
                  f"{rows[-1][3]:.3f}s", flush=True)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(L=f"{L:.4g}", moved=moved_n + moved_s)
        if moved_n == 0 and moved_s == 0:
            converged = True
            break
    return rows, converged


def _best_run(A, source, K, init, given, scores, t_pca, n_init, max_iter, tol, order, rng, verbose, bar):
    """(state, history rows, converged) of the restart with the highest final L. ``source()`` gives
    what each restart's state reads: A itself, or a backend holding it elsewhere."""
    best = None
    for restart in range(n_init):
        t0 = time.perf_counter()
        u0, s0 = given if given is not None else _initial_labels(A, K, init, rng, scores)
        state = _new_state(A, source, K, u0, s0, tol, seed_from(rng))
        L0 = _objective(state).L
        t_init = time.perf_counter() - t0 + (t_pca if restart == 0 else 0.0)
        rows, converged = _run(state, A, max_iter, order, verbose, bar, L0, t_init)
        if verbose and n_init > 1:
            print(f"IterD restart {restart + 1}/{n_init}: L={rows[-1][0]:.6g}", flush=True)
        if best is None or rows[-1][0] > best[1][-1][0]:
            best = (state, rows, converged)
    return best


def _result(state, rows, converged) -> IterDResult:
    obj = _objective(state)
    cols = list(zip(*rows))
    return IterDResult(
        neuron_labels=state.neuron_labels,
        sample_labels=state.sample_labels,
        L=obj.L,
        xi=obj.xi,
        B=obj.B,
        n_iter=len(rows) - 1,
        converged=converged,
        history=IterDHistory(
            L=np.array(cols[0], dtype=np.float64),
            neurons_moved=np.array(cols[1], dtype=np.int64),
            samples_moved=np.array(cols[2], dtype=np.int64),
            seconds=np.array(cols[3], dtype=np.float64),
        ),
        table_builds=state.table_builds,
        update_reads=state.update_reads,
    )


def _cluster_input(A):
    """A dask array or sharded activations, as IterD runs them on a Dask cluster
    (:mod:`ulcmod.distributed`); None for anything else."""
    if "dask.array" not in sys.modules and "ulcmod.distributed" not in sys.modules:
        return None  # neither kind of input can exist before its module is imported
    return importlib.import_module("ulcmod.distributed").cluster_input(A)


def _fit(A, n_modules, *, init, n_init, max_iter, tol, order, random_state, verbose, progress,
         pca_neurons, device) -> IterDResult:
    """IterD on A with the estimator's parameters (see :class:`IterD`)."""
    cluster = _cluster_input(A)
    A = _device.prepare_activations(A, device) if cluster is None else cluster
    N, M = A.shape
    K = check_n_modules(n_modules, N, M)
    n_init = check_int(n_init, "n_init", minimum=1)
    max_iter = check_int(max_iter, "max_iter", minimum=0)
    tol = check_tol(tol)
    order = check_choice(order, "order", ORDERS)
    rng = check_random_state(random_state)
    given, n_init = _check_init(init, n_init, N, M, K)
    if pca_neurons is not None:
        pca_neurons = check_int(pca_neurons, "pca_neurons", minimum=1)

    scores, t_pca = _sample_scores(A, init, given, pca_neurons, rng)
    bar = tqdm(total=n_init * max_iter, desc="IterD", unit="it", leave=False,
               disable=not _show_progress(progress, N, M))
    try:
        # Arrays in host memory are read by the CPU backend; a cluster's or a GPU's data by its own.
        source = (lambda: A.backend(K)) if hasattr(A, "backend") else (lambda: A)
        state, rows, converged = _best_run(A, source, K, init, given, scores, t_pca, n_init, max_iter,
                                           tol, order, rng, verbose, bar)
    finally:
        bar.close()
    if not converged and max_iter > 0:
        warnings.warn(
            f"IterD stopped at max_iter={max_iter} with elements still moving; raise max_iter "
            f"(or tol) to let it converge",
            ConvergenceWarning,
            stacklevel=3,
        )
    return _result(state, rows, converged)


class IterD(ParamsMixin):
    """Partition neurons and samples jointly into ``n_modules`` function modules (IterD).

    Maximises ``L = K * D / (P * H)`` (see :class:`ulcmod.Objective`) by alternating a neuron
    sweep and a sample sweep until an iteration moves nothing. Each element moves to the module
    that raises L most, only on a strict improvement, and never empties a module. Scikit-learn
    conventions; :func:`iterd` is the same as a function.

    ``A`` is neurons x samples: rows are neurons, columns samples (as sklearn's co-clustering
    estimators, ``row_labels_`` and ``column_labels_`` are provided as aliases).

    Parameters
    ----------
    n_modules : int, default 8
        K, with 2 <= K <= min(n_neurons, n_samples).
    init : {"balanced-kmeans", "kmeans", "random"}, array or tuple, default "balanced-kmeans"
        "balanced-kmeans" (as published): randomized PCA of the samples to 16 dimensions,
        balanced k-means of the samples into K equal groups, then each neuron to the group on
        which its mean activation is highest. "kmeans": the same with plain k-means. "random":
        random balanced labels for both sides. An integer array of n_samples sample labels (the
        neurons then follow as for "balanced-kmeans"), or a tuple (neuron_labels, sample_labels).
    n_init : int, default 1
        Restarts with different seeds; the highest L wins. Given labels allow only 1.
    max_iter : int, default 100
        Iterations (one neuron sweep + one sample sweep each). 0 returns the initial labelling.
        Stopping at max_iter with moves left gives a :class:`ConvergenceWarning`.
    tol : float, default 1e-9
        A move is taken only if it raises L by more than ``tol * |L|``.
    order : {"parallel", "random", "sequential"}, default "parallel"
        How a sweep visits its elements. "parallel": score every element against the current
        state on all cores, move the improving ones one at a time in index order (each re-scored
        exactly against the state as it is then), and repeat until none improves. "random": the
        published algorithm, one element at a time in a fresh seeded permutation per sweep (the
        reference trajectory). "sequential": one at a time in index order. Every order moves
        only on strict improvements and stops only at a local optimum.
    random_state : None, int or numpy Generator
        Seeds the PCA, k-means, random labels and visit orders; same seed, same result.
    verbose : bool, default False
        Print one line per iteration.
    progress : "auto" or bool, default "auto"
        A progress bar over iterations ("auto": on a terminal, for matrices of 2e8+ entries).
    pca_neurons : int or None, default 16384
        The (k-means) initialisations compute the samples' PCA on this many neurons drawn at
        random (seeded), which keeps the PCA to a small fraction of the run on large models.
        IterD itself always uses every neuron. None runs the PCA on all neurons, as published.
    device : {"auto", "cpu", "cuda"}, default "auto"
        Where the work runs: "auto" where A lives, "cpu" (a CUDA array is copied to the host),
        "cuda" (a host array is copied to the GPU; needs the CUDA build and a GPU). On the GPU the
        PCA, the block-sum tables and the scoring of every row run there; k-means and the exact
        acceptance of each move stay on the host.

    Attributes
    ----------
    neuron_labels_, sample_labels_ : ndarray of int32
    objective_ : float
        L of the fitted labels; also ``xi_`` and ``B_``.
    n_iter_ : int
    converged_ : bool
    history_ : IterDHistory
    result_ : IterDResult

    Examples
    --------
    >>> import numpy as np, ulcmod
    >>> A = np.random.default_rng(0).normal(size=(60, 30))
    >>> model = ulcmod.IterD(n_modules=3, random_state=0).fit(A)
    >>> model.neuron_labels_.shape, model.sample_labels_.shape
    ((60,), (30,))
    """

    def __init__(self, n_modules=8, *, init="balanced-kmeans", n_init=1, max_iter=100, tol=1e-9,
                 order="parallel", random_state=None, verbose=False, progress="auto",
                 pca_neurons=16384, device="auto"):
        self.n_modules = n_modules
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.order = order
        self.random_state = random_state
        self.verbose = verbose
        self.progress = progress
        self.pca_neurons = pca_neurons
        self.device = device

    def fit(self, A, y=None):
        """Partition the neurons (rows) and samples (columns) of A; returns self.

        A : array of shape (n_neurons, n_samples), float16, float32 or float64
            Activations (usually z-scored per neuron). C- or F-ordered arrays, slices and
            memmaps are read in place; a copy is made only for non-arrays (lists), non-native
            byte order or strides that are not whole elements. CUDA arrays (torch, CuPy; also
            bfloat16) are read in place on their GPU through DLPack (see ``device``).
        """
        res = _fit(A, **self.get_params())
        self.result_ = res
        self.neuron_labels_ = self.row_labels_ = res.neuron_labels
        self.sample_labels_ = self.column_labels_ = res.sample_labels
        self.objective_, self.xi_, self.B_ = res.L, res.xi, res.B
        self.n_iter_ = res.n_iter
        self.converged_ = res.converged
        self.history_ = res.history
        return self

    def fit_predict(self, A, y=None):
        """Fit and return the neuron labels (the rows of A)."""
        return self.fit(A).neuron_labels_

    def _fitted(self) -> IterDResult:
        if not hasattr(self, "result_"):
            raise ValueError("This IterD is not fitted yet; call fit(A) first")
        return self.result_

    def transform(self, A) -> np.ndarray:
        """Module features of the samples of A (N x M'): shape (M', K)."""
        return self._fitted().module_features(A)

    def predict(self, A) -> np.ndarray:
        """Module of each sample of A (N x M') given the fitted neuron partition."""
        return self._fitted().assign_samples(A)


def iterd(A, n_modules, **params) -> IterDResult:
    """Partition neurons and samples jointly into ``n_modules`` function modules.

    ``IterD(n_modules, **params).fit(A).result_`` as a function.

    Parameters
    ----------
    A : array of shape (n_neurons, n_samples), float16, float32 or float64
        Activations (usually z-scored per neuron), read in place (see :meth:`IterD.fit`).
    n_modules : int
        K, with 2 <= K <= min(n_neurons, n_samples).
    **params
        ``init``, ``n_init``, ``max_iter``, ``tol``, ``order``, ``random_state``, ``verbose``,
        ``progress``, ``pca_neurons``: as for :class:`IterD`.

    Returns
    -------
    IterDResult

    Examples
    --------
    >>> import numpy as np, ulcmod
    >>> rng = np.random.default_rng(0)
    >>> A = rng.normal(size=(300, 120)).astype(np.float32)
    >>> for k in range(3):
    ...     A[k * 100:(k + 1) * 100, k * 40:(k + 1) * 40] += 2.0
    >>> res = ulcmod.iterd(A, 3, random_state=0)
    >>> res.converged, np.bincount(res.neuron_labels).tolist()
    (True, [100, 100, 100])
    """
    return IterD(n_modules, **params).fit(A).result_


iterd.__signature__ = fit_function_signature(IterD, "A")
