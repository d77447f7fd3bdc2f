"""null_test, stability and select_k on planted and pure-noise matrices; the row permutation."""

import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import ulcmod
from ulcmod.analyses import _resampling, model_selection, significance_report
from ulcmod.analyses._resampling import permute_rows
from ulcmod.analyses.module_stability import adjusted_rand_index, match_modules, split_shares
from ulcmod.core.synthetic import planted

SIGNAL = 2.0  # planted block offset (noise sd 1): IterD recovers the blocks also from bootstrap resamples
SHAPES = [(90, 60, 3), (120, 64, 4), (80, 48, 2)]  # (neurons, samples, K_true): 16+ samples per module
FAST = {"max_iter": 50}  # every test run converges in a few iterations


def _planted(shape, seed):
    N, M, K = shape
    return planted(N, M, K, SIGNAL, random_state=seed)


def _bits(A):
    return np.asarray(A).view(f"u{np.dtype(A.dtype).itemsize}")


# --- the row permutation ---------------------------------------------------------------------

def _dtypes():
    out = [np.float16, np.float32, np.float64]
    try:
        import ml_dtypes

        out.append(ml_dtypes.bfloat16)
    except ImportError:  # pragma: no cover - ml_dtypes is installed with the test extras' numpy
        pass
    return out


@pytest.mark.parametrize("dtype", _dtypes(), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_permuted_rows_hold_exactly_the_multiset_of_each_row(dtype, layout, rng):
    base = rng.standard_normal((37, 61)).astype(np.float32)
    base[0, :3] = [0.0, -0.0, 1.0]  # signed zeros must survive bit for bit
    base = base.astype(dtype)
    A = {"C": base, "F": np.asfortranarray(base), "strided": base[::-1, ::2]}[layout]
    out = np.empty(A.shape, dtype=A.dtype)
    P = permute_rows(A, seed=11, out=out)
    assert P is out and P.dtype == A.dtype
    assert np.array_equal(np.sort(_bits(P), axis=1), np.sort(_bits(np.ascontiguousarray(A)), axis=1))
    assert (P != A).mean() > 0.9  # rows are really reordered
    assert np.array_equal(_bits(permute_rows(A, seed=11)), _bits(P))  # same seed, same result
    assert not np.array_equal(_bits(permute_rows(A, seed=12)), _bits(P))


def test_permutations_are_uniform_and_independent_between_rows():
    A = np.tile(np.arange(4, dtype=np.float32), (40_000, 1))
    P = permute_rows(A, seed=3)
    counts = np.stack([(P == v).sum(axis=0) for v in range(4)])  # value x position
    assert np.abs(counts / 10_000 - 1).max() < 0.05  # each value equally often at each position
    assert len({row.tobytes() for row in P[:200]}) > 20  # identical rows get different orders


def test_permutation_does_not_depend_on_the_thread_count():
    code = ("import numpy as np, sys; from ulcmod.analyses._resampling import permute_rows;"
            "A = np.arange(300 * 70, dtype=np.float32).reshape(300, 70);"
            "sys.stdout.write(permute_rows(A, seed=5).tobytes().hex())")
    one_thread = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    A = np.arange(300 * 70, dtype=np.float32).reshape(300, 70)
    assert ulcmod.build_info()["max_threads"] == 1 or bytes.fromhex(one_thread) == permute_rows(A, seed=5).tobytes()


def test_bootstrap_gather_draws_columns_of_a():
    A = np.arange(5 * 50, dtype=np.float64).reshape(5, 50)
    B = _resampling.bootstrap_columns(A, np.random.default_rng(0), np.empty_like(A))
    columns = B[0].astype(int)
    assert np.array_equal(B, A[:, columns]) and np.all(np.diff(columns) >= 0)
    assert 20 < np.unique(columns).size < 45  # about 63% distinct


# --- null_test -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def planted_tests():
    return [(shape, *_planted(shape, i), ) for i, shape in enumerate(SHAPES)]


@pytest.mark.parametrize("i", range(len(SHAPES)))
def test_null_test_on_planted_modules_is_significant(planted_tests, i):
    shape, A, u, s = planted_tests[i]
    res = ulcmod.null_test(A, shape[2], n_null=100, iterd_params=FAST, random_state=i, progress=False)
    assert adjusted_rand_score(u, res.result.neuron_labels) == 1.0  # IterD found the planted blocks
    assert res.p_value < 0.01 and res.p_value == 1 / 101
    assert res.z > 5 and res.L > res.null_L.max()
    assert (res.module_p_values < 0.01).all()
    assert res.module_sizes.sum(axis=0).tolist() == [shape[0], shape[1]]
    assert np.allclose(res.module_means, SIGNAL, atol=0.3)


@pytest.mark.parametrize("i", range(len(SHAPES)))
def test_null_test_on_pure_noise_is_not_significant(i):
    # On noise A is one more draw of the null, so p is uniform: each seeded case holds with
    # probability 0.95 (the seeds are fixed, so the outcome is too).
    N, M, K = SHAPES[i]
    noise = np.random.default_rng(200 + i).standard_normal((N, M))
    res = ulcmod.null_test(noise, K, n_null=39, iterd_params=FAST, random_state=i, progress=False)
    assert res.p_value > 0.05
    assert abs(res.z) < 3


def test_null_p_value_and_z_follow_their_definitions(planted_tests):
    shape, A, _, _ = planted_tests[0]
    res = ulcmod.null_test(A, 2, n_null=7, iterd_params=FAST, random_state=1, progress=False)
    assert res.p_value == (1 + (res.null_L >= res.L).sum()) / 8
    assert res.z == pytest.approx((res.L - res.null_L.mean()) / res.null_L.std(ddof=1))
    expected = [(1 + (res.null_best_means >= b).sum()) / 8 for b in res.module_means]
    assert res.module_p_values.tolist() == expected
    u, s = res.result.neuron_labels, res.result.sample_labels
    assert res.module_means.tolist() == pytest.approx([A[np.ix_(u == k, s == k)].mean() for k in range(2)])


def test_null_runs_are_reproducible_and_extend_with_n_null(planted_tests):
    _, A, _, _ = planted_tests[0]
    a = ulcmod.null_test(A, 3, n_null=4, iterd_params=FAST, random_state=7, progress=False)
    b = ulcmod.null_test(A, 3, n_null=6, iterd_params=FAST, random_state=7, progress=False)
    assert np.array_equal(a.null_L, b.null_L[:4]) and a.L == b.L
    c = ulcmod.null_test(A, 3, n_null=4, iterd_params=FAST, random_state=8, progress=False)
    assert not np.array_equal(a.null_L, c.null_L)


def test_every_run_uses_the_same_iterd_settings_and_null_data_are_row_permutations(monkeypatch, planted_tests):
    _, A, _, _ = planted_tests[1]
    A = A.astype(np.float32)
    calls = []
    real_iterd = _resampling.iterd

    def recording_iterd(X, K, **kwargs):
        calls.append((np.array(X, copy=True), K, kwargs))
        return real_iterd(X, K, **kwargs)

    monkeypatch.setattr(_resampling, "iterd", recording_iterd)
    params = {"init": "kmeans", "n_init": 2, "max_iter": 40, "tol": 1e-8, "order": "sequential", "pca_neurons": 50}
    ulcmod.null_test(A, 4, n_null=3, iterd_params=params, random_state=0, progress=False)
    ulcmod.stability(A, 4, n_runs=2, iterd_params=params, random_state=0, progress=False)
    assert len(calls) == 1 + 3 + 1 + 2
    for X, K, kwargs in calls:
        assert K == 4 and X.shape == A.shape and X.dtype == A.dtype
        assert {k: v for k, v in kwargs.items() if k != "random_state"} == {**params, "progress": False}
    assert np.array_equal(calls[0][0], A) and np.array_equal(calls[4][0], A)  # the runs on A itself
    for X, _, _ in calls[1:4]:
        assert np.array_equal(np.sort(X, axis=1), np.sort(A, axis=1)) and not np.array_equal(X, A)
    seeds = [kwargs["random_state"].bit_generator.state["state"]["state"] for _, _, kwargs in calls[1:4]]
    assert len(set(seeds)) == 3


def test_given_result_is_the_run_tested_and_must_belong_to_a(planted_tests):
    _, A, _, _ = planted_tests[0]
    res = ulcmod.iterd(A, 3, random_state=5, **FAST)
    test = ulcmod.null_test(A, 3, n_null=3, result=res, iterd_params=FAST, random_state=0, progress=False)
    assert test.result is res and test.L == res.L
    with pytest.raises(ValueError, match="another matrix"):
        ulcmod.null_test(A + 1.0, 3, n_null=3, result=res, random_state=0, progress=False)
    with pytest.raises(ValueError, match="result.neuron_labels"):
        ulcmod.null_test(A[:50], 3, n_null=3, result=res, random_state=0, progress=False)
    with pytest.raises(TypeError, match="IterDResult"):
        ulcmod.null_test(A, 3, n_null=3, result=res.neuron_labels, random_state=0, progress=False)


@pytest.mark.parametrize("dtype", _dtypes(), ids=lambda d: np.dtype(d).name)
def test_dtypes_and_memmaps_stream_in_place(tmp_path, planted_tests, dtype):
    _, A, u, _ = planted_tests[0]
    mm = np.memmap(tmp_path / "a.bin", mode="w+", dtype=dtype, shape=A.shape)  # raw: .npy cannot name bfloat16
    mm[:] = A.astype(dtype)
    mm.flush()
    A_disk = np.memmap(tmp_path / "a.bin", mode="r", dtype=dtype, shape=A.shape)
    test = ulcmod.null_test(A_disk, 3, n_null=3, iterd_params=FAST, random_state=0, progress=False)
    stab = ulcmod.stability(A_disk, 3, n_runs=2, iterd_params=FAST, random_state=0, progress=False)
    assert test.L > test.null_L.max() and adjusted_rand_score(u, stab.consensus_labels) == 1.0


def test_runs_stopped_at_max_iter_give_one_warning_per_analysis(planted_tests):
    _, A, _, _ = planted_tests[1]
    with pytest.warns(ulcmod.ConvergenceWarning) as record:
        res = ulcmod.null_test(A, 4, n_null=4, iterd_params={"max_iter": 1, "init": "random"},
                               random_state=0, progress=False)
    assert len(record) <= 2 and res.n_not_converged > 0  # the run on A, and all null runs in one
    assert any(f"{res.n_not_converged} of 4" in str(w.message) for w in record)


# --- stability -------------------------------------------------------------------------------

@pytest.mark.parametrize("i", range(len(SHAPES)))
def test_planted_modules_are_stable_and_the_consensus_is_the_planted_partition(planted_tests, i):
    shape, A, u, s = planted_tests[i]
    res = ulcmod.stability(A, shape[2], n_runs=10, iterd_params=FAST, random_state=i, progress=False)
    assert res.module_stability.min() >= 0.9
    assert res.mean_ari >= 0.9 and res.ari_to_reference.min() >= 0.8
    assert adjusted_rand_score(u, res.consensus_labels) == 1.0
    assert adjusted_rand_score(s, res.consensus_sample_labels) == 1.0
    assert res.agreement.mean() >= 0.9 and res.run_labels.shape == (10, shape[0])


def test_modules_of_pure_noise_are_unstable():
    noise = np.random.default_rng(5).standard_normal((120, 40))
    res = ulcmod.stability(noise, 4, n_runs=10, iterd_params=FAST, random_state=0, progress=False)
    assert res.module_stability.max() < 0.6 and res.mean_ari < 0.2


def test_restarts_only_on_planted_data_agree(planted_tests):
    shape, A, u, _ = planted_tests[0]
    res = ulcmod.stability(A, 3, n_runs=3, resample="none", iterd_params=FAST, random_state=0, progress=False)
    assert res.mean_ari == 1.0 and np.allclose(res.run_L, res.reference.L)


def test_matching_and_ari_against_independent_computations(rng):
    reference = np.repeat(np.arange(3), 4)
    renamed = np.array([2, 0, 1])[reference]
    renamed[0] = 0  # one neuron moves from module 0 (named 2 in `renamed`) to module 1 (named 0)
    matched, relabel = match_modules(reference, renamed, 3)
    assert relabel.tolist() == [1, 2, 0]
    assert matched.tolist() == pytest.approx([3 / 4, 4 / 5, 1.0])
    for _ in range(5):
        a, b = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
        b[:120] = a[:120]
        assert adjusted_rand_index(a, b, 4) == pytest.approx(adjusted_rand_score(a, b))


def test_given_reference_is_scored(planted_tests):
    _, A, _, _ = planted_tests[0]
    res = ulcmod.iterd(A, 3, random_state=9, **FAST)
    stab = ulcmod.stability(A, 3, n_runs=2, reference=res, iterd_params=FAST, random_state=0, progress=False)
    assert stab.reference is res
    with pytest.raises(ValueError, match="another matrix"):
        ulcmod.stability(A * 2.0, 3, n_runs=2, reference=res, random_state=0, progress=False)


# --- select_k ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def selection(planted_tests):
    _, A, _, _ = planted_tests[1]  # K_true = 4
    return A, ulcmod.select_k(A, [2, 3, 4, 5, 6], n_null=19, n_runs=8, iterd_params=FAST, random_state=0,
                              progress=False)


def test_select_k_recommends_the_planted_k(selection):
    _, sel = selection
    assert sel.recommended_k == 4
    assert sel.ks.tolist() == [2, 3, 4, 5, 6] and (sel.p_values <= 0.05).all()
    best = sel.ks.tolist().index(4)
    assert sel.mean_ari.argmax() == best and sel.gap.argmax() == best


def test_select_k_repeats_null_test_and_stability_exactly(selection):
    A, sel = selection
    test = ulcmod.null_test(A, 5, n_null=19, iterd_params=FAST, random_state=0, progress=False)
    stab = ulcmod.stability(A, 5, n_runs=8, iterd_params=FAST, random_state=0, progress=False)
    i = sel.ks.tolist().index(5)
    assert np.array_equal(sel.null_tests[i].null_L, test.null_L) and sel.p_values[i] == test.p_value
    assert np.array_equal(sel.stabilities[i].run_labels, stab.run_labels)
    assert np.array_equal(sel.stabilities[i].module_stability, stab.module_stability)


def test_select_k_scores_the_given_results(selection):
    A, sel = selection
    given = ulcmod.iterd(A, 5, random_state=7, **FAST)  # another seed than select_k's own run at K=5
    again = ulcmod.select_k(A, [3, 5], n_null=19, n_runs=8, iterd_params=FAST, results={5: given},
                            random_state=0, progress=False)
    assert again.null_tests[1].result is given and again.stabilities[1].reference is given
    assert again.L[1] == given.L
    assert np.array_equal(again.null_tests[1].null_L, sel.null_tests[3].null_L)  # same nulls, same seed
    assert np.array_equal(again.null_tests[0].result.neuron_labels, sel.null_tests[1].result.neuron_labels)
    with pytest.raises(ValueError, match=r"K=\[4\], which are not in ks"):
        ulcmod.select_k(A, [3, 5], results={4: given}, progress=False)
    with pytest.raises(ValueError, match=r"results\[5\] has L="):
        ulcmod.select_k(A * 2.0, [5], n_null=2, n_runs=2, results={5: given}, progress=False)
    with pytest.raises(TypeError, match="results must be a dict"):
        ulcmod.select_k(A, [5], results=[given], progress=False)


def test_recommend_k_rule():
    ks, ari = [2, 3, 4, 5], [0.9, 0.5, 0.9, 0.95]
    assert model_selection.recommend_k(ks, [0.01, 0.01, 0.01, 0.2], ari, 0.05) == 2  # tie: smaller K
    assert model_selection.recommend_k(ks, [0.01, 0.01, 0.01, 0.01], ari, 0.05) == 5
    assert model_selection.recommend_k(ks, [0.2] * 4, ari, 0.05) is None


def test_select_k_runs_a_repeated_k_once_with_a_warning(planted_tests):
    # Before: a repeated K was dropped silently (and `discover --k 4,4` ran everything twice).
    _, A, _, _ = planted_tests[0]
    with pytest.warns(UserWarning, match=r"ks \[3, 2, 3\] repeats K=\[3\]; each K runs once: \[3, 2\]"):
        sel = ulcmod.select_k(A, [3, 2, 3], n_null=2, n_runs=2, alpha=0.5, iterd_params=FAST, random_state=0,
                              progress=False)
    assert sel.ks.tolist() == [2, 3] and len(sel.null_tests) == 2


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("call, error, match", [
    (lambda A: ulcmod.null_test(A, 3, n_null=1), ValueError, "n_null must be >= 2"),
    (lambda A: ulcmod.null_test(A, 3, iterd_params={"seed": 1}), ValueError, "allowed keys"),
    (lambda A: ulcmod.null_test(A, 3, iterd_params=[("tol", 1)]), TypeError, "iterd_params must be a dict"),
    (lambda A: ulcmod.null_test(A, 3, iterd_params={"init": np.zeros(60, int)}), ValueError, "name an init"),
    (lambda A: ulcmod.null_test(A, 3, progress="yes"), ValueError, "progress must be"),
    (lambda A: ulcmod.null_test(A, 91), ValueError, "n_modules=91 exceeds"),
    (lambda A: ulcmod.null_test(A.astype(int), 3), TypeError, "integer"),
    (lambda A: ulcmod.stability(A, 3, n_runs=1), ValueError, "n_runs must be >= 2"),
    (lambda A: ulcmod.stability(A, 3, resample="jackknife"), ValueError, "resample must be one of"),
    (lambda A: ulcmod.select_k(A, []), ValueError, "ks is empty"),
    (lambda A: ulcmod.select_k(A, 4), TypeError, "ks must be a list"),
    (lambda A: ulcmod.select_k(A, [2, 3.5]), TypeError, "ks must hold integers"),
    (lambda A: ulcmod.select_k(A, [2, 100]), ValueError, "ks=100 exceeds"),
    (lambda A: ulcmod.select_k(A, [2, 3], alpha=1.5), ValueError, "alpha must be"),
])
def test_bad_arguments_name_the_argument(planted_tests, call, error, match):
    _, A, _, _ = planted_tests[0]
    with pytest.raises(error, match=match):
        call(A)


# --- report helpers --------------------------------------------------------------------------

def test_module_table_flags_and_consistency(planted_tests):
    _, A, _, _ = planted_tests[0]
    res = ulcmod.iterd(A, 3, random_state=0, **FAST)
    test = ulcmod.null_test(A, 3, n_null=19, result=res, iterd_params=FAST, random_state=0, progress=False)
    stab = ulcmod.stability(A, 3, n_runs=3, reference=res, iterd_params=FAST, random_state=0, progress=False)
    lines = significance_report.module_table(test, stab)
    assert lines[0].startswith("| module | neurons | samples |") and len(lines) == 2 + 3
    for k, line in enumerate(lines[2:]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == f"M{k}" and int(cells[1]) == (res.neuron_labels == k).sum()
        assert cells[-2:] == ["yes", "yes"]
    assert significance_report.significant_modules(test).tolist() == [p <= 0.05 for p in test.module_p_values]
    assert not significance_report.significant_modules(test, alpha=0.01).any()  # 19 null runs: p >= 0.05
    assert significance_report.stable_modules(stab, stable=1.01).tolist() == [False] * 3
    strict = significance_report.module_table(test, stab, alpha=0.01, stable=1.01)
    assert all(line.endswith("| no | no |") for line in strict[2:])
    only_null = significance_report.module_table(null_test=test)
    assert only_null[2].endswith("| - | yes | - |")
    other = ulcmod.stability(A, 3, n_runs=2, iterd_params=FAST, random_state=1, progress=False)
    if not np.array_equal(other.reference.neuron_labels, res.neuron_labels):
        with pytest.raises(ValueError, match="different runs"):
            significance_report.module_table(test, other)
    with pytest.raises(ValueError, match="needs a null_test"):
        significance_report.module_table()


def test_selection_table_and_figure(tmp_path, selection):
    _, sel = selection
    lines = significance_report.selection_table(sel)
    assert len(lines) == 2 + sel.ks.size
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["2", "3", "4", "5", "6"]
    assert lines[2 + 2].rstrip().endswith("| yes |") and lines[2].rstrip().endswith("|  |")
    path = significance_report.significance_figure(tmp_path / "significance.png", null_tests=sel.null_tests,
                                                   stabilities=sel.stabilities, selection=sel)
    assert path.stat().st_size > 10_000
    plt = significance_report.pyplot()
    fig, axes = plt.subplots(1, 3)
    significance_report.plot_null(sel.null_tests[0], axes[0])
    significance_report.plot_module_stability(sel.stabilities[0], axes[1])
    significance_report.plot_select_k(sel, axes[2])
    assert axes[0].get_title().startswith("K=2") and axes[0].get_xlabel() == "IterD objective L"
    assert axes[1].get_ylabel() == "mean matched Jaccard"
    assert "recommended K=4" in axes[2].get_legend_handles_labels()[1]
    plt.close(fig)
    with pytest.raises(ValueError, match="needs null_tests"):
        significance_report.significance_figure(tmp_path / "x.png")


def test_null_plot_keeps_the_null_readable_when_a_s_l_is_far_beyond_it(planted_tests):
    _, A, _, _ = planted_tests[0]
    plt = significance_report.pyplot()
    fig, (far, near) = plt.subplots(1, 2)
    planted_test = ulcmod.null_test(A, 3, n_null=19, iterd_params=FAST, random_state=0, progress=False)
    significance_report.plot_null(planted_test, far)
    assert planted_test.L > 10 * np.ptp(planted_test.null_L) + planted_test.null_L.max()  # far beyond
    assert far.get_xlim()[1] < planted_test.L and not far.lines  # the axis spans the null ...
    assert f"L of A = {planted_test.L:.4g}" in far.texts[0].get_text()  # ... and a note gives A's L
    noise = np.random.default_rng(0).normal(size=A.shape)
    noise_test = ulcmod.null_test(noise, 3, n_null=19, iterd_params=FAST, random_state=0, progress=False)
    significance_report.plot_null(noise_test, near)
    assert near.lines[0].get_xdata()[0] == noise_test.L and not near.texts  # inside the null: a line at L
    plt.close(fig)


def test_split_shares_count_where_each_module_goes(rng):
    a, b = rng.integers(0, 4, 300), rng.integers(0, 6, 300)
    a[a == 3] = 2  # module 3 of `a` is empty: its row stays 0
    shares = split_shares(a, b, 4, 6)
    for p in range(4):
        for q in range(6):
            members = a == p
            expected = (b[members] == q).sum() / members.sum() if members.any() else 0.0
            assert shares[p, q] == pytest.approx(expected)
    np.testing.assert_allclose(shares[:3].sum(axis=1), 1.0)
