"""Device choice, the CUDA module's import and the DLPack consumer: what runs without a GPU."""

import types

import numpy as np
import pytest

import ulcmod
from ulcmod.core import _device

cuda = _device.cuda_module()
needs_build = pytest.mark.skipif(cuda is None, reason="not built with CUDA (ULCMOD_ENABLE_CUDA=OFF)")


def test_build_info_lists_the_backends():
    info = ulcmod.build_info()
    assert info["backends"] == (["cpu", "cuda"] if cuda is not None else ["cpu"])
    assert isinstance(info["cuda_status"], str)
    if cuda is not None:
        assert info["cuda"] is True
        assert set(info["cuda_build"]) >= {"cuda_runtime", "cublas", "architectures"}


@needs_build
def test_cuda_module_imports_and_reports_its_devices():
    n = cuda.device_count()
    assert n >= 0
    status = cuda.runtime_status()
    assert (status == "ok") == (n > 0)
    if n == 0:  # the CI machine: no GPU, and the module says why
        assert "no GPU present" in _device.cuda_status()


def test_device_argument_is_checked():
    A = np.random.default_rng(0).normal(size=(20, 10))
    with pytest.raises(ValueError, match="device must be one of"):
        ulcmod.iterd(A, 3, device="gpu")
    res = ulcmod.iterd(A, 3, device="cpu", random_state=0)
    assert res.L == ulcmod.iterd(A, 3, random_state=0).L


def test_cuda_without_a_cuda_build_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_device, "_cuda", None)
    monkeypatch.setattr(_device, "_cuda_error", "No module named 'ulcmod._cuda'")
    A = np.ones((6, 4))
    with pytest.raises(ValueError, match=r'device="cuda" needs the CUDA build of ulcmod.*ULCMOD_ENABLE_CUDA=ON'):
        ulcmod.iterd(A, 2, device="cuda")
    assert "not built with CUDA" in _device.cuda_status()


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    fake = types.SimpleNamespace(device_count=lambda: 0, runtime_status=lambda: "cudaErrorNoDevice: no device",
                                 DeviceArray=type("DeviceArray", (), {}))
    monkeypatch.setattr(_device, "_cuda", fake)
    A = np.ones((6, 4))
    with pytest.raises(ValueError, match=r'device="cuda" needs a CUDA GPU, but none is available \(cudaErrorNoDevice'):
        ulcmod.iterd(A, 2, device="cuda")
    assert "no GPU present" in _device.cuda_status()


@pytest.mark.skipif(cuda is not None and cuda.device_count() > 0, reason="a GPU is present")
def test_without_a_gpu_nothing_fits_on_it():
    """discover keeps matrices on the GPU and iterd picks the streamed backend by fits_on_gpu."""
    assert _device.free_memory() == 0
    assert not _device.fits_on_gpu(0) and not _device.fits_on_gpu(1 << 20)


def test_host_arrays_stay_on_the_cpu_by_default():
    A = np.ones((4, 3), dtype=np.float32)
    assert not _device.is_cuda_array(A)
    assert _device.resolve_device(A, "auto") == "cpu"
    assert _device.dlpack_device(object()) is None


@needs_build
@pytest.mark.parametrize("dtype, element", [(np.float16, "float16"), (np.float32, "float32"), (np.float64, "float64")])
def test_dlpack_capsules_from_numpy_are_read_and_consumed(dtype, element):
    A = np.arange(24, dtype=dtype).reshape(4, 6)
    d = cuda.describe_dlpack(A.__dlpack__())
    assert d["device"] == "cpu" and d["shape"] == (4, 6) and d["element"] == element
    assert d["strides"] in (None, (6, 1))
    d = cuda.describe_dlpack(A[:, 1::2].__dlpack__())
    assert d["shape"] == (4, 3) and d["strides"] == (6, 2)
    d = cuda.describe_dlpack(A.T.__dlpack__())
    assert d["strides"] == (1, 6)
    capsule = A.__dlpack__()
    cuda.describe_dlpack(capsule)
    with pytest.raises(ValueError, match="already consumed"):
        cuda.describe_dlpack(capsule)


@needs_build
def test_versioned_dlpack_capsules_are_read():
    A = np.ones((3, 2), dtype=np.float32)
    try:
        capsule = A.__dlpack__(max_version=(1, 0))
    except TypeError:
        pytest.skip("this NumPy predates versioned DLPack capsules")
    d = cuda.describe_dlpack(capsule)
    assert d["shape"] == (3, 2) and d["element"] == "float32"


@needs_build
def test_dlpack_consumer_rejects_what_it_cannot_read():
    with pytest.raises(TypeError, match="DLPack capsule"):
        cuda.describe_dlpack(np.ones((2, 2)))
    with pytest.raises(ValueError, match="supported are float16, bfloat16, float32 and float64"):
        cuda.DeviceArray.from_dlpack(np.ones((2, 2), dtype=np.int32).__dlpack__())
    with pytest.raises(ValueError, match="not on a CUDA device"):
        cuda.DeviceArray.from_dlpack(np.ones((2, 2), dtype=np.float32).__dlpack__())
    with pytest.raises(ValueError, match="2-D"):
        cuda.DeviceArray.from_dlpack(np.ones(3, dtype=np.float32).__dlpack__())


@needs_build
def test_bfloat16_from_torch_cpu_is_described():
    torch = pytest.importorskip("torch")
    t = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4)
    d = cuda.describe_dlpack(t.__dlpack__())
    assert d["dtype"] == (4, 16, 1) and d["element"] == "bfloat16" and d["device"] == "cpu"
