"""Table kernels and the PCA pass of the core, on every compiled ISA level this CPU runs.

Every result is checked against an independent float64 NumPy computation (one-hot products on
the upcast array), for every dtype (float16, bfloat16 as ml_dtypes arrays and as uint16 bit
patterns viewed as bfloat16 in place, float32, float64) and layout (C, F, negative strides,
slices, one row or column, odd sizes).
"""

import os
import subprocess
import sys
import warnings

import ml_dtypes
import numpy as np
import pytest

import ulcmod
from ulcmod import _core
from ulcmod.core._pca import sample_pca

ISAS = _core.build_info()["isa_supported"]
DTYPES = ["float16", "bfloat16", "bfloat16-bits", "float32", "float64"]


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test with the kernels of one ISA level, then restore the level in use."""
    before = _core.build_info()["isa"]
    _core._set_isa(request.param)
    yield request.param
    _core._set_isa(before)


def special_values(dtype, extremes):
    """Values that exercise the conversions: subnormals, signed zeros, and the largest finite
    values when `extremes` (left out where sums would cancel them against small values)."""
    if dtype == "float16":
        return [6e-8, -6e-8, 6.1e-5, -0.0, 1e-6, 3.0] + ([65504.0, -65504.0] if extremes else [])
    if dtype.startswith("bfloat16"):
        return [1e-39, -1e-39, -0.0, 1e-30, 3.0] + ([3e38, -3e38] if extremes else [])
    return [1e-40, -1e-40, -0.0, 1e-30, 3.0] + ([3e38] if extremes else [])


def make(shape, dtype, rng, extremes=True):
    """(array passed to the core, its exact float64 values). bfloat16-bits: raw uint16 bit patterns
    (as read from a file or another library) viewed as bfloat16 without a copy."""
    base = rng.standard_normal(shape) * 3
    flat = base.reshape(-1)
    specials = special_values(dtype, extremes)
    picks = rng.choice(flat.size, size=min(flat.size // 3, 40), replace=False)
    flat[picks] = rng.choice(specials, size=picks.size)
    np_dtype = ml_dtypes.bfloat16 if dtype.startswith("bfloat16") else np.dtype(dtype)
    arr = base.astype(np_dtype)
    exact = arr.astype(np.float64)
    if dtype == "bfloat16-bits":
        arr = np.array(arr.view(np.uint16)).view(ml_dtypes.bfloat16)
    return arr, exact


def layouts(arr):
    """Views of `arr` the core must read in place: name -> (view, row index, column index)."""
    n, m = arr.shape
    rows, cols = np.arange(n), np.arange(m)
    out = {
        "C": (arr, rows, cols),
        "F": (np.asfortranarray(arr), rows, cols),
        "rows reversed": (arr[::-1], rows[::-1], cols),
        "cols reversed": (arr[:, ::-1], rows, cols[::-1]),
        "both reversed": (arr[::-1, ::-1], rows[::-1], cols[::-1]),
        "F, cols reversed": (np.asfortranarray(arr)[:, ::-1], rows, cols[::-1]),
        "F, rows reversed": (np.asfortranarray(arr)[::-1], rows[::-1], cols),
        "strided slice": (arr[1::2, ::3], rows[1::2], cols[::3]),
        "F strided slice": (np.asfortranarray(arr)[::3, 1::2], rows[::3], cols[1::2]),
    }
    return {k: v for k, v in out.items() if v[0].size > 0}


SHAPES = [(1, 1), (1, 37), (37, 1), (37, 53), (8, 8), (9, 17), (5, 1500), (1500, 5), (260, 300)]


def one_hot(labels, K):
    return np.eye(K)[labels]


def check_close(got, want, what):
    scale = max(1.0, np.abs(want[np.isfinite(want)]).max(initial=0.0))
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want), err_msg=what)
    finite = np.isfinite(want)
    err = np.abs(got[finite] - want[finite]).max(initial=0.0) / scale
    assert err < 1e-12, f"{what}: relative error {err:.2e}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_built_tables_equal_float64_one_hot_products(isa, dtype, rng):
    for shape in SHAPES:
        arr, exact = make(shape, dtype, rng)
        for name, (view, ri, ci) in layouts(arr).items():
            X = exact[np.ix_(ri, ci)]
            for K in (1, 3, 10, 70):
                s = rng.integers(0, K, view.shape[1]).astype(np.int32)
                u = rng.integers(0, K, view.shape[0]).astype(np.int32)
                what = f"{isa} {dtype} {shape} {name} K={K}"
                check_close(_core.build_table(view, s, K), X @ one_hot(s, K), f"R {what}")
                check_close(_core.build_table(view.T, u, K), X.T @ one_hot(u, K), f"C {what}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_updated_tables_equal_rebuilt_ones(isa, dtype, rng):
    for shape in [(37, 53), (9, 1500), (1500, 9), (260, 300), (1, 40), (40, 1)]:
        arr, exact = make(shape, dtype, rng, extremes=False)
        for name, (view, ri, ci) in layouts(arr).items():
            X = exact[np.ix_(ri, ci)]
            for table, V, Xv in (("R", view, X), ("C", view.T, X.T)):
                K = 6
                labels = rng.integers(0, K, V.shape[1]).astype(np.int32)
                T = _core.build_table(V, labels, K)
                for n_moves in (1, 7, V.shape[1]):
                    idx = rng.choice(V.shape[1], size=min(n_moves, V.shape[1]), replace=False)
                    new = labels.copy()
                    new[idx] = (labels[idx] + rng.integers(1, K, idx.size)) % K
                    _core.update_table(V, idx.astype(np.int64), labels[idx], new[idx], T)
                    labels = new
                    check_close(T, Xv @ one_hot(labels, K),
                                f"{table} {isa} {dtype} {shape} {name} after {n_moves} moves")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_nonfinite_values_stay_nonfinite(isa, dtype, rng):
    arr, _ = make((20, 40), dtype, rng)
    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    arr[3, 5] = np.array(np.inf, dtype=np_dtype)
    arr[11, 30] = np.array(np.nan, dtype=np_dtype)
    s = np.zeros(40, dtype=np.int32)
    u = np.zeros(20, dtype=np.int32)
    R = _core.build_table(arr, s, 1)[:, 0]
    assert np.isposinf(R[3]) and np.isnan(R[11]) and np.isfinite(np.delete(R, [3, 11])).all()
    C = _core.build_table(arr.T, u, 1)[:, 0]
    assert np.isposinf(C[5]) and np.isnan(C[30]) and np.isfinite(np.delete(C, [5, 30])).all()


def test_build_into_out_and_argument_checks(rng):
    A = rng.standard_normal((30, 20)).astype(np.float32)
    s = rng.integers(0, 4, 20).astype(np.int32)
    out = np.full((30, 4), np.nan)
    assert _core.build_table(A, s, 4, out=out) is out
    check_close(out, A.astype(np.float64) @ one_hot(s, 4), "out=")
    with pytest.raises(ValueError, match="out must be"):
        _core.build_table(A, s, 4, out=np.empty((30, 5)))
    with pytest.raises(ValueError, match="col_labels out of range"):
        _core.build_table(A, np.full(20, 4, dtype=np.int32), 4)


def test_isa_levels_are_reported_and_selectable():
    info = ulcmod.build_info()
    assert info["isa"] in info["isa_supported"]
    assert set(info["isa_supported"]) <= set(info["isa_compiled"])
    assert info["isa_compiled"][0] == "default" and "default" in info["isa_supported"]
    with pytest.raises(ValueError, match="not compiled"):
        _core._set_isa("sse9")


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_environment_variable_caps_the_level():
    res = run_python("import ulcmod; print(ulcmod.build_info()['isa'])", ULCMOD_ISA="default")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "default"
    res = run_python("import warnings; warnings.simplefilter('always'); import ulcmod", ULCMOD_ISA="avx9000")
    assert res.returncode == 0, res.stderr
    assert "ULCMOD_ISA='avx9000' is not one of" in res.stderr


# --- PCA pass -------------------------------------------------------------------------------


def pca_pass_reference(A, rows, Y, last):
    """One pass of python/ulcmod/_pca.py's math, in NumPy, on the whole selection at once."""
    work = A.dtype
    X = A[rows] if rows is not None else A
    mu = X.mean(axis=1, dtype=np.float64)
    Z = X @ Y.astype(work) - np.outer(mu, Y.sum(axis=0))
    gram = Z.T @ Z
    if last:
        return gram, None, None
    return gram, X.T.astype(np.float64) @ Z.astype(work).astype(np.float64), mu @ Z


@pytest.mark.parametrize("dtype", DTYPES)
def test_pca_pass_equals_numpy(isa, dtype, rng):
    np_dtype = ml_dtypes.bfloat16 if dtype.startswith("bfloat16") else np.dtype(dtype)
    work = np.float64 if dtype == "float64" else np.float32
    for shape, layout in (((300, 70), "C"), ((257, 33), "F"), ((150, 3), "rows reversed"),
                          ((40, 500), "F strided slice")):
        arr = (rng.standard_normal(shape) + 1.0).astype(np_dtype)
        exact = arr.astype(work)
        if dtype == "bfloat16-bits":
            arr = np.array(arr.view(np.uint16)).view(ml_dtypes.bfloat16)
        view, ri, ci = layouts(arr)[layout]
        X = exact[np.ix_(ri, ci)]
        width = min(9, view.shape[1])
        Y = np.linalg.qr(rng.standard_normal((view.shape[1], width)))[0]
        rows = np.sort(rng.choice(view.shape[0], size=view.shape[0] // 2, replace=False))
        tol = 1e-11 if dtype == "float64" else 2e-5
        for sel in (None, rows):
            for last in (False, True):
                got = _core.pca_pass(view, sel, Y, last)
                want = pca_pass_reference(X, sel, Y, last)
                what = f"{isa} {dtype} {shape} {layout} rows={'all' if sel is None else 'some'} last={last}"
                for g, w in zip(got[:3], want):
                    if w is None:
                        assert g is None, what
                    else:
                        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * np.abs(w).max(), err_msg=what)
                assert got[3] == -1, what


def test_pca_pass_reports_the_first_nonfinite_row(isa, rng):
    A = rng.standard_normal((500, 40)).astype(np.float16)
    A[123, 7] = np.nan
    A[321, 2] = np.inf
    Y = np.linalg.qr(rng.standard_normal((40, 5)))[0]
    assert _core.pca_pass(A, None, Y, False)[3] == 123
    rows = np.array([5, 321, 400, 123], dtype=np.int64)
    assert _core.pca_pass(A, rows, Y, True)[3] == 1
    for source in (A, RowSource(A)):  # rows read in place, rows gathered first
        with pytest.raises(ValueError, match=r"first in row 321"):
            sample_pca(source, 3, np.random.default_rng(0), rows=np.array([5, 321, 400]))


def test_sample_pca_spans_the_planted_subspace(rng):
    # Low-rank samples plus noise: the top principal directions are the planted ones.
    N, M, r = 2000, 300, 3
    basis = rng.standard_normal((M, r))
    A = (rng.standard_normal((N, r)) * [30, 20, 10]) @ basis.T + rng.standard_normal((N, M))
    for dtype in (np.float16, np.float32, np.float64):
        scores = sample_pca(A.astype(dtype), r, np.random.default_rng(0))
        # scores (M x r) lie in the span of the centred planted basis
        B = basis - basis.mean(axis=0)
        q, _ = np.linalg.qr(B)
        resid = scores - q @ (q.T @ scores)
        assert np.linalg.norm(resid) < 0.05 * np.linalg.norm(scores)


def test_pca_pass_checks_its_arguments(rng):
    A = rng.standard_normal((10, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="Y must be"):
        _core.pca_pass(A, None, np.zeros((5, 2)), False)
    with pytest.raises(ValueError, match="rows out of range"):
        _core.pca_pass(A, np.array([0, 10]), np.zeros((6, 2)), False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _core.pca_pass(A, np.array([0, 9]), np.zeros((6, 2)), True)


class RowSource:
    """An array-like with shape, dtype and row slicing only (as a cluster's activations are)."""

    def __init__(self, A):
        self.A, self.shape, self.dtype = A, A.shape, A.dtype

    def __getitem__(self, rows):
        return self.A[rows]


def test_sample_pca_of_an_array_like_goes_block_by_block(rng, monkeypatch):
    import ulcmod.core._pca as pca

    A = rng.standard_normal((700, 90)).astype(np.float32)
    A[:, :10] += 3 * rng.standard_normal((700, 1)).astype(np.float32)
    whole = sample_pca(A, 4, np.random.default_rng(1))
    monkeypatch.setattr(pca, "_BLOCK_BYTES", 64 * 4 * 90)  # blocks of 64 rows
    blocks = sample_pca(RowSource(A), 4, np.random.default_rng(1))
    np.testing.assert_allclose(np.abs(blocks), np.abs(whole), rtol=1e-4, atol=1e-4 * np.abs(whole).max())
    A[650, 3] = np.inf
    with pytest.raises(ValueError, match=r"first in row 650"):
        sample_pca(RowSource(A), 4, np.random.default_rng(1))


def test_sample_pca_reads_a_row_subset_in_place(rng):
    A = rng.standard_normal((700, 90)).astype(np.float16)
    rows = np.sort(rng.choice(700, 300, replace=False))
    np.testing.assert_array_equal(sample_pca(A, 4, np.random.default_rng(1), rows=rows),
                                  sample_pca(A[rows], 4, np.random.default_rng(1)))
