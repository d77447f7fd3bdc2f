import numpy as np
import pytest

import ulcmod
from ulcmod import _core

from conftest import brute_objective

LAYOUTS = ["C", "F", "sliced", "reversed"]


def layout(A, kind):
    if kind == "C":
        return np.ascontiguousarray(A)
    if kind == "F":
        return np.asfortranarray(A)
    if kind == "sliced":  # a strided view into a larger array
        big = np.zeros((A.shape[0] * 2, A.shape[1] * 3), dtype=A.dtype)
        big[::2, 1::3] = A
        return big[::2, 1::3]
    return np.ascontiguousarray(A[::-1, ::-1])[::-1, ::-1]  # negative strides


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("kind", LAYOUTS)
def test_objective_matches_brute_force(rng, dtype, kind):
    for K in (2, 3, 7):
        A = rng.normal(size=(23, 17)).astype(dtype)
        u = rng.permutation(np.arange(23) % K)
        s = rng.permutation(np.arange(17) % K)
        got = ulcmod.objective(layout(A, kind), u, s)
        want = brute_objective(A, u, s, K)
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_build_table_matches_numpy(rng, kind, dtype):
    A = rng.normal(size=(1100, 37)).astype(dtype)  # more rows than one kernel block
    labels = rng.integers(0, 5, size=37).astype(np.int32)
    want = np.stack([A[:, labels == k].astype(np.float64).sum(axis=1) for k in range(5)], axis=1)
    np.testing.assert_allclose(_core.build_table(layout(A, kind), labels, 5), want, rtol=1e-12, atol=1e-12)
    row_labels = rng.integers(0, 5, size=1100).astype(np.int32)
    want_t = np.stack([A[row_labels == k].astype(np.float64).sum(axis=0) for k in range(5)], axis=1)
    np.testing.assert_allclose(_core.build_table(layout(A, kind).T, row_labels, 5), want_t, rtol=1e-12, atol=1e-12)


def test_float16_conversion_covers_every_value():
    # Every finite half value (normals, subnormals, signed zeros) through the core's converter.
    bits = np.arange(2**16, dtype=np.uint16)
    values = bits.view(np.float16)
    values = values[np.isfinite(values)]
    A = values.reshape(1, -1)
    single = _core.build_table(A.T.copy(), np.zeros(1, dtype=np.int32), 1)[:, 0]
    np.testing.assert_array_equal(single, values.astype(np.float64))


def test_module_features_and_assignment_match_loops(rng):
    A = rng.normal(size=(40, 9))
    u = rng.permutation(np.arange(40) % 4)
    X = ulcmod.module_features(A, u)
    for j in range(9):
        for k in range(4):
            assert X[j, k] == pytest.approx(np.mean([A[i, j] for i in range(40) if u[i] == k]))
    np.testing.assert_array_equal(ulcmod.assign_samples(A, u), X.argmax(axis=1))


def test_objective_rejects_empty_modules(rng):
    A = rng.normal(size=(6, 5))
    with pytest.raises(ValueError, match="empty"):
        ulcmod.objective(A, [0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0], n_modules=2)


@pytest.mark.parametrize("kind", LAYOUTS)
def test_update_table_equals_rebuild(rng, kind):
    A = rng.normal(size=(300, 40)).astype(np.float32)
    labels = rng.integers(0, 4, size=40).astype(np.int32)
    T = _core.build_table(layout(A, kind), labels, 4)
    idx = np.array([3, 7, 8, 30], dtype=np.int64)
    new = labels.copy()
    new[idx] = (labels[idx] + 1) % 4
    _core.update_table(layout(A, kind), idx, labels[idx], new[idx], T)
    np.testing.assert_allclose(T, _core.build_table(A, new, 4), rtol=1e-12, atol=1e-12)


def test_objective_with_allowed_empty_modules_is_the_limit(rng):
    A = rng.normal(size=(6, 5))
    u, s = np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 0, 0, 0])
    got = ulcmod.objective(A, u, s, n_modules=2, allow_empty=True)
    assert got.L == 0.0 and got.B == 0.0
    assert got.xi == pytest.approx(A[:3].sum() / 15)
