import dataclasses
import warnings

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import ulcmod
from ulcmod import _core
from ulcmod.core import _backend
from ulcmod.core.synthetic import planted

from conftest import best_single_move_gain, brute_objective


@pytest.mark.parametrize("init", ["balanced-kmeans", "kmeans", "random"])
@pytest.mark.parametrize("order", ["parallel", "random", "sequential"])
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
            assert inc.iterate("random") == ref.iterate("random")
            np.testing.assert_array_equal(inc.neuron_labels, ref.neuron_labels)
            np.testing.assert_array_equal(inc.sample_labels, ref.sample_labels)
            u, s = inc.neuron_labels, inc.sample_labels
            np.testing.assert_allclose(inc.neuron_table(), _core.build_table(A, s, K), rtol=1e-10, atol=1e-9)
            np.testing.assert_allclose(inc.sample_table(), _core.build_table(A.T, u, K), rtol=1e-10, atol=1e-9)
        assert inc.objective().L == pytest.approx(brute_objective(A, u, s, K)[0], rel=1e-12)
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


def side_gain(A, u, s, K, side):
    """Largest relative gain in L over every single legal move of one side (brute force)."""
    labels, L0 = (u if side == "neurons" else s), brute_objective(A, u, s, K)[0]
    counts, best = np.bincount(labels, minlength=K), -np.inf
    for i in range(labels.size):
        a = labels[i]
        for b in range(K):
            if b != a and counts[a] > 1:
                labels[i] = b
                best = max(best, (brute_objective(A, u, s, K)[0] - L0) / abs(L0))
                labels[i] = a
    return best


def test_parallel_sweeps_rescore_only_near_rows_and_end_at_a_local_optimum(rng):
    # Random starts with many modules take several rounds per sweep, so later rounds rescore
    # only the rows whose remembered margin is within the rule's drift of improving. A sweep
    # ends when a round finds nothing, so a partial round that missed a row would leave an
    # improving move of that side behind: after every sweep none may remain.
    partial = 0
    for trial in range(5):
        N, M, K = 45, 24, 6
        A = rng.normal(size=(N, M)) + 0.5 * rng.random((N, M))
        u0 = rng.permutation(np.arange(N) % K).astype(np.int32)
        s0 = rng.permutation(np.arange(M) % K).astype(np.int32)
        state = _core.IterDState(A, K, u0, s0, 1e-9, trial, "auto")
        Ls = [state.objective().L]
        for _ in range(100):
            moved = 0
            for side in ("neurons", "samples"):
                moved += state.sweep(side, "parallel")
                u, s = state.neuron_labels.copy(), state.sample_labels.copy()
                assert side_gain(A, u, s, K, side) <= 1e-9
                Ls.append(state.objective().L)
            if moved == 0:
                break
        assert np.all(np.diff(Ls) >= 0)
        assert state.objective().L == pytest.approx(brute_objective(A, u, s, K)[0], rel=1e-12)
        partial += state.partial_scans
    assert partial > 0


def padded_margins(table, labels, rule):
    """row_margin of move_rule.hpp in NumPy: the padded margin of every row of a table."""
    rows = np.arange(len(labels))
    terms = table - rule.c[labels] + 1e-12 * np.abs(table)  # c's diagonal is +inf: b == a drops out
    own = table[rows, labels]
    return terms.max(axis=1) - own + 1e-12 * np.abs(own) + rule.slack


def test_rule_drift_bounds_each_modules_margin_growth_tightly(rng):
    # The rules of successive rounds of parallel sweeps. For each module a, rule_drift(old, new)[a]
    # must bound how much the margin of any row labelled a grows (partial scans skip rows by it),
    # and be reached by a row whose best move is the entry of row a of c that dropped most:
    # rows of one label per (a, b), each with a large entry at b.
    rules = []

    class Capturing(NumpyBackend):
        def candidates(self, side, rule, full):
            rules.append(rule)
            return super().candidates(side, rule, full)

    N, M, K = 60, 30, 6
    A = rng.normal(size=(N, M)) + 0.5 * rng.random((N, M))
    u0 = rng.permutation(np.arange(N) % K).astype(np.int32)
    s0 = rng.permutation(np.arange(M) % K).astype(np.int32)
    state = _core.IterDState(Capturing(A, K), K, u0, s0, 1e-9, 0)
    while state.iterate("parallel") != (0, 0):
        pass
    a, b = (x.ravel() for x in np.meshgrid(np.arange(K), np.arange(K), indexing="ij"))
    a, b = a[a != b], b[a != b]
    labels = a.astype(np.int32)
    table = 1e3 * np.eye(K)[b] + rng.random((len(b), K))
    table[np.arange(len(b)), a] = 0.0
    tight = 0
    for old, new in zip(rules, rules[1:]):
        drift = _core.rule_drift(old, new)
        growth = padded_margins(table, labels, new) - padded_margins(table, labels, old)
        reach = np.array([growth[labels == a].max() for a in range(K)])
        scale = 1e-9 * (1.0 + np.abs(old.c[np.isfinite(old.c)]).max())
        np.testing.assert_allclose(reach, drift, rtol=0, atol=scale)
        tight += np.ptp(drift) > 1e3 * scale  # a bound per module, not one for all rows
    assert len(rules) > 4 and tight > 0


class NumpyBackend(_backend.Backend):
    """A backend in plain NumPy: tables by one-hot products on the float64 array, rebuilt
    whenever labels change, scanned with _core.scan_table. Independent of the CPU kernels."""

    def __init__(self, A, K):
        self.A, self._K = np.asarray(A, dtype=np.float64), K
        self.labels = {side: None for side in _backend.SIDES}
        self.tables = {}
        self.builds = 0

    def name(self):
        return "numpy"

    def K(self):
        return self._K

    def rows(self, side):
        return self.A.shape[0] if side == "neurons" else self.A.shape[1]

    def set_labels(self, side, labels):
        self.labels[side] = np.array(labels, dtype=np.int32)
        self.tables.pop(_backend.other_side(side), None)

    def move(self, side, index, from_, to):
        assert (self.labels[side][index] == from_).all()
        self.labels[side][index] = to
        self.tables.pop(_backend.other_side(side), None)

    def refresh(self, side):
        if side not in self.tables:
            X = self.A if side == "neurons" else self.A.T
            onehot = np.eye(self._K)[self.labels[_backend.other_side(side)]]
            self.tables[side] = np.ascontiguousarray(X @ onehot)
            self.builds += 1

    def diagonal(self, side):
        T = self.tables[side]
        return float(T[np.arange(T.shape[0]), self.labels[side]].sum())

    def candidates(self, side, rule, full):
        return _core.scan_table(self.tables[side], self.labels[side], rule)

    def host_table(self, side):
        return self.tables[side]

    def stats(self):
        return {"builds": self.builds}


@pytest.mark.parametrize("order", ["parallel", "random"])
def test_a_python_backend_gives_the_cpu_backends_trajectory(rng, order):
    A, _, _ = planted(150, 60, 4, 0.5, rng)
    u0 = rng.permutation(np.arange(150) % 4).astype(np.int32)
    s0 = rng.permutation(np.arange(60) % 4).astype(np.int32)
    cpu = _core.IterDState(A, 4, u0, s0, 1e-9, 3)
    py = _core.IterDState(NumpyBackend(A, 4), 4, u0, s0, 1e-9, 3)
    assert py.backend == "numpy" and cpu.backend == "cpu"
    for _ in range(50):
        moved = cpu.iterate(order)
        assert py.iterate(order) == moved
        np.testing.assert_array_equal(py.neuron_labels, cpu.neuron_labels)
        np.testing.assert_array_equal(py.sample_labels, cpu.sample_labels)
        assert py.objective().L == pytest.approx(cpu.objective().L, rel=1e-12)
        if moved == (0, 0):
            break
    assert moved == (0, 0) and py.table_builds > 2


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


def test_move_rules_cross_processes_intact(rng):
    # A backend on another process (a cluster worker) receives the round's rule pickled.
    import pickle

    A, _, _ = planted(150, 60, 4, 0.5, rng)
    seen = []

    class Capturing(NumpyBackend):
        def candidates(self, side, rule, full):
            seen.append((self.tables[side], self.labels[side].copy(), rule))
            return super().candidates(side, rule, full)

    u0 = rng.permutation(np.arange(150) % 4).astype(np.int32)
    s0 = rng.permutation(np.arange(60) % 4).astype(np.int32)
    _core.IterDState(Capturing(A, 4), 4, u0, s0, 1e-9, 3).iterate("parallel")
    for table, labels, rule in seen:
        back = pickle.loads(pickle.dumps(rule))
        np.testing.assert_array_equal(back.c, rule.c)
        np.testing.assert_array_equal(back.leave, rule.leave)
        assert back.slack == rule.slack and not _core.rule_drift(rule, back).any()
        for got, want in zip(_core.scan_table(table, labels, back), _core.scan_table(table, labels, rule)):
            np.testing.assert_array_equal(got, want)
    assert any(len(_core.scan_table(t, lab, r)[0]) for t, lab, r in seen)
    with pytest.raises(ValueError, match=r"c must be \(K, K\)"):
        _core.MoveRule(np.zeros((3, 2)), np.ones(3, np.uint8), 0.0)
