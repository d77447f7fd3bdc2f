"""Property-based tests (hypothesis) over random shapes, dtypes, layouts and damaged inputs.

Each property holds for every input hypothesis draws: IterD's L equals a brute-force objective
and a converged result is a local optimum; the objective equals brute force for any labels;
balanced k-means keeps its sizes; FastICA's transform reproduces its sources; the dataset
reader keeps exactly the good rows or names the first bad one; a NaN/inf anywhere is named by
its row. Examples are few and deadlines off, so the file runs in seconds on 2 cores.
"""

import json
import warnings

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ulcmod

from conftest import best_single_move_gain, brute_objective

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32, "float64": np.float64}
LAYOUTS = ("C", "F", "strided", "negative")


def laid_out(X: np.ndarray, layout: str) -> np.ndarray:
    """The same values as X in another memory layout (a view where the layout is a view)."""
    if layout == "F":
        return np.asfortranarray(X)
    if layout == "strided":  # every other row and column of a larger array
        big = np.zeros((2 * X.shape[0], 3 * X.shape[1]), dtype=X.dtype)
        big[::2, ::3] = X
        return big[::2, ::3]
    if layout == "negative":
        return np.ascontiguousarray(X[::-1, ::-1])[::-1, ::-1]
    return np.ascontiguousarray(X)


@st.composite
def matrices(draw, min_rows=2, max_rows=24, min_cols=2, max_cols=16):
    """(A in some dtype and layout, the float64 values it holds)."""
    n = draw(st.integers(min_rows, max_rows))
    m = draw(st.integers(min_cols, max_cols))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    dtype = DTYPES[draw(st.sampled_from(sorted(DTYPES)))]
    rng = np.random.default_rng(seed)
    values = (rng.normal(size=(n, m)) * scale + draw(st.sampled_from([0.0, 2.0])) * scale).astype(dtype)
    return laid_out(values, draw(st.sampled_from(LAYOUTS))), values.astype(np.float64)


@FAST
@given(data=matrices(), K=st.integers(2, 4), init=st.sampled_from(["balanced-kmeans", "kmeans", "random"]),
       order=st.sampled_from(["parallel", "random", "sequential"]))
def test_iterd_is_exact_and_locally_optimal_for_any_dtype_and_layout(data, K, init, order):
    A, values = data
    K = min(K, *A.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ulcmod.ConvergenceWarning)
        res = ulcmod.iterd(A, K, init=init, order=order, random_state=0)
        same = ulcmod.iterd(np.ascontiguousarray(A), K, init=init, order=order, random_state=0)
    u, s = res.neuron_labels, res.sample_labels
    assert np.bincount(u, minlength=K).min() >= 1 and np.bincount(s, minlength=K).min() >= 1
    assert res.L == pytest.approx(brute_objective(values, u, s, K)[0], rel=1e-9, abs=1e-300)
    np.testing.assert_array_equal(u, same.neuron_labels)  # the layout never changes the result
    np.testing.assert_array_equal(s, same.sample_labels)
    assert np.isfinite(res.history.L).all()
    if res.converged and res.L != 0:
        assert best_single_move_gain(values, u.copy(), s.copy(), K) <= 1e-8


@FAST
@given(data=matrices(), K=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_objective_equals_brute_force_for_any_labels(data, K, seed):
    A, values = data
    rng = np.random.default_rng(seed)
    u, s = rng.integers(0, K, A.shape[0]), rng.integers(0, K, A.shape[1])
    got = ulcmod.objective(A, u, s, n_modules=K, allow_empty=True)
    n, m = np.bincount(u, minlength=K), np.bincount(s, minlength=K)
    if (n * m == 0).any():
        assert got.L == 0.0 and got.B == 0.0
    else:
        assert got == pytest.approx(brute_objective(values, u, s, K), rel=1e-9, abs=1e-300)


@FAST
@given(data=matrices(min_rows=3, max_rows=40, max_cols=4), K=st.integers(1, 6))
def test_balanced_kmeans_keeps_sizes_and_reports_its_inertia(data, K):
    X, values = data
    K = min(K, X.shape[0])
    centers, labels, inertia = ulcmod.balanced_kmeans(X, K, n_init=2, random_state=0)
    sizes = np.bincount(labels, minlength=K)
    assert set(sizes.tolist()) <= {X.shape[0] // K, -(-X.shape[0] // K)} and sizes.sum() == X.shape[0]
    assert inertia == pytest.approx(((values - centers[labels]) ** 2).sum(), rel=1e-6, abs=1e-9)


@FAST
@given(n=st.integers(30, 80), p=st.integers(2, 5), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.float32, np.float64]), layout=st.sampled_from(LAYOUTS),
       algorithm=st.sampled_from(["parallel", "deflation"]), fun=st.sampled_from(["logcosh", "exp", "cube"]))
def test_fastica_sources_are_its_transform(n, p, seed, dtype, layout, algorithm, fun):
    rng = np.random.default_rng(seed)
    mixing = np.linalg.qr(rng.normal(size=(p, p)))[0] * rng.uniform(0.5, 2.0, p)  # well conditioned
    X = laid_out((rng.laplace(size=(n, p)) @ mixing).astype(dtype), layout)
    c = int(rng.integers(1, p + 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ulcmod.ConvergenceWarning)
        ica = ulcmod.FastICA(c, algorithm=algorithm, fun=fun, random_state=0, max_iter=50)
        S = ica.fit_transform(X)
    assert S.shape == (n, c) and np.isfinite(S).all()
    tol = 1e-3 if dtype == np.float32 else 1e-8
    np.testing.assert_allclose(ica.transform(X), S, rtol=tol, atol=tol * np.abs(S).max())


@FAST
@given(data=matrices(min_rows=3, min_cols=3), bad=st.sampled_from([np.nan, np.inf, -np.inf]),
       count=st.integers(1, 3), seed=st.integers(0, 2**32 - 1),
       call=st.sampled_from(["iterd", "iterd-random", "objective", "zscore", "kmeans", "ica"]))
def test_a_non_finite_value_anywhere_is_named(data, bad, count, seed, call):
    A, _ = data
    A = np.array(A, dtype=np.float32 if A.dtype.name == "bfloat16" else A.dtype)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, A.shape[0], count)
    A[rows, rng.integers(0, A.shape[1], count)] = bad
    first = f"first in row {rows.min()}"
    calls = {
        "iterd": (lambda: ulcmod.iterd(A, 2, random_state=0), first),
        "iterd-random": (lambda: ulcmod.iterd(A, 2, init="random", random_state=0), first),
        "objective": (lambda: ulcmod.objective(A, np.arange(A.shape[0]) % 2, np.arange(A.shape[1]) % 2), "column"),
        "zscore": (lambda: ulcmod.fit_zscore(A), f"first in neuron {rows.min()}"),
        "kmeans": (lambda: ulcmod.balanced_kmeans(A, 2, n_init=1), "NaN or infinity"),
        "ica": (lambda: ulcmod.FastICA(2).fit(A), "NaN or infinity"),
    }
    run, where = calls[call]
    with pytest.raises(ValueError, match="NaN or infinity") as info:
        run()
    assert where in str(info.value)


ROWS = st.one_of(
    st.fixed_dictionaries({"text": st.text(min_size=1, max_size=8), "label": st.sampled_from(["Math", "Coding", 3])}),
    st.fixed_dictionaries({"text": st.sampled_from(["", "  ", None]), "label": st.just("Math")}),  # skipped
    st.fixed_dictionaries({"text": st.just("x")}),  # no label column
    st.fixed_dictionaries({"text": st.just("x"), "label": st.sampled_from([None, "", 1.5])}),  # no usable label
    st.sampled_from([3, "a string", [1, 2], None]),  # not a row
)


def _row_status(row):
    if not isinstance(row, dict) or "label" not in row:
        return "bad"
    label = row["label"]
    if label is None or isinstance(label, float) or (isinstance(label, str) and not label.strip()):
        return "bad"
    return "empty" if row["text"] is None or not row["text"].strip() else "good"


@FAST
@given(rows=st.lists(ROWS, min_size=1, max_size=12), fmt=st.sampled_from(["jsonl", "json"]))
def test_dataset_reader_keeps_the_good_rows_or_names_the_first_bad_one(rows, fmt, tmp_path_factory):
    path = tmp_path_factory.mktemp("rows") / f"d.{fmt}"
    path.write_text("\n".join(json.dumps(r) for r in rows) if fmt == "jsonl" else json.dumps(rows))
    status = [_row_status(r) for r in rows]
    where = "line" if fmt == "jsonl" else "row"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if "bad" in status:
            with pytest.raises(ValueError, match=f"d.{fmt}, {where} {status.index('bad') + 1}: "):
                ulcmod.load_prompts(path)
        elif "good" not in status:
            with pytest.raises(ValueError, match="holds no rows with a text"):
                ulcmod.load_prompts(path)
        else:
            got = ulcmod.load_prompts(path)
            good = [r for r, k in zip(rows, status) if k == "good"]
            assert [(p.text, p.category) for p in got] == [(r["text"], str(r["label"]).strip()) for r in good]
    if "bad" not in status:
        assert bool(caught) == ("empty" in status)
