"""Sharded activations."""

import json

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import ulcmod  # noqa: E402
import ulcmod.distributed as ud  # noqa: E402


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
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
