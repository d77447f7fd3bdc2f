"""Bad input gets a TypeError/ValueError naming the argument, never a crash or a wrong answer."""

import numpy as np
import pytest

import ulcmod

GOOD = np.random.default_rng(0).normal(size=(20, 10))


def with_value(value, at=(3, 4)):
    A = GOOD.copy()
    A[at] = value
    return A


@pytest.mark.parametrize("init", ["balanced-kmeans", "kmeans", "random", "labels"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_activations(init, bad):
    A = with_value(bad)
    init_arg = np.arange(10) % 3 if init == "labels" else init
    with pytest.raises(ValueError, match=r"NaN or infinity \(first in row 3\)"):
        ulcmod.iterd(A, 3, init=init_arg)
    # Also when the initial PCA uses a subset of neurons, with or without the bad row.
    for seed in range(6):
        with pytest.raises(ValueError, match=r"NaN or infinity \(first in row 3\)"):
            ulcmod.iterd(A, 3, init=init_arg, pca_neurons=4, random_state=seed)
    with pytest.raises(ValueError, match="NaN or infinity"):
        ulcmod.objective(A, np.arange(20) % 3, np.arange(10) % 3)
    with pytest.raises(ValueError, match="NaN or infinity"):
        ulcmod.module_features(A, np.arange(20) % 3)


def test_the_first_non_finite_row_is_named_when_many_rows_hold_one():
    # The check runs over blocks of rows on several threads; the earliest bad row wins.
    A = np.random.default_rng(1).normal(size=(40_000, 6))
    A[[37_000, 21_000, 9_001, 30_000], [0, 5, 2, 1]] = [np.nan, np.inf, -np.inf, np.nan]
    with pytest.raises(ValueError, match=r"NaN or infinity \(first in row 9001\)"):
        ulcmod.iterd(A, 2, init=np.arange(6) % 2)


@pytest.mark.parametrize(
    "A, exc, match",
    [
        (GOOD[0], ValueError, r"Expected a 2-D array A .* 1-D array with shape \(10,\)"),
        (GOOD[None], ValueError, "3-D array"),
        (GOOD.astype(np.int64), TypeError, "integer/boolean dtype int64.*astype"),
        (GOOD > 0, TypeError, "integer/boolean dtype bool"),
        (GOOD.astype(np.complex128), TypeError, "dtype complex128"),
        (GOOD.astype(object), TypeError, "dtype object"),
        (np.zeros((0, 5)), ValueError, "empty"),
        ("not an array", TypeError, "got str"),
    ],
)
def test_bad_activation_arrays(A, exc, match):
    with pytest.raises(exc, match=match):
        ulcmod.iterd(A, 2)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"n_modules": 1}, ValueError, "n_modules must be >= 2"),
        ({"n_modules": 11}, ValueError, r"n_modules=11 exceeds .* use n_modules <= 10"),
        ({"n_modules": 2.5}, TypeError, "n_modules must be an integer"),
        ({"max_iter": -1}, ValueError, "max_iter must be >= 0"),
        ({"n_init": 0}, ValueError, "n_init must be >= 1"),
        ({"pca_neurons": 0}, ValueError, "pca_neurons must be >= 1"),
        ({"tol": -1.0}, ValueError, "tol must be"),
        ({"order": "backwards"}, ValueError, "order must be one of"),
        ({"init": "spectral"}, ValueError, "init must be one of"),
        ({"random_state": "seed"}, TypeError, "random_state must be"),
        ({"init": np.arange(9) % 3}, ValueError, r"init sample labels must be 1-D with 10 entries"),
        ({"init": np.arange(10) % 3 + 1}, ValueError, r"must lie in \[0, 3\)"),
        ({"init": np.zeros(10, dtype=int)}, ValueError, r"leave module\(s\) \[1, 2\] empty"),
        ({"init": np.linspace(0, 2, 10)}, TypeError, "must hold integers"),
        ({"init": (np.zeros(20, dtype=int), np.arange(10) % 3)}, ValueError, "init neuron labels leave"),
        ({"init": (np.arange(10) % 3,)}, ValueError, "tuple must be"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    args = {"n_modules": 3, **kwargs}
    with pytest.raises(exc, match=match):
        ulcmod.iterd(GOOD, args.pop("n_modules"), **args)


def test_given_labels_with_restarts_warn_and_run_once():
    with pytest.warns(RuntimeWarning, match="n_init=3 is ignored"):
        ulcmod.iterd(GOOD, 3, init=np.arange(10) % 3, n_init=3)


def test_objective_label_errors():
    with pytest.raises(ValueError, match="neuron_labels must be 1-D with 20 entries"):
        ulcmod.objective(GOOD, np.arange(19) % 2, np.arange(10) % 2)
    with pytest.raises(ValueError, match=r"sample_labels must lie in \[0, 2\)"):
        ulcmod.objective(GOOD, np.arange(20) % 2, np.arange(10) % 3)


def test_non_native_byte_order_is_accepted():
    A = GOOD.astype(">f8")
    u, s = np.arange(20) % 2, np.arange(10) % 2
    assert ulcmod.objective(A, u, s) == ulcmod.objective(GOOD, u, s)


def test_balanced_kmeans_errors():
    X = GOOD[:, :2]
    with pytest.raises(ValueError, match="n_clusters=30 exceeds the 20 points"):
        ulcmod.balanced_kmeans(X, 30)
    with pytest.raises(ValueError, match="2-D array X"):
        ulcmod.balanced_kmeans(X[:, 0], 2)
    with pytest.raises(ValueError, match="NaN or infinity"):
        ulcmod.balanced_kmeans(with_value(np.nan)[:, 3:5], 2)
    with pytest.raises(ValueError, match="max_iter must be >= 1"):
        ulcmod.balanced_kmeans(X, 2, max_iter=0)
    with pytest.raises(ValueError, match="not fitted"):
        ulcmod.BalancedKMeans(2).predict(X)

