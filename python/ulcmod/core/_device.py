"""Where an activation matrix lives and where the work on it runs.

Arrays on a CUDA device (torch tensors, CuPy arrays, anything with ``__dlpack__``) are read in
place through DLPack by the optional compiled module ``ulcmod._cuda``; neither torch nor CuPy is
imported here. ``device="auto"`` runs where the data lives, ``"cpu"`` copies device arrays to
the host, ``"cuda"`` copies host arrays to the GPU.

Streams: ``_cuda`` runs on the CUDA legacy default stream and asks producers for their data with
``__dlpack__(stream=1)``, which makes the producer's pending work on its current stream finish
before ours starts (the DLPack protocol's synchronisation); every ``_cuda`` call returns only
after its own work is done.
"""

from __future__ import annotations

import ctypes
import glob
import importlib
import os
import sys

import numpy as np

from ._validation import check_activations, check_choice, check_finite

DEVICES = ("auto", "cpu", "cuda")
_KDL_CUDA, _KDL_CUDA_MANAGED = 2, 13  # DLPack device types read as CUDA memory

_cuda = None
_cuda_error = None


def _preload_cublas() -> None:
    """Load cuBLAS from the nvidia-cublas wheel by full path (the module's RPATH covers the usual
    site-packages layout; this covers the others)."""
    try:
        import nvidia
    except ImportError:
        return
    for root in nvidia.__path__:
        for name in ("libcublasLt.so.*", "libcublas.so.*"):
            for path in sorted(glob.glob(os.path.join(root, "*", "lib", name))):
                try:
                    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                except OSError:
                    pass


def cuda_module():
    """``ulcmod._cuda``, or None when this installation was built without CUDA (or it cannot load)."""
    global _cuda, _cuda_error
    if _cuda is None and _cuda_error is None:
        _preload_cublas()
        try:
            _cuda = importlib.import_module("ulcmod._cuda")
        except ImportError as exc:
            _cuda_error = str(exc)
    return _cuda


def cuda_status() -> str:
    """One line: whether GPU work is possible here, and if not, why."""
    mod = cuda_module()
    if mod is None:
        return f"not built with CUDA ({_cuda_error})"
    n = mod.device_count()
    if n == 0:
        return f"built with CUDA, no GPU present ({mod.runtime_status()})"
    return f"{n} CUDA device(s): " + ", ".join(mod.device_name(i) for i in range(n))


def require_cuda(name: str = "device"):
    """``ulcmod._cuda`` with at least one device, else a ValueError that says what is missing."""
    mod = cuda_module()
    if mod is None:
        raise ValueError(
            f'{name}="cuda" needs the CUDA build of ulcmod, which this installation lacks ({_cuda_error}); '
            f'reinstall with `pip install ".[cuda]" -Ccmake.define.ULCMOD_ENABLE_CUDA=ON` (see README) '
            f'or use {name}="cpu"'
        )
    if mod.device_count() == 0:
        raise ValueError(f'{name}="cuda" needs a CUDA GPU, but none is available ({mod.runtime_status()}); '
                         f'use {name}="cpu"')
    return mod


def dlpack_device(A):
    """(DLPack device type, device id) of an array that speaks DLPack, else None."""
    if isinstance(A, np.ndarray):
        return None
    get = getattr(A, "__dlpack_device__", None)
    if get is None:
        return None
    try:
        kind, index = get()
        return int(kind), int(index)
    except Exception:  # a foreign object whose protocol method fails: treat as host data
        return None


def is_cuda_array(A) -> bool:
    """Whether A lives in CUDA device memory (or is a ``_cuda.DeviceArray``)."""
    if isinstance(A, GpuActivations) or (_cuda is not None and isinstance(A, _cuda.DeviceArray)):
        return True
    dev = dlpack_device(A)
    return dev is not None and dev[0] in (_KDL_CUDA, _KDL_CUDA_MANAGED)


def resolve_device(A, device, name: str = "device") -> str:
    """'cpu' or 'cuda': where the work on A runs for the given ``device`` argument."""
    check_choice(device, name, DEVICES)
    if device == "auto":
        device = "cuda" if is_cuda_array(A) else "cpu"
    if device == "cuda":
        require_cuda(name)
    return device


def _import_dlpack(mod, A):
    try:
        capsule = A.__dlpack__(stream=1, max_version=(1, 0))
    except TypeError:  # producers that predate versioned capsules
        capsule = A.__dlpack__(stream=1)
    return mod.DeviceArray.from_dlpack(capsule)


def to_device(A, name: str = "A"):
    """A as a ``_cuda.DeviceArray``: device arrays in place, host arrays copied to GPU 0 in their own
    element order (a transposed memory map, neurons x samples over a samples x neurons file, is one
    straight copy, not a transposition on the host)."""
    mod = require_cuda()
    if isinstance(A, GpuActivations):
        return A.array
    if isinstance(A, mod.DeviceArray):
        return A
    if is_cuda_array(A):
        return _import_dlpack(mod, A)
    return mod.DeviceArray.from_host(_host_for_gpu(A, name))


def _host_for_gpu(A, name: str) -> np.ndarray:
    """A host array checked, and C- or F-contiguous as the GPU takes it: either order is read as
    it is, anything else copied."""
    arr = check_activations(A, name)
    return arr if arr.flags.c_contiguous or arr.flags.f_contiguous else np.ascontiguousarray(arr)


def to_host(A) -> np.ndarray:
    """A host copy of a device array; bfloat16 as ``ml_dtypes.bfloat16`` (which the CPU core reads
    in place), or widened exactly to float32 where ml_dtypes is not installed."""
    dev = to_device(A)
    out = dev.to_host()
    if dev.dtype == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            return (out.astype(np.uint32) << 16).view(np.float32)
        out = out.view(ml_dtypes.bfloat16)
    return out


class DeviceRows:
    """Rows of activations in GPU memory, as :func:`ulcmod.core._pca.sample_pca` takes them: a
    ``shape`` and a ``power_pass`` run on the GPU."""

    def __init__(self, D, rows=None):
        self._D = D
        self._rows = None if rows is None else np.ascontiguousarray(rows, dtype=np.int64)
        self.shape = (D.shape[0] if rows is None else len(self._rows), D.shape[1])

    def power_pass(self, Y, last):
        gram, y_next, bad = self._D.pca_pass(np.ascontiguousarray(Y, dtype=np.float64), last, self._rows)
        if bad >= 0:  # the same error as the host pass, naming the row of the whole matrix
            row = bad if self._rows is None else int(self._rows[bad])
            check_finite(np.array([np.nan]), "A", along="row", ids=np.array([row]))
        return gram, y_next


class GpuActivations(DeviceRows):
    """Activations in GPU memory as the core's functions take them (what prepare_activations
    returns for GPU runs): ``shape``, rows for the PCA (``A[rows]``, or A itself), the IterD
    backend (``backend(K)``, like a cluster's), and the ``_cuda.DeviceArray`` methods."""

    def __init__(self, D):
        super().__init__(D)
        self.array = D

    def __getitem__(self, rows):
        return DeviceRows(self.array, rows)

    def backend(self, K: int):
        """The CUDA backend's capsule for ``_core.IterDState``."""
        return self.array.backend(K)

    def __getattr__(self, name):
        return getattr(self.array, name)


class StreamedActivations:
    """Activations in host memory (an array or a memory map) that do not fit in GPU memory, for a
    run on the GPU: IterD's backend streams them up in slabs for every table build, and the PCA
    of the initialisation reads its neurons on the host. Indexing reads the host array."""

    def __init__(self, host: np.ndarray):
        self.host = host
        self.shape, self.dtype = host.shape, host.dtype

    def __getitem__(self, key):
        return self.host[key]

    def backend(self, K: int):
        """The streamed CUDA backend's capsule for ``_core.IterDState``."""
        return require_cuda().streamed_backend(self.host, K, 0, STREAM_SLAB_BYTES)


# GPU memory kept free beside activations copied up whole (IterD's tables and workspaces); host
# activations that would leave less are streamed instead, in slabs of STREAM_SLAB_BYTES.
GPU_HEADROOM_BYTES = 2 << 30
STREAM_SLAB_BYTES = 256 << 20


def prepare_activations(A, device, name: str = "A"):
    """The activations for a run on ``device``: a checked NumPy array, ``GpuActivations``, or for
    host activations too large to copy to the GPU (beside GPU_HEADROOM_BYTES), ``StreamedActivations``."""
    if resolve_device(A, device) == "cuda":
        if not is_cuda_array(A):
            A = _host_for_gpu(A, name)
            if not fits_on_gpu(A.nbytes):
                return StreamedActivations(A)
        D = to_device(A, name)
        if D.shape[0] == 0 or D.shape[1] == 0:
            raise ValueError(f"{name} is empty (shape {D.shape}); it needs neurons and samples")
        return GpuActivations(D)
    if is_cuda_array(A):
        A = to_host(A)
    return check_activations(A, name)


def fits_on_gpu(n_bytes: int) -> bool:
    """Whether `n_bytes` more fit in GPU 0's free memory with GPU_HEADROOM_BYTES to spare."""
    return free_memory() >= n_bytes + GPU_HEADROOM_BYTES


def free_memory(device: int = 0) -> int:
    """Bytes free on a GPU (0 without the CUDA build or a GPU)."""
    mod = cuda_module()
    if mod is None or mod.device_count() <= device:
        return 0
    return int(mod.memory_info(device)[0])


def write_npy_transposed(D, path, block_bytes: int = STREAM_SLAB_BYTES) -> None:
    """Write a device array D (N x M) to the .npy file `path` as its transpose (M x N, C order),
    copying column blocks down one at a time (a samples x neurons file from neurons x samples)."""
    from ._blocks import row_blocks, write_npy_header

    N, M = D.shape
    host = np.dtype(D.dtype)  # float16/32/64: what z-scoring writes
    with open(path, "wb") as f:
        write_npy_header(f, (M, N), host)
        for c0, c1 in row_blocks(M, N * host.itemsize, block_bytes):  # rows of the file
            block = D.block(0, N, c0, c1).to_host()  # N x b
            f.write(np.ascontiguousarray(block.T).data)


def on_device(A) -> bool:
    """Whether A is activations in GPU memory as prepare_activations returns them."""
    return isinstance(A, GpuActivations)



def empty_like(A, dtype):
    """A new uninitialised array of A's shape on A's device, from A's own library (torch or CuPy)."""
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    module = type(A).__module__.split(".")[0]
    if module == "torch":
        torch = sys.modules["torch"]
        return torch.empty(tuple(A.shape), dtype=getattr(torch, name), device=A.device)
    if module == "cupy":
        cupy = sys.modules["cupy"]
        return cupy.empty(tuple(A.shape), dtype=name)
    raise TypeError(f"cannot allocate an output like a {type(A).__name__}; pass out= (an array on the same device)")


def zscore_apply(A, mean: np.ndarray, std: np.ndarray, out, dtype):
    """``(A - mean) / std`` per neuron on A's GPU, into ``out`` (new, of A's library, when None)."""
    D = to_device(A)
    if D.shape[0] != mean.size:
        raise ValueError(f"A has {D.shape[0]} neurons but the statistics have {mean.size}")
    if out is None:
        out = empty_like(A, dtype)
    elif tuple(out.shape) != tuple(D.shape):
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {tuple(D.shape)}")
    D.zscore_into(to_device(out, "out"), np.ascontiguousarray(mean, dtype=np.float64),
                  np.ascontiguousarray(std, dtype=np.float64))
    return out


class GpuIca:
    """FastICA's data-sized steps on the GPU, shaped like ``_core.ica_whiten`` / ``ica_iterate``.

    X (n x p) stays on the GPU (a CUDA array read in place, a host array copied). The computation
    runs in float32 for float32 data and in float64 otherwise, as on the CPU.
    """

    def __init__(self, X):
        mod = require_cuda()
        if is_cuda_array(X):
            self._X = to_device(X, "X")
        else:
            arr = np.asarray(X)
            if arr.dtype.kind not in "fiu":
                raise TypeError(f"X must be a real numeric array, got dtype {arr.dtype}")
            keep = arr.dtype == np.float32
            self._X = mod.DeviceArray.from_host(np.ascontiguousarray(arr, dtype=np.float32 if keep else np.float64))
        self._mod = mod
        self.shape = self._X.shape
        if self.shape[0] < 2 or self.shape[1] < 1:
            raise ValueError(f"X needs at least 2 samples and 1 feature, got shape {self.shape}")
        self.dtype = np.dtype(np.float32 if self._X.dtype == "float32" else np.float64)

    def whiten(self, n_components):
        return self._mod.ica_whiten(self._X, n_components, self.dtype == np.float32)

    def transposed(self):
        return self._mod.ica_transpose(self._X, self.dtype == np.float32)

    @staticmethod
    def iterate(X1, w_init, fun, alpha, deflation, tol, max_iter):
        return cuda_module().ica_iterate(X1, w_init, fun, alpha, deflation, tol, max_iter)
