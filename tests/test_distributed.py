"""IterD, sharded activations and extraction on a Dask LocalCluster (2 workers, 1 thread each)."""

import json
import os
import signal

import ml_dtypes
import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

import ulcmod  # noqa: E402
import ulcmod.distributed as ud  # noqa: E402
from ulcmod import _core  # noqa: E402
from ulcmod.core.synthetic import planted  # noqa: E402
from ulcmod.distributed.backend import ClusterActivations, DaskBackend  # noqa: E402

from conftest import best_single_move_gain, brute_objective  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client


@pytest.fixture
def on_cluster(client):
    """The module's client as the current one, with both workers up (a test may have killed one)."""
    client.wait_for_workers(2, timeout=60)
    with client.as_current():
        yield client


def sharded(A, tmp_path, rows_per_shard):
    return ud.load_sharded(ud.write_sharded(A, tmp_path / "shards", rows_per_shard).path)


def state_on_cluster(A, K, tmp_path, rng, rows_per_shard):
    """(backend, core state over it, initial labels): IterD on A's shards from random labels."""
    u0 = rng.permutation(np.arange(A.shape[0]) % K).astype(np.int32)
    s0 = rng.permutation(np.arange(A.shape[1]) % K).astype(np.int32)
    backend = ClusterActivations(sharded(A, tmp_path, rows_per_shard)).backend(K)
    return backend, _core.IterDState(backend, K, u0, s0, 1e-9, 0), (u0, s0)


def worker_pid(client, part):
    """The process id of the worker holding a part's Actor."""
    (address,) = client.who_has([part.future])[part.future.key]
    return client.run(os.getpid, workers=[address])[address]


def assert_certified(A, res, K):
    u, s = res.neuron_labels.copy(), res.sample_labels.copy()
    assert res.converged
    assert res.L == pytest.approx(brute_objective(A, u, s, K)[0], rel=1e-12)
    assert res.L == pytest.approx(ulcmod.objective(A, u, s).L, rel=1e-12)
    assert best_single_move_gain(A, u, s, K) <= 1e-9


# -- sharded activations (no cluster needed) ------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float16, np.float32, ml_dtypes.bfloat16])
def test_write_then_load_sharded_is_the_same_matrix(tmp_path, rng, dtype):
    A = rng.normal(size=(23, 9)).astype(dtype)
    sh = ud.write_sharded(A, tmp_path, rows_per_shard=5)
    dA = ud.load_sharded(tmp_path)
    assert dA.chunks == ((5, 5, 5, 5, 3), (9,)) and dA.dtype == dtype and sh.shape == (23, 9)
    np.testing.assert_array_equal(dA.compute(scheduler="sync"), A)
    # A dask array is written by the cluster's workers; the manifest itself may be named too.
    again = ud.write_sharded(dA, tmp_path / "again", rows_per_shard=10, dtype="float64")
    np.testing.assert_array_equal(ud.load_sharded(again.path / "manifest.json").compute(scheduler="sync"), A)


def test_sample_major_shards_with_row_chunks(tmp_path, rng):
    """The layout extraction writes: one samples x neurons file per block of samples."""
    A = rng.normal(size=(10, 7)).astype(np.float32)
    np.save(tmp_path / "a.npy", np.ascontiguousarray(A[:, :3].T))
    np.save(tmp_path / "b.npy", np.ascontiguousarray(A[:, 3:].T))
    shards = [{"file": "a.npy", "layout": "samples_x_neurons", "rows": [0, 10], "cols": [0, 3]},
              {"file": "b.npy", "layout": "samples_x_neurons", "rows": [0, 10], "cols": [3, 7]}]
    dA = ud.write_manifest(tmp_path, (10, 7), "float32", shards, row_chunks=[4, 6]).A
    assert dA.chunks == ((4, 6), (3, 4))
    np.testing.assert_array_equal(dA.compute(scheduler="sync"), A)


def test_bad_manifests_are_refused(tmp_path, rng):
    ud.write_sharded(rng.normal(size=(6, 4)).astype(np.float32), tmp_path, rows_per_shard=3)
    meta = json.loads((tmp_path / "manifest.json").read_text())
    edits = {
        "cover A exactly once": lambda m: m["shards"][1].update(rows=[2, 6]),
        "outside": lambda m: m["shards"][1].update(rows=[3, 7]),
        "dtype must be one of": lambda m: m.update(dtype="int8"),
        "layout": lambda m: m["shards"][0].update(layout="rows"),
        "needs a file and rows/cols": lambda m: m["shards"][0].update(cols=[0]),
        "row_chunks add up": lambda m: m.update(row_chunks=[4]),
        "not an ulcmod": lambda m: m.update(format="zarr"),
    }
    for message, edit in edits.items():
        bad = json.loads(json.dumps(meta))
        edit(bad)
        (tmp_path / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            ud.open_sharded(tmp_path)
    with pytest.raises(ValueError, match="holds no manifest.json"):
        ud.open_sharded(tmp_path / "nowhere")
    meta["dtype"] = "float64"  # the files hold float32
    (tmp_path / "manifest.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="the manifest says float64"):
        ud.load_sharded(tmp_path).compute(scheduler="sync")


def test_zscore_matches_the_in_memory_statistics(rng):
    A = (rng.normal(size=(12, 30)) * rng.random((12, 1)) * 5).astype(np.float32)
    A[3] = 2.0  # constant neuron: std counts as 1
    stats, Z = ud.zscore(da.from_array(A, chunks=(5, 30)))
    ref = ulcmod.fit_zscore(A)
    np.testing.assert_allclose(stats.mean, ref.mean, rtol=1e-12)
    np.testing.assert_allclose(stats.std, ref.std, rtol=1e-10)
    np.testing.assert_allclose(Z.compute(scheduler="sync"), ref.apply(A), rtol=1e-6, atol=1e-6)
    _, Z_test = ud.zscore(da.from_array(A[:, :4]), stats)
    np.testing.assert_allclose(Z_test.compute(scheduler="sync"), ref.apply(A[:, :4]), rtol=1e-6, atol=1e-6)


# -- IterD on the cluster ---------------------------------------------------------------------

def test_iterd_on_a_sharded_matrix_matches_the_single_machine_run(on_cluster, tmp_path, rng):
    A, _, _ = planted(900, 150, 4, 0.25, rng, dtype=np.float32)
    dA = sharded(A, tmp_path, rows_per_shard=100)
    s0 = rng.permutation(np.arange(150) % 4).astype(np.int32)
    ref = ulcmod.iterd(A, 4, init=s0)
    res = ulcmod.iterd(dA, 4, init=s0)
    assert res.converged and res.n_iter >= 2
    assert res.L == pytest.approx(ulcmod.objective(A, res.neuron_labels, res.sample_labels).L, rel=1e-12)
    assert res.L == pytest.approx(ref.L, rel=0.01)
    # The default initialisation gathers the PCA rows to the client: same seed, same run.
    ref = ulcmod.iterd(A, 4, random_state=3)
    res = ulcmod.iterd(dA, 4, random_state=3, pca_neurons=500)
    assert res.L == pytest.approx(ulcmod.iterd(A, 4, random_state=3, pca_neurons=500).L, rel=0.01)
    assert ref.converged and res.converged


def test_iterd_on_the_cluster_ends_at_a_certified_local_optimum(on_cluster, tmp_path, rng):
    A, _, _ = planted(120, 40, 3, 0.3, rng)
    dA = sharded(A, tmp_path, rows_per_shard=25)
    for init in ("random", "balanced-kmeans"):
        res = ulcmod.iterd(ud.open_sharded(tmp_path / "shards"), 3, init=init, random_state=1)
        assert_certified(A, res, 3)
    res = ulcmod.iterd(dA, 3, init="random", random_state=2, order="random")  # runs, gathering R
    assert_certified(A, res, 3)


def test_bfloat16_shards_give_the_in_memory_bfloat16_run(on_cluster, tmp_path, rng):
    A = planted(300, 60, 3, 0.3, rng)[0].astype(ml_dtypes.bfloat16)
    dA = sharded(A, tmp_path, rows_per_shard=70)
    assert dA.dtype == ml_dtypes.bfloat16
    s0 = rng.permutation(np.arange(60) % 3).astype(np.int32)
    ref, res = ulcmod.iterd(A, 3, init=s0), ulcmod.iterd(dA, 3, init=s0)
    np.testing.assert_array_equal(res.neuron_labels, ref.neuron_labels)
    assert res.converged and res.L == pytest.approx(ref.L, rel=1e-9)


def test_the_backend_keeps_the_cores_trajectory_and_small_messages(on_cluster, tmp_path, rng):
    A, _, _ = planted(400, 60, 4, 0.15, rng)
    backend, dask_state, (u0, s0) = state_on_cluster(A, 4, tmp_path, rng, rows_per_shard=50)
    cpu = _core.IterDState(A, 4, u0, s0, 1e-9, 0)
    assert dask_state.backend == "dask" and len(backend.parts) == 2
    for _ in range(30):
        sent0, got0 = backend.bytes_sent, backend.bytes_received
        moved = cpu.iterate("parallel")
        assert dask_state.iterate("parallel") == moved
        np.testing.assert_array_equal(dask_state.neuron_labels, cpu.neuron_labels)
        np.testing.assert_array_equal(dask_state.sample_labels, cpu.sample_labels)
        assert dask_state.objective().L == pytest.approx(cpu.objective().L, rel=1e-12)
        if moved == (0, 0):
            break
    assert moved == (0, 0)
    # The last iteration moves nothing: each part gets the rule of one round (K x K + K + 1
    # numbers) and returns its share of D (one number); no message depends on N.
    assert backend.bytes_sent - sent0 == 2 * (8 * 4 * 4 + 4 + 8)
    assert backend.bytes_received - got0 == 2 * 8
    np.testing.assert_allclose(dask_state.sample_table(), cpu.sample_table(), rtol=1e-10)
    np.testing.assert_allclose(dask_state.neuron_table(), cpu.neuron_table(), rtol=1e-10)


def test_a_worker_killed_between_calls_is_recovered(on_cluster, tmp_path, rng, monkeypatch):
    A, _, _ = planted(160, 48, 3, 0.15, rng)
    dA = sharded(A, tmp_path, rows_per_shard=40)
    refresh, calls, killed = DaskBackend.refresh, {"neurons": 0}, []

    def refresh_then_kill(self, side):
        if side == "neurons":
            calls["neurons"] += 1
            if calls["neurons"] == 2:  # the second iteration: kill part 0's worker, then go on
                pid = worker_pid(on_cluster, self.parts[0])
                os.kill(pid, signal.SIGKILL)
                killed.append(self)
        refresh(self, side)

    monkeypatch.setattr(DaskBackend, "refresh", refresh_then_kill)
    res = ulcmod.iterd(dA, 3, init="random", random_state=0)
    assert killed and killed[0].recoveries >= 1
    assert res.n_iter >= 3
    assert_certified(A, res, 3)


def test_a_worker_dying_inside_a_call_is_recovered(on_cluster, tmp_path, rng):
    A, _, _ = planted(160, 48, 3, 0.15, rng)
    backend, state, _ = state_on_cluster(A, 3, tmp_path, rng, rows_per_shard=40)
    assert state.iterate("parallel") != (0, 0)

    def die_in_next_scan():
        import os
        import signal

        from ulcmod.distributed import _part

        def die(self, *args):
            os.kill(os.getpid(), signal.SIGKILL)

        _part.Part.candidates = die

    (address,) = on_cluster.who_has([backend.parts[1].future])[backend.parts[1].future.key]
    on_cluster.run(die_in_next_scan, workers=[address])
    while state.iterate("parallel") != (0, 0):
        pass
    assert backend.recoveries >= 1
    u, s = state.neuron_labels, state.sample_labels
    assert state.objective().L == pytest.approx(brute_objective(A, u, s, 3)[0], rel=1e-12)
    assert best_single_move_gain(A, u.copy(), s.copy(), 3) <= 1e-9


def test_no_client_gives_a_clear_error(rng):
    dA = da.from_array(rng.normal(size=(20, 10)))
    with pytest.raises(ValueError, match=r"no Dask client is running.*Client\(LocalCluster\(\)\)"):
        ulcmod.iterd(dA, 2)
    with pytest.raises(TypeError, match="integer/boolean dtype"):
        ClusterActivations(da.from_array(np.ones((4, 4), dtype=np.int32)), client=object())


# -- data-parallel extraction ---------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random Llama and its tokenizer, saved where the workers can load them."""
    pytest.importorskip("torch")
    from test_extract import make_model, make_tokenizer

    path = tmp_path_factory.mktemp("tiny") / "model"
    make_model("llama").save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return str(path)


def test_sharded_extraction_equals_single_process_extraction(on_cluster, tiny_model, tmp_path):
    from test_extract import TEXTS

    model, tok = ulcmod.load_model(tiny_model)
    kw = dict(max_length=32, batch_size=2, dtype="float32")
    single = ulcmod.extract_activations(model, tok, TEXTS, tmp_path / "single", progress=False, **kw)

    sharded_acts = ud.extract_sharded(tiny_model, TEXTS, tmp_path / "sharded", n_parts=3, **kw)
    assert sharded_acts.meta["row_chunks"] == single.meta["widths"]
    np.testing.assert_array_equal(sharded_acts.neuron_layer, single.neuron_layer)
    dA = sharded_acts.A
    assert dA.chunks == (tuple(single.meta["widths"]), (2, 3, 2))
    np.testing.assert_allclose(dA.compute(), single.A, rtol=1e-5, atol=1e-6)

    # Resumable per shard: forget part of one shard and rerun; only that part is redone.
    done_path = tmp_path / "sharded" / "part-0001" / "done.npy"
    np.save(done_path, np.array([True, False, False]))
    again = ud.extract_sharded(tiny_model, TEXTS, tmp_path / "sharded", **kw)
    assert np.load(done_path).all() and again.meta == sharded_acts.meta
    np.testing.assert_allclose(again.A.compute(), single.A, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="other texts"):
        ud.extract_sharded(tiny_model, TEXTS[:3], tmp_path / "sharded", **kw)
    assert ulcmod.iterd(dA, 2, random_state=0).converged


def test_the_command_line_runs_on_a_given_scheduler(client, tiny_model, tmp_path):
    from ulcmod.distributed.__main__ import main

    from test_extract import TEXTS

    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": "Coding"}) + "\n" for t in TEXTS))
    address = ["--scheduler", client.scheduler.address]
    acts, out = tmp_path / "acts", tmp_path / "labels.npz"
    assert main([*address, "extract", "--model", tiny_model, "--dataset", str(data), "--out", str(acts),
                 "--max-length", "32"]) == 0
    assert main([*address, "iterd", str(acts), "--k", "3", "--out", str(out)]) == 0
    got = np.load(out)
    A = ud.load_sharded(acts).compute(scheduler="sync").astype(np.float64)
    Z = ulcmod.fit_zscore(A).apply(A)
    assert got["converged"]
    assert float(got["L"]) == pytest.approx(ulcmod.objective(Z, got["neuron_labels"], got["sample_labels"]).L, rel=1e-5)
    assert main([*address, "iterd", str(tmp_path / "missing"), "--k", "3", "--out", str(out)]) == 2
