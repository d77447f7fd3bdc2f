"""Balanced k-means: k-means whose clusters hold exactly floor(n/K) or ceil(n/K) points."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from .. import _core
from ._estimator import ParamsMixin, fit_function_signature
from ._validation import check_finite, check_int, check_random_state, check_real_matrix, check_tol, seed_from
from .exceptions import ConvergenceWarning


def _check_points(X, name: str = "X") -> np.ndarray:
    arr = check_real_matrix(X, name, rows="points")  # small inputs: a float64 copy is cheap
    check_finite(arr, name)
    return arr


class KMeansFit(NamedTuple):
    """What the core's k-means returns."""

    centers: np.ndarray  # (K, n_features)
    labels: np.ndarray  # (n_points,) int32
    inertia: float
    n_iter: int
    converged: bool


def run_kmeans(X, n_clusters, *, balanced, n_init, max_iter, tol, random_state) -> KMeansFit:
    """Validate and run the core's k-means (balanced or plain)."""
    X = _check_points(X)
    K = check_int(n_clusters, "n_clusters", minimum=1)
    if K > X.shape[0]:
        raise ValueError(f"n_clusters={K} exceeds the {X.shape[0]} points of X; use n_clusters <= {X.shape[0]}")
    n_init = check_int(n_init, "n_init", minimum=1)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_tol(tol)
    rng = check_random_state(random_state)
    out = _core.kmeans(X, K, balanced, n_init, max_iter, tol, seed_from(rng))
    fit = KMeansFit(out.centers, out.labels, out.inertia, out.n_iter, out.converged)
    if not fit.converged:
        warnings.warn(
            f"k-means stopped at max_iter={max_iter} before converging; raise max_iter or tol",
            ConvergenceWarning,
            stacklevel=3,
        )
    return fit


class BalancedKMeans(ParamsMixin):
    """k-means with clusters of sizes floor(n/K) or ceil(n/K) exactly (scikit-learn conventions).

    Lloyd iterations from greedy k-means++ seeds; each assignment step is an exact min-cost
    assignment under the size constraint (successive shortest paths in the C++ core).

    Parameters
    ----------
    n_clusters : int, default 8
        K, at most n_points.
    n_init : int, default 10
        Restarts from different seeds; the lowest inertia wins.
    max_iter : int, default 300
    tol : float, default 1e-4
        Stop when the centres move less than ``tol`` times the mean feature variance (squared).
    random_state : None, int or numpy Generator

    Attributes
    ----------
    cluster_centers_ : ndarray (K, n_features)
    labels_ : ndarray (n_points,)
    inertia_ : float
        Sum of squared distances of points to their cluster's centre.
    n_iter_ : int
        Lloyd iterations of the winning run.

    Examples
    --------
    >>> import numpy as np, ulcmod
    >>> X = np.random.default_rng(0).normal(size=(12, 2))
    >>> np.bincount(ulcmod.BalancedKMeans(4, random_state=0).fit(X).labels_).tolist()
    [3, 3, 3, 3]
    """

    def __init__(self, n_clusters=8, *, n_init=10, max_iter=300, tol=1e-4, random_state=None):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, X, y=None):
        """Cluster the rows of X (copied to float64); returns self."""
        fit = run_kmeans(X, self.n_clusters, balanced=True, n_init=self.n_init, max_iter=self.max_iter,
                         tol=self.tol, random_state=self.random_state)
        self.cluster_centers_, self.labels_, self.inertia_, self.n_iter_ = fit[:4]
        return self

    def fit_predict(self, X, y=None):
        """Fit and return the labels."""
        return self.fit(X).labels_

    def predict(self, X):
        """Nearest centre for new points (no size constraint: new points are not a partition)."""
        if not hasattr(self, "cluster_centers_"):
            raise ValueError("This BalancedKMeans is not fitted yet; call fit(X) first")
        X = _check_points(X)
        if X.shape[1] != self.cluster_centers_.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} features but the model was fitted on {self.cluster_centers_.shape[1]}"
            )
        d = ((X[:, None, :] - self.cluster_centers_[None, :, :]) ** 2).sum(axis=2)
        return d.argmin(axis=1).astype(np.int32)


def balanced_kmeans(X, n_clusters, **params):
    """Cluster the rows of X into clusters of sizes floor(n/K) or ceil(n/K) exactly.

    ``BalancedKMeans(n_clusters, **params).fit(X)`` as a function.

    Parameters
    ----------
    X : array of shape (n_points, n_features)
        Points (copied to float64).
    n_clusters : int
        K, at most n_points.
    **params
        ``n_init``, ``max_iter``, ``tol``, ``random_state``: as for :class:`BalancedKMeans`.

    Returns
    -------
    centers : ndarray (K, n_features)
    labels : ndarray (n_points,) of int32
    inertia : float
        Sum of squared distances of points to their cluster's centre.

    Examples
    --------
    >>> import numpy as np, ulcmod
    >>> X = np.random.default_rng(0).normal(size=(10, 2))
    >>> centers, labels, inertia = ulcmod.balanced_kmeans(X, 3, random_state=0)
    >>> sorted(np.bincount(labels).tolist())
    [3, 3, 4]
    """
    est = BalancedKMeans(n_clusters, **params).fit(X)
    return est.cluster_centers_, est.labels_, est.inertia_


balanced_kmeans.__signature__ = fit_function_signature(BalancedKMeans, "X")
