"""The CUDA backend against the CPU core and independent computations (needs a GPU).

Skipped, with separate reasons, when ulcmod was built without CUDA or no GPU is present. Device
arrays come from torch or CuPy (whichever is installed) through DLPack.
"""

import numpy as np
import pytest

import ulcmod
from ulcmod import _core
from ulcmod.core import _device
from ulcmod.core._pca import sample_pca
from ulcmod.core.synthetic import planted

from conftest import best_single_move_gain, brute_objective

pytestmark = pytest.mark.gpu

DTYPES = ["float16", "bfloat16", "float32", "float64"]


@pytest.fixture(scope="module")
def cuda():
    mod = _device.cuda_module()
    if mod is None:
        pytest.skip("not built with CUDA (ULCMOD_ENABLE_CUDA=OFF)")
    if mod.device_count() == 0:
        pytest.skip(f"no GPU present ({mod.runtime_status()})")
    return mod


@pytest.fixture(scope="module")
def torch(cuda):
    return pytest.importorskip("torch")


def on_gpu(torch, A, dtype, order="C"):
    """A (host float64) as a CUDA tensor of `dtype`, C- or F-ordered; and its exact host values."""
    t = torch.as_tensor(np.ascontiguousarray(A), device="cuda").to(getattr(torch, dtype))
    if order == "F":
        t = t.T.contiguous().T
    return t, t.double().cpu().numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("K", [3, 16, 40])
def test_tables_equal_the_cpu_tables(cuda, torch, dtype, order, K):
    rng = np.random.default_rng(K)
    N, M = 1037, 523  # not multiples of the vector widths or block sizes
    t, host = on_gpu(torch, rng.normal(size=(N, M)) * 3 + 1, dtype, order)
    D = _device.to_device(t)
    s = rng.integers(0, K, M).astype(np.int32)
    u = rng.integers(0, K, N).astype(np.int32)
    R, C = D.table(s, K, "neurons"), D.table(u, K, "samples")
    np.testing.assert_allclose(R, _core.build_table(host, s, K), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(C, _core.build_table(host.T, u, K), rtol=1e-12, atol=1e-9)


def test_tables_with_many_labels(cuda, torch):
    rng = np.random.default_rng(10)
    K = 1030  # past the device sort's label limit and many Rowwise passes
    t, host = on_gpu(torch, rng.normal(size=(2100, 1500)), "float16")
    D = _device.to_device(t)
    s = rng.integers(0, K, 1500).astype(np.int32)
    u = rng.integers(0, K, 2100).astype(np.int32)
    np.testing.assert_allclose(D.table(s, K, "neurons"), _core.build_table(host, s, K), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(D.table(u, K, "samples"), _core.build_table(host.T, u, K), rtol=1e-12, atol=1e-9)


def test_tables_of_misaligned_slices(cuda, torch):
    rng = np.random.default_rng(1)
    t, _ = on_gpu(torch, rng.normal(size=(300, 201)), "bfloat16")
    part = t[:, 1:]  # rows start off 16-byte boundaries: the scalar paths
    host = part.double().cpu().numpy()
    D = _device.to_device(part)
    s = rng.integers(0, 5, 200).astype(np.int32)
    u = rng.integers(0, 5, 300).astype(np.int32)
    np.testing.assert_allclose(D.table(s, 5, "neurons"), _core.build_table(host, s, 5), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(D.table(u, 5, "samples"), _core.build_table(host.T, u, 5), rtol=1e-12, atol=1e-9)


def test_tables_are_deterministic(cuda, torch):
    rng = np.random.default_rng(2)
    t, _ = on_gpu(torch, rng.normal(size=(5000, 700)), "float32")
    D = _device.to_device(t)
    u = rng.integers(0, 7, 5000).astype(np.int32)
    np.testing.assert_array_equal(D.table(u, 7, "samples"), D.table(u, 7, "samples"))


def follow(cpu, gpu, iterations):
    """Iterate two IterD states side by side: the same labels, tables (to accumulation order),
    L and moves at every step."""
    for _ in range(iterations):
        np.testing.assert_array_equal(cpu.neuron_labels, gpu.neuron_labels)
        np.testing.assert_array_equal(cpu.sample_labels, gpu.sample_labels)
        np.testing.assert_allclose(gpu.neuron_table(), cpu.neuron_table(), rtol=1e-11, atol=1e-9)
        np.testing.assert_allclose(gpu.sample_table(), cpu.sample_table(), rtol=1e-11, atol=1e-9)
        assert gpu.objective().L == pytest.approx(cpu.objective().L, rel=1e-12)
        assert gpu.iterate("parallel") == cpu.iterate("parallel")


@pytest.mark.parametrize("policy", ["update", "rebuild", "auto"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_backend_follows_the_cpu_state(cuda, torch, policy, order):
    rng = np.random.default_rng(3)
    A, _, _ = planted(700, 300, 5, 0.4, rng)
    t, host = on_gpu(torch, A, "float32", order)
    D = _device.to_device(t)
    s0 = rng.permutation(np.arange(300) % 5).astype(np.int32)
    cpu = _core.IterDState(host, 5, None, s0, 1e-9, 7, table_policy=policy)
    gpu = _core.IterDState(D.backend(5, policy), 5, None, s0, 1e-9, 7)
    assert gpu.backend == "cuda"
    follow(cpu, gpu, 6)
    if policy == "update":
        assert gpu.update_reads > 0


@pytest.mark.parametrize("order", ["parallel", "random"])
@pytest.mark.parametrize("init", ["balanced-kmeans", "random"])
def test_converged_gpu_results_are_local_optima(cuda, torch, order, init):
    rng = np.random.default_rng(4)
    for trial in range(3):
        A = rng.normal(size=(14, 11)) + rng.random() * rng.random((14, 11))
        t, host = on_gpu(torch, A, "float64")
        res = ulcmod.iterd(t, 3, init=init, order=order, random_state=trial)
        assert res.converged
        L, xi, B = brute_objective(host, res.neuron_labels, res.sample_labels, 3)
        assert res.L == pytest.approx(L, rel=1e-12)
        assert best_single_move_gain(host, res.neuron_labels.copy(), res.sample_labels.copy(), 3) <= 1e-9


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_gpu_iterd_matches_the_objective_and_the_cpu(cuda, torch, dtype):
    rng = np.random.default_rng(5)
    A, u, s = planted(3000, 400, 6, 0.8, rng)
    t, host = on_gpu(torch, A, dtype)
    res = ulcmod.iterd(t, 6, random_state=0)
    assert res.converged
    assert res.L == pytest.approx(ulcmod.objective(host, res.neuron_labels, res.sample_labels).L, rel=1e-10)
    ref = ulcmod.iterd(host.astype(np.float32), 6, random_state=0)
    assert res.L == pytest.approx(ref.L, rel=1e-6)
    forced = ulcmod.iterd(host, 6, random_state=0, device="cuda")  # a host array copied to the GPU
    assert forced.L == pytest.approx(ulcmod.objective(host, forced.neuron_labels, forced.sample_labels).L, rel=1e-10)
    back = ulcmod.iterd(t, 6, random_state=0, device="cpu")  # a GPU array copied to the host
    assert back.L == pytest.approx(ulcmod.objective(host, back.neuron_labels, back.sample_labels).L, rel=1e-10)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_cupy_arrays_are_read_in_place(cuda, dtype):
    cupy = pytest.importorskip("cupy")
    rng = np.random.default_rng(6)
    A, _, _ = planted(800, 200, 4, 1.0, rng)
    c = cupy.asarray(A.astype(dtype))
    host = cupy.asnumpy(c).astype(np.float64)
    res = ulcmod.iterd(c, 4, random_state=0)
    assert res.converged
    assert res.L == pytest.approx(ulcmod.objective(host, res.neuron_labels, res.sample_labels).L, rel=1e-10)
    s = rng.integers(0, 4, 200).astype(np.int32)
    np.testing.assert_allclose(_device.to_device(c).table(s, 4), _core.build_table(host, s, 4), rtol=1e-12)


def test_gpu_pca_equals_the_cpu_pca(cuda, torch):
    rng = np.random.default_rng(7)
    A, _, _ = planted(4000, 600, 5, 0.5, rng)
    t, host = on_gpu(torch, A, "bfloat16")
    rows = np.sort(rng.choice(4000, 1500, replace=False))
    D, H = _device.prepare_activations(t, "cuda"), host.astype(np.float32)
    for sel in (None, rows):
        gpu = sample_pca(D, 16, np.random.default_rng(0), rows=sel)
        cpu = sample_pca(H, 16, np.random.default_rng(0), rows=sel)
        signs = np.sign((gpu * cpu).sum(axis=0))
        np.testing.assert_allclose(gpu * signs, cpu, rtol=1e-3, atol=1e-3 * np.abs(cpu).max())


def test_non_finite_values_are_found_on_the_gpu(cuda, torch):
    A = np.random.default_rng(8).normal(size=(20, 10))
    A[3, 4] = np.nan
    t, _ = on_gpu(torch, A, "float32")
    for init in ("balanced-kmeans", "random"):
        with pytest.raises(ValueError, match=r"NaN or infinity \(first in row 3\)"):
            ulcmod.iterd(t, 3, init=init)
    with pytest.raises(ValueError, match=r"NaN or infinity \(first in neuron 3\)"):
        ulcmod.fit_zscore(t)


def test_arrays_without_a_unit_stride_are_refused(cuda, torch):
    t = torch.randn(40, 30, device="cuda")[::2, ::2]
    with pytest.raises(ValueError, match="unit stride"):
        ulcmod.iterd(t, 3)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_zscore_on_the_gpu_equals_the_cpu(cuda, torch, order, dtype):
    rng = np.random.default_rng(9)
    t, host = on_gpu(torch, rng.normal(size=(500, 300)) * rng.random((500, 1)) * 4 + 3, dtype, order)
    stats = ulcmod.fit_zscore(t)
    ref = ulcmod.fit_zscore(host)
    np.testing.assert_allclose(stats.mean, ref.mean, rtol=1e-12)
    np.testing.assert_allclose(stats.std, ref.std, rtol=1e-9)
    z = stats.apply(t)
    assert z.dtype == torch.float32 and z.device.type == "cuda"
    np.testing.assert_array_equal(z.cpu().numpy(), stats.apply(host))
    zb = stats.apply(t, dtype="bfloat16")
    assert zb.dtype == torch.bfloat16
    np.testing.assert_allclose(zb.float().cpu().numpy(), ref.apply(host), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("algorithm", ["parallel", "deflation"])
@pytest.mark.parametrize("fun, fun_args", [("logcosh", None), ("logcosh", {"alpha": 1.5}), ("exp", None),
                                           ("cube", None)])
def test_gpu_fastica_agrees_with_sklearn_given_the_same_start(cuda, algorithm, fun, fun_args):
    from sklearn.decomposition import FastICA as SkFastICA
    from test_ica import mixture

    S, _, X = mixture(n=3000, p=7, seed=1)
    w0 = np.random.default_rng(3).normal(size=(4, 4))
    kw = dict(algorithm=algorithm, fun=fun, fun_args=fun_args, w_init=w0, max_iter=500, tol=1e-6)
    ours = ulcmod.FastICA(4, device="cuda", **kw)
    theirs = SkFastICA(4, whiten="unit-variance", whiten_solver="eigh", **kw)
    np.testing.assert_allclose(ours.fit_transform(X), theirs.fit_transform(X), atol=1e-8)
    np.testing.assert_allclose(ours.whitening_, theirs.whitening_, atol=1e-10)
    np.testing.assert_allclose(ours.components_, theirs.components_, atol=1e-8)
    np.testing.assert_allclose(ours.mean_, theirs.mean_, atol=1e-12)
    assert ours.n_iter_ == theirs.n_iter_


@pytest.mark.filterwarnings("ignore:There are some small singular values")
def test_gpu_fastica_gram_path_and_device_input(cuda, torch):
    from sklearn.decomposition import FastICA as SkFastICA
    from test_ica import mixture

    S, _, _ = mixture(n=250)
    rng = np.random.default_rng(0)
    X = S @ rng.normal(size=(4, 300)) + 0.01 * rng.normal(size=(250, 300))
    w0 = rng.normal(size=(4, 4))
    ours = ulcmod.FastICA(4, w_init=w0, max_iter=1000).fit(torch.as_tensor(X, device="cuda"))  # auto: on the GPU
    theirs = SkFastICA(4, w_init=w0, whiten_solver="eigh", max_iter=1000).fit(X)
    np.testing.assert_allclose(ours.whitening_, theirs.whitening_, atol=1e-9)
    np.testing.assert_allclose(ours.components_, theirs.components_, atol=1e-7)


def test_gpu_fastica_float32_and_whitened_input(cuda):
    from test_ica import matched_abs_corr, mixture

    S, _, X = mixture()
    ica = ulcmod.FastICA(4, random_state=0, max_iter=1000, tol=1e-5, device="cuda")
    S_hat = ica.fit_transform(X.astype(np.float32))
    assert matched_abs_corr(S, S_hat).min() >= 0.99
    K, _, _ = ulcmod.fastica(X, 4, random_state=0)
    X_white = (X - X.mean(0)) @ K.T * np.sqrt(len(X))
    w0 = np.random.default_rng(5).normal(size=(4, 4))
    gpu = ulcmod.FastICA(whiten=False, w_init=w0, tol=1e-6, device="cuda").fit(X_white)
    cpu = ulcmod.FastICA(whiten=False, w_init=w0, tol=1e-6).fit(X_white)
    np.testing.assert_allclose(gpu.components_, cpu.components_, atol=1e-10)
    bad = X.copy()
    bad[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinity \(column 2\)"):
        ulcmod.FastICA(4, device="cuda").fit(bad)


def test_objective_and_module_features_on_the_gpu(cuda, torch):
    rng = np.random.default_rng(11)
    A, u, s = planted(900, 250, 4, 0.5, rng)
    t, host = on_gpu(torch, A, "bfloat16")
    assert ulcmod.objective(t, u, s) == pytest.approx(ulcmod.objective(host, u, s), rel=1e-12)
    np.testing.assert_allclose(ulcmod.module_features(t, u), ulcmod.module_features(host, u), rtol=1e-12)
    res = ulcmod.iterd(t, 4, random_state=0)
    np.testing.assert_array_equal(res.assign_samples(t), res.assign_samples(host))


def test_host_arrays_go_up_in_their_own_element_order(cuda, tmp_path):
    rng = np.random.default_rng(12)
    A = rng.normal(size=(301, 157)).astype(np.float32)
    np.save(tmp_path / "a.npy", np.ascontiguousarray(A.T))
    transposed_map = np.load(tmp_path / "a.npy", mmap_mode="r").T  # neurons x samples over a samples x neurons file
    s = rng.integers(0, 5, 157).astype(np.int32)
    for host, strides in ((A, (157, 1)), (np.asfortranarray(A), (1, 301)), (transposed_map, (1, 301))):
        D = _device.to_device(host)
        assert D.strides == strides
        np.testing.assert_array_equal(D.to_host(), A)
        np.testing.assert_allclose(D.table(s, 5, "neurons"), _core.build_table(A, s, 5), rtol=1e-12)
        np.testing.assert_array_equal(D.block(10, 200, 20, 100).to_host(), A[10:200, 20:100])
    with pytest.raises(ValueError, match="block out of range"):
        D.block(0, 302, 0, 1)


def test_zscore_files_on_the_gpu_equal_the_cpu_files(cuda, tmp_path):
    from ulcmod.core.objective import module_features_many
    from ulcmod.core.zscore import zscore_files

    rng = np.random.default_rng(13)
    # Sample-major float16, as extraction stores them; neurons x samples views
    train = (rng.normal(size=(400, 300)) * rng.random(300) * 5 + 2).astype(np.float16).T
    test = (rng.normal(size=(90, 300)) * 3).astype(np.float16).T
    ref, zc_train, zc_test = zscore_files(train, test, out_dir=tmp_path / "cpu")
    stats, zg_train, zg_test = zscore_files(train, test, out_dir=tmp_path / "gpu", device="cuda")
    assert _device.on_device(zg_train) and _device.on_device(zg_test)
    np.testing.assert_allclose(stats.mean, ref.mean, rtol=1e-12)
    np.testing.assert_allclose(stats.std, ref.std, rtol=1e-9)
    for split, z_cpu, z_gpu in (("train", zc_train, zg_train), ("test", zc_test, zg_test)):
        written = np.load(tmp_path / "gpu" / f"{split}.npy")
        assert written.shape == z_cpu.T.shape
        np.testing.assert_allclose(written, z_cpu.T, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(z_gpu.to_host(), written.T)  # what stays on the GPU is what was written
    labelings = [(rng.integers(0, 4, 300), 4), (rng.integers(0, 7, 300), 7)]
    for x_gpu, x_cpu in zip(module_features_many(zg_test, labelings), module_features_many(zc_test, labelings)):
        np.testing.assert_allclose(x_gpu, x_cpu, rtol=1e-5, atol=1e-6)


def test_device_arrays_are_written_transposed_block_by_block(cuda, tmp_path):
    rng = np.random.default_rng(14)
    A = rng.normal(size=(53, 71)).astype(np.float32)
    _device.write_npy_transposed(_device.to_device(np.asfortranarray(A)), tmp_path / "t.npy", block_bytes=1000)
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), A.T)
    free, total = cuda.memory_info()
    assert 0 < free <= total and _device.free_memory() <= total


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("slab_bytes", [1, 5000, 1 << 30])  # one line per slab, a few lines, everything at once
def test_streamed_backend_follows_the_cpu_state(cuda, order, slab_bytes):
    rng = np.random.default_rng(15)
    A, _, _ = planted(700, 300, 5, 0.4, rng)
    host = np.asarray(A, dtype=np.float32, order=order)
    s0 = rng.permutation(np.arange(300) % 5).astype(np.int32)
    cpu = _core.IterDState(host, 5, None, s0, 1e-9, 7)
    gpu = _core.IterDState(cuda.streamed_backend(host, 5, 0, slab_bytes), 5, None, s0, 1e-9, 7)
    assert gpu.backend == "cuda-streamed"
    follow(cpu, gpu, 5)
    assert gpu.update_reads == 0  # every refresh is one streamed pass


@pytest.fixture
def nothing_fits(monkeypatch):
    """As on a GPU too small for the activations: host arrays are streamed, in slabs of a few KB."""
    monkeypatch.setattr(_device, "free_memory", lambda device=0: 0)
    monkeypatch.setattr(_device, "STREAM_SLAB_BYTES", 4000)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_iterd_streams_host_activations_that_do_not_fit(cuda, nothing_fits, dtype, order):
    rng = np.random.default_rng(16)
    A, _, _ = planted(2000, 500, 6, 0.5, rng)
    host = np.asarray(A, dtype=dtype, order=order)
    assert isinstance(_device.prepare_activations(host, "cuda"), _device.StreamedActivations)
    res = ulcmod.iterd(host, 6, random_state=0, device="cuda")
    ref = ulcmod.iterd(host, 6, random_state=0, device="cpu")
    assert res.converged
    assert res.L == pytest.approx(ulcmod.objective(host, res.neuron_labels, res.sample_labels).L, rel=1e-10)
    assert res.L == pytest.approx(ref.L, rel=1e-9)
    np.testing.assert_array_equal(res.neuron_labels, ref.neuron_labels)


def test_streamed_results_are_local_optima(cuda, nothing_fits):
    rng = np.random.default_rng(17)
    for trial in range(3):
        A = rng.normal(size=(14, 11)) + rng.random() * rng.random((14, 11))
        res = ulcmod.iterd(A, 3, init="random", random_state=trial, device="cuda")
        assert res.converged
        assert res.L == pytest.approx(brute_objective(A, res.neuron_labels, res.sample_labels, 3)[0], rel=1e-12)
        assert best_single_move_gain(A, res.neuron_labels.copy(), res.sample_labels.copy(), 3) <= 1e-9
