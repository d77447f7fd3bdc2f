"""FastICA with the compiled core: a drop-in for sklearn.decomposition.FastICA / fastica.

The core follows scikit-learn's algorithm step by step (whitening by PCA with the same sign
convention, the same parallel and deflation updates and stopping rule), so with the same
``w_init`` the two agree. Products and eigen-decompositions run on OpenBLAS (scipy-openblas32),
the contrast function on OpenMP threads with a vectorised tanh/exp.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np

from .. import _core
from . import _device
from ._estimator import ParamsMixin, fit_function_signature
from ._validation import check_choice, check_finite, check_int, check_random_state, check_real_matrix, check_tol
from .exceptions import ConvergenceWarning

FUNS = ("logcosh", "exp", "cube")
ALGORITHMS = ("parallel", "deflation")
WHITEN = ("unit-variance", "arbitrary-variance")


def _check_data(X) -> np.ndarray:
    # float32 stays float32; NaN/inf are caught by the core's column sums (no extra pass)
    return check_real_matrix(X, min_rows=2, keep_float32=True)


class FastICA(ParamsMixin):
    """Independent component analysis (FastICA), with scikit-learn's parameters and attributes.

    Parameters
    ----------
    n_components : int, optional
        Components to extract (default ``min(n_samples, n_features)``).
    algorithm : {"parallel", "deflation"}
        Symmetric fixed point with ``W <- (W W^T)^(-1/2) W`` decorrelation, or one component at a
        time with Gram-Schmidt.
    whiten : {"unit-variance", "arbitrary-variance"} or False
        PCA whitening (sources scaled to unit variance, or left as they come); False when X is
        already white (then ``n_components`` is the number of features).
    fun : {"logcosh", "exp", "cube"}
        Contrast; ``fun_args={"alpha": a}`` sets logcosh's a1 (1 <= a <= 2, default 1).
    max_iter, tol : int, float
        Stop when ``max |<w_new, w_old>| - 1| < tol`` or after max_iter (ConvergenceWarning).
    w_init : array (n_components, n_components), optional
        Initial unmixing matrix; default normal random numbers from `random_state`.
    random_state : None, int or numpy Generator
    device : {"auto", "cpu", "cuda"}, default "auto"
        Where the data-sized work runs: "auto" where X lives (a torch/CuPy CUDA array: on its
        GPU, through DLPack), "cpu", or "cuda" (a host X is copied to the GPU). On the GPU the
        centring, scatter/Gram matrix, projections and every fixed-point step's products and
        contrast run on cuBLAS and CUDA kernels; the small eigen-decompositions and the update of
        W stay on the host, in the same code, so results agree with the CPU's (and sklearn's).

    Attributes
    ----------
    components_ : (n_components, n_features) unmixing matrix (sources = (X - mean_) @ components_.T)
    mixing_ : (n_features, n_components) pseudo-inverse of components_
    mean_ : (n_features,)
    whitening_ : (n_components, n_features), when whitening
    n_iter_ : int (the largest over components for deflation)
    converged_ : bool

    Examples
    --------
    >>> import numpy as np, ulcmod
    >>> rng = np.random.default_rng(0)
    >>> S = np.c_[np.sign(np.sin(np.linspace(0, 40, 2000))), rng.laplace(size=2000)]
    >>> X = S @ np.array([[1.0, 0.5], [0.4, 1.0]])
    >>> S_hat = ulcmod.FastICA(2, random_state=0).fit_transform(X)
    >>> bool(np.abs(np.corrcoef(S.T, S_hat.T)[:2, 2:]).max(axis=1).min() > 0.99)
    True
    """

    def __init__(self, n_components=None, *, algorithm="parallel", whiten="unit-variance", fun="logcosh",
                 fun_args=None, max_iter=200, tol=1e-4, w_init=None, random_state=None, device="auto"):
        self.n_components = n_components
        self.algorithm = algorithm
        self.whiten = whiten
        self.fun = fun
        self.fun_args = fun_args
        self.max_iter = max_iter
        self.tol = tol
        self.w_init = w_init
        self.random_state = random_state
        self.device = device

    def _fit(self, X):
        gpu = _device.resolve_device(X, self.device) == "cuda"
        X = _device.GpuIca(X) if gpu else _check_data(X)
        n, p = X.shape
        check_choice(self.algorithm, "algorithm", ALGORITHMS)
        if callable(self.fun):
            raise TypeError("fun must be 'logcosh', 'exp' or 'cube'; custom callables are not supported")
        check_choice(self.fun, "fun", FUNS)
        if self.whiten is not False:
            check_choice(self.whiten, "whiten", WHITEN)
        alpha = float((self.fun_args or {}).get("alpha", 1.0))
        if not 1.0 <= alpha <= 2.0:
            raise ValueError(f"fun_args['alpha'] must be in [1, 2], got {alpha}")
        max_iter = check_int(self.max_iter, "max_iter", minimum=1)
        tol = check_tol(self.tol)
        if self.whiten is False:
            c = p
            if self.n_components not in (None, p):
                raise ValueError(f"with whiten=False n_components must equal n_features ({p}), got {self.n_components}")
            X1 = X.transposed() if gpu else np.ascontiguousarray(X.T)
            check_finite(X1.to_host() if gpu else X1, "X")
            K, mean = None, np.zeros(p, dtype=X.dtype)
        else:
            c = min(n, p) if self.n_components is None else check_int(self.n_components, "n_components", minimum=1)
            if c > min(n, p):
                raise ValueError(f"n_components={c} exceeds min(n_samples, n_features) = {min(n, p)} for X of "
                                 f"shape {X.shape}; use n_components <= {min(n, p)}")
            w = X.whiten(c) if gpu else _core.ica_whiten(X, c)
            X1, K, mean, smallest_ratio = w.X1, w.K, w.mean, w.smallest_ratio
            if smallest_ratio < np.finfo(X.dtype).eps * 10:
                raise ValueError(f"X has rank below n_components={c} (its centred data spans fewer directions); "
                                 f"lower n_components")
        if self.w_init is None:
            w_init = check_random_state(self.random_state).standard_normal((c, c))
        else:
            w_init = np.asarray(self.w_init)
            if w_init.shape != (c, c):
                raise ValueError(f"w_init has shape {w_init.shape}, expected ({c}, {c})")
        w_init = np.ascontiguousarray(w_init, dtype=X.dtype)
        iterate = _device.GpuIca.iterate if gpu else _core.ica_iterate
        W, n_iter, converged = iterate(X1, w_init, self.fun, alpha, self.algorithm == "deflation", tol, max_iter)
        if gpu:
            X1 = X1.to_host()
        if not converged:
            warnings.warn(f"FastICA did not converge in max_iter={max_iter} iterations; raise max_iter or tol",
                          ConvergenceWarning, stacklevel=3)
        S = (W @ X1).T
        if K is not None:
            components = W @ K
            S = S / np.sqrt(n)
            if self.whiten == "unit-variance":
                std = S.std(axis=0)
                S = S / std
                components = components / std[:, None]
            self.whitening_ = K
        else:
            components = W
        self.components_ = components
        self._unmixing_white = W  # W acting on the whitened data (what sklearn's fastica returns)
        self.mixing_ = np.linalg.pinv(components)
        self.mean_ = mean
        self.n_iter_ = int(n_iter)
        self.converged_ = bool(converged)
        self.n_features_in_ = p
        return S

    def fit(self, X, y=None):
        """Fit the unmixing on X (n_samples x n_features); returns self."""
        self._fit(X)
        return self

    def fit_transform(self, X, y=None):
        """Fit and return the sources (n_samples x n_components)."""
        return self._fit(X)

    def _fitted(self):
        if not hasattr(self, "components_"):
            raise ValueError("This FastICA is not fitted yet; call fit(X) first")

    def transform(self, X):
        """Sources of new data: ``(X - mean_) @ components_.T``."""
        self._fitted()
        X = _check_data(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the model was fitted on {self.n_features_in_}")
        return (X - self.mean_) @ self.components_.T

    def inverse_transform(self, S):
        """Data from sources: ``S @ mixing_.T + mean_``."""
        self._fitted()
        return np.asarray(S) @ self.mixing_.T + self.mean_


def fastica(X, n_components=None, *, return_X_mean=False, return_n_iter=False, **params):
    """FastICA as a function, returning what ``sklearn.decomposition.fastica`` returns.

    ``params`` are those of :class:`FastICA`. Returns ``K`` (whitening, n_components x
    n_features, or None without whitening), ``W`` (unmixing of the whitened data), ``S``
    (sources, n_samples x n_components), then ``X_mean`` and ``n_iter`` when asked.
    """
    est = FastICA(n_components, **params)
    S = est._fit(X)
    out = [getattr(est, "whitening_", None), est._unmixing_white, S]
    if return_X_mean:
        out.append(est.mean_)
    if return_n_iter:
        out.append(est.n_iter_)
    return tuple(out)


fastica.__signature__ = fit_function_signature(
    FastICA, "X",
    *(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False)
      for name in ("return_X_mean", "return_n_iter")),
    first_required=False,
)
