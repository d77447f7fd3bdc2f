import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import FastICA as SkFastICA

import ulcmod


def mixture(n=4000, p=10, seed=0, noise=0.01):
    """Four non-Gaussian sources mixed into p signals: binary, uniform (sub-Gaussian), Laplace and
    sparse Bernoulli-Gaussian (super-Gaussian), distinct enough for every contrast, cube included."""
    rng = np.random.default_rng(seed)
    S = np.c_[np.sign(rng.normal(size=n)), rng.uniform(-1, 1, size=n), rng.laplace(size=n),
              rng.normal(size=n) * (rng.random(n) < 0.1)]
    S = (S - S.mean(0)) / S.std(0)
    A = rng.normal(size=(p, 4))
    return S, A, S @ A.T + noise * rng.normal(size=(n, p))


def matched_abs_corr(S_true, S_est):
    """Mean |correlation| after the best one-to-one matching of components (sign-free)."""
    k = S_true.shape[1]
    C = np.abs(np.corrcoef(S_true.T, S_est.T)[:k, k:])
    rows, cols = linear_sum_assignment(-C)
    return C[rows, cols]


@pytest.mark.parametrize("algorithm", ["parallel", "deflation"])
@pytest.mark.parametrize("fun", ["logcosh", "exp", "cube"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sources_are_recovered(algorithm, fun, dtype):
    S, _, X = mixture()
    ica = ulcmod.FastICA(4, algorithm=algorithm, fun=fun, random_state=0, max_iter=1000, tol=1e-5)
    S_hat = ica.fit_transform(X.astype(dtype))
    assert matched_abs_corr(S, S_hat).min() >= 0.99
    assert ica.converged_ and S_hat.shape == (4000, 4)
    np.testing.assert_allclose(S_hat.std(axis=0), 1.0, rtol=1e-3)  # unit-variance sources
    np.testing.assert_allclose(ica.transform(X.astype(dtype)), S_hat, atol=1e-3 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("algorithm", ["parallel", "deflation"])
@pytest.mark.parametrize("fun, fun_args", [("logcosh", None), ("logcosh", {"alpha": 1.5}), ("exp", None),
                                           ("cube", None)])
def test_agrees_with_sklearn_given_the_same_start(algorithm, fun, fun_args):
    S, _, X = mixture(n=3000, p=7, seed=1)
    w0 = np.random.default_rng(3).normal(size=(4, 4))
    kw = dict(algorithm=algorithm, fun=fun, fun_args=fun_args, w_init=w0, max_iter=500, tol=1e-6)
    ours = ulcmod.FastICA(4, **kw)
    theirs = SkFastICA(4, whiten="unit-variance", whiten_solver="eigh", **kw)
    np.testing.assert_allclose(ours.fit_transform(X), theirs.fit_transform(X), atol=1e-8)
    np.testing.assert_allclose(ours.whitening_, theirs.whitening_, atol=1e-10)
    np.testing.assert_allclose(ours.components_, theirs.components_, atol=1e-8)
    np.testing.assert_allclose(ours.mixing_, theirs.mixing_, atol=1e-8)
    np.testing.assert_allclose(ours.mean_, theirs.mean_, atol=1e-12)
    assert ours.n_iter_ == theirs.n_iter_


def test_agrees_with_sklearn_on_already_whitened_data():
    _, _, X = mixture(n=2000, p=4, seed=2)
    K, _, _ = ulcmod.fastica(X, 4, random_state=0)  # our whitening ...
    X_white = (X - X.mean(0)) @ K.T * np.sqrt(len(X))
    w0 = np.random.default_rng(5).normal(size=(4, 4))
    ours = ulcmod.FastICA(whiten=False, w_init=w0, tol=1e-6).fit(X_white)  # ... then no whitening in either
    theirs = SkFastICA(whiten=False, w_init=w0, tol=1e-6).fit(X_white)
    np.testing.assert_allclose(ours.components_, theirs.components_, atol=1e-9)


@pytest.mark.filterwarnings("ignore:There are some small singular values")  # sklearn's p x p path
def test_more_features_than_samples_uses_the_gram_matrix():
    # p > n takes the n x n Gram path; its whitening must equal sklearn's p x p one.
    S, _, _ = mixture(n=250)
    rng = np.random.default_rng(0)
    X = S @ rng.normal(size=(4, 300)) + 0.01 * rng.normal(size=(250, 300))
    w0 = rng.normal(size=(4, 4))
    ours = ulcmod.FastICA(4, w_init=w0, max_iter=1000).fit(X)
    theirs = SkFastICA(4, w_init=w0, whiten_solver="eigh", max_iter=1000).fit(X)
    np.testing.assert_allclose(ours.whitening_, theirs.whitening_, atol=1e-9)
    np.testing.assert_allclose(ours.components_, theirs.components_, atol=1e-7)


def test_function_form_and_inverse_transform():
    S, _, X = mixture(n=2000, seed=4)
    K, W, S_hat, mean, n_iter = ulcmod.fastica(X, 4, random_state=0, return_X_mean=True, return_n_iter=True)
    assert K.shape == (4, 10) and W.shape == (4, 4) and S_hat.shape == (2000, 4) and n_iter >= 1
    np.testing.assert_allclose(mean, X.mean(0), atol=1e-12)
    ica = ulcmod.FastICA(4, random_state=0).fit(X)
    np.testing.assert_allclose(ica.inverse_transform(ica.transform(X)), X, atol=0.05)  # noise aside
    assert "n_components=4" in repr(ica)


def test_non_convergence_warns():
    _, _, X = mixture(n=1000)
    with pytest.warns(ulcmod.ConvergenceWarning, match="max_iter=1"):
        ulcmod.FastICA(4, max_iter=1, tol=1e-12, random_state=0).fit(X)


@pytest.mark.parametrize("kwargs, X, exc, match", [
    ({}, np.ones(5), ValueError, "Expected a 2-D array X"),
    ({}, np.array([[np.nan, 1.0], [2.0, 3.0]]), ValueError, "NaN or infinity"),
    ({"n_components": 11}, None, ValueError, r"n_components=11 exceeds min\(n_samples, n_features\) = 10"),
    ({"n_components": 4}, "rank2", ValueError, "rank below n_components=4"),
    ({"fun": "tanh"}, None, ValueError, "fun must be one of"),
    ({"fun": np.tanh}, None, TypeError, "custom callables"),
    ({"algorithm": "symmetric"}, None, ValueError, "algorithm must be one of"),
    ({"fun_args": {"alpha": 3}}, None, ValueError, r"alpha'\] must be in \[1, 2\]"),
    ({"w_init": np.eye(3), "n_components": 4}, None, ValueError, r"w_init has shape \(3, 3\)"),
    ({"whiten": False, "n_components": 3}, None, ValueError, "whiten=False n_components must equal"),
    ({"max_iter": 0}, None, ValueError, "max_iter must be >= 1"),
    ({}, np.array([["a", "b"]]), TypeError, "real numeric array"),
])
def test_bad_input(kwargs, X, exc, match):
    if X is None:
        X = mixture(n=500)[2]
    elif isinstance(X, str):  # rank 2 data in 10 dimensions
        rng = np.random.default_rng(0)
        X = rng.laplace(size=(500, 2)) @ rng.normal(size=(2, 10))
    with pytest.raises(exc, match=match):
        ulcmod.FastICA(**kwargs).fit(X)
