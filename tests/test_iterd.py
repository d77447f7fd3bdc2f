import dataclasses
import warnings

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import ulcmod
from ulcmod import _core
from ulcmod.core.synthetic import planted

from conftest import best_single_move_gain, brute_objective


@pytest.mark.parametrize("init", ["balanced-kmeans", "kmeans", "random"])
@pytest.mark.parametrize("order", ["random", "sequential"])
def test_converged_result_is_a_local_optimum(rng, init, order):
    for trial in range(3):
        N, M, K = 14, 11, 3
        A = rng.normal(size=(N, M)) + rng.random() * rng.random((N, M))
        res = ulcmod.iterd(A, K, init=init, order=order, random_state=trial)
        assert res.converged
        u, s = res.neuron_labels.copy(), res.sample_labels.copy()
        assert np.bincount(u, minlength=K).min() >= 1 and np.bincount(s, minlength=K).min() >= 1
        L, xi, B = brute_objective(A, u, s, K)
        assert res.L == pytest.approx(L, rel=1e-12)
        assert (res.xi, res.B) == pytest.approx((xi, B), rel=1e-12)
        # No single move (neuron or sample) improves L beyond the acceptance tolerance.
        assert best_single_move_gain(A, u, s, K) <= 1e-9


def test_history_is_monotone_and_ends_without_moves(rng):
    A, _, _ = planted(200, 80, 4, 0.6, rng)
    res = ulcmod.iterd(A, 4, init="random", random_state=1)
    h = res.history
    assert res.converged and res.n_iter == len(h.L) - 1 >= 2
    assert np.all(np.diff(h.L) >= 0)
    assert h.neurons_moved[-1] == 0 and h.samples_moved[-1] == 0
    assert (h.neurons_moved[1:-1] + h.samples_moved[1:-1] > 0).all()
    assert h.L[-1] == pytest.approx(res.L, rel=1e-12)
    assert (h.seconds >= 0).all()


@pytest.mark.parametrize("init", ["balanced-kmeans", "kmeans", "random"])
def test_planted_modules_are_recovered(rng, init):
    A, u, s = planted(600, 240, 5, 1.0, rng, dtype=np.float32)
    res = ulcmod.iterd(A, 5, init=init, n_init=3, random_state=0)
    assert adjusted_rand_score(u, res.neuron_labels) > 0.99
    assert adjusted_rand_score(s, res.sample_labels) > 0.99


def test_restarts_never_worse_than_first_run(rng):
    for seed in range(4):
        A = rng.normal(size=(60, 40))
        one = ulcmod.iterd(A, 4, init="random", n_init=1, random_state=seed)
        many = ulcmod.iterd(A, 4, init="random", n_init=6, random_state=seed)
        assert many.L >= one.L


def test_same_random_state_same_labels(rng):
    A, _, _ = planted(300, 100, 4, 0.3, rng)
    a = ulcmod.iterd(A, 4, random_state=7)
    b = ulcmod.iterd(A, 4, random_state=7)
    np.testing.assert_array_equal(a.neuron_labels, b.neuron_labels)
    np.testing.assert_array_equal(a.sample_labels, b.sample_labels)
    assert a.L == b.L


def test_dtypes_and_layouts_agree_on_planted_data(rng):
    A, u, s = planted(400, 150, 4, 1.0, rng)
    results = []
    for dtype in (np.float16, np.float32, np.float64):
        for order in ("C", "F"):
            X = np.asarray(A, dtype=dtype, order=order)
            results.append(ulcmod.iterd(X, 4, random_state=3))
    for r in results:
        assert adjusted_rand_score(results[0].neuron_labels, r.neuron_labels) == 1.0
        assert adjusted_rand_score(results[0].sample_labels, r.sample_labels) == 1.0
        assert adjusted_rand_score(u, r.neuron_labels) == 1.0


@pytest.mark.parametrize("policy", ["update", "auto"])
def test_incremental_tables_equal_rebuilt_tables(rng, policy):
    for dtype, order in ((np.float32, "C"), (np.float64, "F"), (np.float16, "C")):
        A = np.asarray(rng.normal(size=(120, 70)), dtype=dtype, order=order)
        K = 4
        s0 = rng.permutation(np.arange(70) % K).astype(np.int32)
        u0 = rng.permutation(np.arange(120) % K).astype(np.int32)
        inc = _core.IterDState(A, K, u0, s0, 1e-9, 5, policy)
        ref = _core.IterDState(A, K, u0, s0, 1e-9, 5, "rebuild")
        for _ in range(6):
            assert inc.iterate(True) == ref.iterate(True)
            np.testing.assert_array_equal(inc.neuron_labels, ref.neuron_labels)
            np.testing.assert_array_equal(inc.sample_labels, ref.sample_labels)
            u, s = inc.neuron_labels, inc.sample_labels
            np.testing.assert_allclose(inc.neuron_table(), _core.build_table(A, s, K), rtol=1e-10, atol=1e-9)
            np.testing.assert_allclose(inc.sample_table(), _core.build_table(A.T, u, K), rtol=1e-10, atol=1e-9)
        assert inc.objective()["L"] == pytest.approx(brute_objective(A, u, s, K)[0], rel=1e-12)
        if policy == "update":
            assert inc.table_builds == 2 and inc.update_reads > 0  # one build per table, then updates


def test_max_iter_warns_and_zero_returns_init(rng):
    A = rng.normal(size=(300, 100))
    with pytest.warns(ulcmod.ConvergenceWarning, match="max_iter=1"):
        res = ulcmod.iterd(A, 5, init="random", max_iter=1, random_state=0)
    assert not res.converged and res.n_iter == 1
    u0 = rng.permutation(np.arange(300) % 5)
    s0 = rng.permutation(np.arange(100) % 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res0 = ulcmod.iterd(A, 5, init=(u0, s0), max_iter=0)
    np.testing.assert_array_equal(res0.neuron_labels, u0)
    assert res0.L == pytest.approx(brute_objective(A, u0, s0, 5)[0])


def test_given_sample_labels_derive_neurons(rng):
    A, u, s = planted(120, 60, 3, 3.0, rng)
    res = ulcmod.iterd(A, 3, init=s, max_iter=0)
    np.testing.assert_array_equal(res.sample_labels, s)
    # each neuron joined the sample group where its mean activation is highest
    means = np.stack([A[:, s == k].mean(axis=1) for k in range(3)], axis=1)
    np.testing.assert_array_equal(res.neuron_labels, means.argmax(axis=1))


def test_derived_neurons_fill_empty_modules(rng):
    # One neuron only, strongly preferring module 0: the derivation must still fill module 1.
    A = np.array([[5.0, 5.0, 0.0], [4.0, 4.0, 0.0]])
    res = ulcmod.iterd(A, 2, init=np.array([0, 0, 1]), max_iter=0)
    assert sorted(np.bincount(res.neuron_labels, minlength=2)) == [1, 1]


def test_estimator_matches_function_and_predicts(rng):
    A, u, s = planted(200, 90, 3, 1.5, rng)
    model = ulcmod.IterD(n_modules=3, random_state=4).fit(A)
    res = ulcmod.iterd(A, 3, random_state=4)
    np.testing.assert_array_equal(model.neuron_labels_, res.neuron_labels)
    assert model.objective_ == res.L and model.converged_
    assert model.get_params()["n_modules"] == 3
    assert "n_modules=5" in repr(model.set_params(n_modules=5))
    # New samples drawn like module k's samples are placed in module k's neuron group.
    new = rng.standard_normal((200, 3)) + 1.5 * (u[:, None] == np.arange(3)[None, :])
    pred = model.predict(new)
    for k in range(3):
        assert np.bincount(model.neuron_labels_[u == k]).argmax() == pred[k]
    assert model.transform(new).shape == (3, 3)
    with pytest.raises(ValueError, match="not fitted"):
        ulcmod.IterD(3).predict(new)


def test_memmap_input_is_read_in_place(tmp_path, rng):
    A, u, _ = planted(100, 50, 2, 2.0, rng, dtype=np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.float32, shape=A.shape)
    mm[:] = A
    res = ulcmod.iterd(np.load(tmp_path / "a.npy", mmap_mode="r"), 2, random_state=0)
    assert adjusted_rand_score(u, res.neuron_labels) == 1.0


def test_pca_on_a_neuron_subset_still_recovers_planted_modules(rng):
    A, u, s = planted(600, 240, 5, 1.0, rng, dtype=np.float32)
    res = ulcmod.iterd(A, 5, pca_neurons=100, random_state=0)
    assert adjusted_rand_score(u, res.neuron_labels) > 0.99
    assert adjusted_rand_score(s, res.sample_labels) > 0.99
    full = ulcmod.iterd(A, 5, pca_neurons=None, random_state=0)
    assert adjusted_rand_score(full.neuron_labels, res.neuron_labels) > 0.99


def test_result_save_and_load_round_trip_every_field(tmp_path, rng):
    A, _, _ = planted(120, 60, 3, 0.5, rng)
    res = ulcmod.iterd(A, 3, init="random", random_state=2)
    res.save(tmp_path / "res.npz")
    back = ulcmod.IterDResult.load(tmp_path / "res.npz")
    for field in dataclasses.fields(ulcmod.IterDResult):
        want, got = getattr(res, field.name), getattr(back, field.name)
        if field.name == "history":
            for h in dataclasses.fields(ulcmod.IterDHistory):
                np.testing.assert_array_equal(getattr(got, h.name), getattr(want, h.name))
                assert getattr(got, h.name).dtype == getattr(want, h.name).dtype
        elif isinstance(want, np.ndarray):
            np.testing.assert_array_equal(got, want)
            assert got.dtype == want.dtype
        else:
            assert got == want and type(got) is type(want), field.name
    assert back.n_modules == 3 and len(back.history.L) == back.n_iter + 1
    with np.load(tmp_path / "res.npz") as f:  # the labels under the names every method's labels use
        np.testing.assert_array_equal(f["neuron_labels"], res.neuron_labels)
