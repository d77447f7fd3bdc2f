"""Negative tests of the algorithms (issue 15): each defect found gets a test that failed before its fix.

Finite values too large for float64 arithmetic are told apart from NaN/inf, never reported as a
converged infinite L, and never reach LAPACK; FastICA's initial matrix and new data are checked
like its training data; errors blame the argument that is wrong.
"""

import numpy as np
import pytest

import ulcmod

G = np.random.default_rng(0).normal(size=(40, 20))
OVERFLOW = r"A holds no NaN or infinity, but its values are too large: \|A\| reaches"


def test_iterd_never_reports_an_infinite_L_as_converged():
    # Before: L=inf with converged=True (the diagonal-block sum D overflowed).
    with pytest.raises(ValueError, match=OVERFLOW + r".*float64 sums overflow.*np.abs\(A\).max\(\)"):
        ulcmod.iterd(np.abs(G) * 1e306, 3, init="random", random_state=0)
    # Signed values of that size whose sums stay finite are fine.
    assert np.isfinite(ulcmod.iterd(G * 1e306, 3, init="random", random_state=0).L)


def test_finite_values_whose_row_sums_overflow_are_not_called_nan():
    # Before: "A contains NaN or infinity (first in row ...)" for finite values near 1e307.
    with pytest.raises(ValueError, match=OVERFLOW):
        ulcmod.iterd(np.abs(G) * 1e307, 3, init="random", random_state=0)
    with pytest.raises(ValueError, match=OVERFLOW + r" 3.9e\+307 in column 18"):
        ulcmod.objective(G * 1e307, np.arange(40) % 3, np.arange(20) % 3)
    with pytest.raises(ValueError, match=OVERFLOW + r" .* in neuron 0"):
        ulcmod.fit_zscore(G * 1e307)


def test_nan_is_still_called_nan_next_to_huge_values():
    A = np.abs(G) * 1e307
    A[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinity \(first in row 5\)"):
        ulcmod.iterd(A, 3, init="random", random_state=0)


@pytest.mark.parametrize("scale", [1e160, 1e306])
def test_huge_values_do_not_end_in_an_eigenvalue_error(scale):
    # Before: numpy.linalg.LinAlgError "Eigenvalues did not converge" from the initialisation's PCA.
    with pytest.raises(ValueError, match=OVERFLOW + r".*float64 products of its PCA overflow"):
        ulcmod.iterd(G * scale, 3, random_state=0)


def test_huge_but_safe_values_still_work_and_scale_out():
    ref = ulcmod.iterd(G, 3, random_state=0)
    big = ulcmod.iterd(G * 1e100, 3, random_state=0)
    np.testing.assert_array_equal(big.neuron_labels, ref.neuron_labels)
    assert big.L == pytest.approx(ref.L * 1e100, rel=1e-9) and big.converged


@pytest.mark.parametrize("w_init, match", [
    (np.zeros((3, 3)), r"w_init is singular \(rank 0 < 3\)"),
    (np.full((3, 3), np.nan), "w_init contains NaN or infinity"),
    (np.ones((3, 3)), r"w_init is singular \(rank 1 < 3\)"),
])
def test_fastica_checks_w_init_before_lapack(w_init, match):
    # Before: "SVD did not converge" / "eigen-decomposition failed (LAPACK syevd info=2)".
    X = np.random.default_rng(1).laplace(size=(200, 5))
    with pytest.raises(ValueError, match=match):
        ulcmod.FastICA(3, w_init=w_init).fit(X)


def test_fastica_on_huge_values_fails_before_lapack():
    # Before: RuntimeError "eigen-decomposition failed (LAPACK syevd info=4)".
    X = np.random.default_rng(1).laplace(size=(200, 5))
    with pytest.raises(ValueError, match=r"X holds no NaN or infinity, but its values are too large"):
        ulcmod.FastICA(3, random_state=0).fit(X * 1e200)
    with pytest.raises(ValueError, match="X's values are too small"):
        ulcmod.FastICA(3, random_state=0).fit(X * 1e-200)


def test_fastica_transform_rejects_nan_like_fit():
    # Before: transform returned NaN sources for NaN input while fit rejected it.
    X = np.random.default_rng(1).laplace(size=(200, 5))
    ica = ulcmod.FastICA(3, random_state=0).fit(X)
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        ica.transform(X)


def test_balanced_kmeans_refuses_values_whose_distances_overflow():
    # Before: inertia inf returned silently.
    with pytest.raises(ValueError, match=r"X holds no NaN or infinity.*squared distances overflow float64"):
        ulcmod.balanced_kmeans(G * 1e160, 3, random_state=0)


def test_predict_with_the_wrong_number_of_neurons_blames_A():
    # Before: "neuron_labels must be 1-D with 30 entries", for labels the user never passed.
    est = ulcmod.IterD(3, random_state=0).fit(G)
    with pytest.raises(ValueError, match=r"A has 30 rows \(neurons\) but the modules hold 40 neurons"):
        est.predict(G[:30])
    with pytest.raises(ValueError, match=r"A has 30 rows \(neurons\) but the modules hold 40 neurons"):
        est.transform(G[:30])


def test_a_ragged_list_is_named():
    # Before: NumPy's "setting an array element with a sequence ... inhomogeneous shape".
    with pytest.raises(ValueError, match="A is a ragged list"):
        ulcmod.iterd([[1.0, 2.0], [3.0]], 2)
    with pytest.raises(ValueError, match="X is a ragged list"):
        ulcmod.balanced_kmeans([[1.0, 2.0], [3.0]], 2)


def test_kmeans_and_ica_take_bfloat16_like_iterd():
    # Found by tests/test_properties.py: "X must be a real numeric array, got dtype bfloat16".
    import ml_dtypes

    X = np.random.default_rng(1).laplace(size=(60, 3))
    B = X.astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(ulcmod.balanced_kmeans(B, 3, random_state=0)[1],
                                  ulcmod.balanced_kmeans(B.astype(np.float64), 3, random_state=0)[1])
    assert ulcmod.FastICA(2, random_state=0, max_iter=1000, tol=1e-3).fit_transform(B).shape == (60, 2)


def test_objective_of_labels_sharing_no_module():
    # Found by tests/test_properties.py: ZeroDivisionError when no diagonal block holds anything.
    assert ulcmod.objective(G[:2, :2], [0, 0], [1, 1], n_modules=2, allow_empty=True) == (0.0, 0.0, 0.0)
