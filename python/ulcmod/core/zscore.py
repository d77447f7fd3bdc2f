"""Per-neuron z-scoring, out of core: statistics from the training samples, applied to any samples.

``A'[i, j] = (A[i, j] - mean_i) / std_i`` with the mean and (population) standard deviation of
neuron ``i`` over the *training* samples; a std below 1e-8 counts as 1. Test samples must use
the training statistics. (The paper's eq. 7 prints ``(A - sigma) / sigma``: a typo.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _device
from ._blocks import row_blocks, write_npy_header
from ._validation import check_activations, check_finite

MIN_STD = 1e-8
_BLOCK_BYTES = 32 << 20  # per block of A widened to float64 (worked on in place): bounded memory at any size
_WIDE = 8  # bytes per entry of a block once widened (float64)


@dataclass(frozen=True)
class ZScore:
    """Per-neuron mean and std (float64, length n_neurons)."""

    mean: np.ndarray
    std: np.ndarray

    def save(self, path) -> None:
        """Write the statistics to an .npz file."""
        np.savez(path, mean=self.mean, std=self.std)

    @classmethod
    def load(cls, path) -> ZScore:
        """Read statistics written by save()."""
        with np.load(path) as f:
            return cls(f["mean"], f["std"])

    def apply(self, A, out=None, dtype=np.float32) -> np.ndarray:
        """z-score A (n_neurons x n_samples) block by block into `out` (a new array by default).

        `out` may be a memmap of the same shape (any layout); A is read in blocks along its
        contiguous axis, so a disk-backed A is streamed once. A CUDA array (torch, CuPy) is
        z-scored on its GPU into `out` (a new array of A's library by default; `dtype` may then
        also be "bfloat16" for torch).
        """
        if _device.is_cuda_array(A):
            return _device.zscore_apply(A, self.mean, self.std, out, dtype)
        A = check_activations(A)
        if A.shape[0] != self.mean.size:
            raise ValueError(f"A has {A.shape[0]} neurons but the statistics have {self.mean.size}")
        if out is None:
            out = np.empty(A.shape, dtype=dtype, order="F" if _sample_major(A) else "C")
        elif out.shape != A.shape:
            raise ValueError(f"out has shape {out.shape}, expected {A.shape}")
        mean, std = self.mean[:, None], self.std[:, None]
        if _sample_major(A):
            for c0, c1 in row_blocks(A.shape[1], A.shape[0] * _WIDE, _BLOCK_BYTES):
                out[:, c0:c1] = _standardised(A[:, c0:c1], mean, std)
        else:
            for r0, r1 in row_blocks(A.shape[0], A.shape[1] * _WIDE, _BLOCK_BYTES):
                out[r0:r1] = _standardised(A[r0:r1], mean[r0:r1], std[r0:r1])
        return out


def _standardised(block, mean, std) -> np.ndarray:
    """``(block - mean) / std`` in float64, in one widened copy of the block."""
    x = block.astype(np.float64)
    x -= mean
    x /= std
    return x


def _centred_squares(block, mean) -> np.ndarray:
    """Per row, the sum of squared deviations from `mean`; works on `block` (float64) in place."""
    block -= mean[:, None]
    block *= block
    return block.sum(axis=1)


def _sample_major(A: np.ndarray) -> bool:
    """Whether each sample's neurons are contiguous (the layout extraction writes)."""
    return A.strides[0] < A.strides[1]


def fit_zscore(A) -> ZScore:
    """Per-neuron mean and std of A (n_neurons x n_samples, the training samples), in float64.

    Reads A once in blocks along its contiguous axis: for sample-major data (an extraction's
    ``Activations.A``) block statistics are merged with Chan et al.'s pairwise update, which
    stays accurate where sum-of-squares formulas lose digits. A CUDA array (torch, CuPy) is read
    once on its GPU (float64 sums of deviations from each neuron's first value).
    """
    if _device.is_cuda_array(A):
        mean, var = _device.to_device(A).row_stats()
        return _finish_zscore(mean, var)
    A = check_activations(A)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported with its cause below
        mean, var = _moments(A)
    return _finish_zscore(mean, var, source=lambda i: A[i])


def _moments(A: np.ndarray):
    """Per-row mean and population variance of A, in float64, in one blocked pass."""
    N, M = A.shape
    if _sample_major(A):
        count, mean, m2 = 0, np.zeros(N), np.zeros(N)
        for c0, c1 in row_blocks(M, N * _WIDE, _BLOCK_BYTES):
            block = A[:, c0:c1].astype(np.float64)
            n_b = c1 - c0
            mean_b = block.mean(axis=1)
            m2_b = _centred_squares(block, mean_b)
            delta = mean_b - mean
            total = count + n_b
            mean = mean + delta * (n_b / total)
            m2 = m2 + m2_b + delta**2 * (count * n_b / total)
            count = total
        var = m2 / M
    else:
        mean, var = np.empty(N), np.empty(N)
        for r0, r1 in row_blocks(N, M * _WIDE, _BLOCK_BYTES):
            block = A[r0:r1].astype(np.float64)
            mean[r0:r1] = block.mean(axis=1)
            var[r0:r1] = _centred_squares(block, mean[r0:r1]) / M
    return mean, var


def _finish_zscore(mean, var, source=None) -> ZScore:
    """The ZScore of per-neuron moments; `source(i)` gives neuron i's raw row, so that a finite
    row whose moments overflowed is reported as such (check_finite)."""
    check_finite(mean + var, "A", along="neuron", source=source)  # the sum is finite only where both are
    std = np.sqrt(var)
    std[std < MIN_STD] = 1.0
    return ZScore(mean, std)


def zscore_files(train, test=None, *, out_dir, dtype=np.float32, device="cpu"):
    """z-score extracted activations into ``out_dir`` with the training statistics.

    `train` and `test` are :class:`~ulcmod.lm.activations.Activations` (or neurons x samples arrays).
    Writes ``zscore.npz`` (the statistics), ``train.npy`` and ``test.npy`` (samples x neurons on
    disk, as the inputs) and returns (stats, train_z, test_z): their neurons x samples views,
    memory-mapped read-only. Sample-major inputs are written with sequential file writes, block by
    block, so the files are never mapped while written (their pages stay out of the process's RSS).

    With ``device="cuda"`` each split is copied to the GPU, z-scored there, and written from
    there; train_z and test_z are then the z-scored matrices left in GPU memory (the activations
    :func:`ulcmod.iterd` and :func:`~ulcmod.core.objective.module_features_many` read in place).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays = [getattr(x, "A", x) for x in (train, test)]
    if _device.resolve_device(arrays[0], device) == "cuda":
        return _zscore_files_on_gpu(arrays, out, dtype)
    stats = fit_zscore(arrays[0])
    stats.save(out / "zscore.npz")
    results = []
    for name, A in zip(("train", "test"), arrays):
        if A is None:
            results.append(None)
            continue
        _write_zscored(stats, A, out / f"{name}.npy", dtype)
        results.append(np.load(out / f"{name}.npy", mmap_mode="r").T)
    return stats, results[0], results[1]


def _zscore_files_on_gpu(arrays, out: Path, dtype):
    """zscore_files on the GPU: one copy of each raw split up, its z-scores written down block by
    block, the z-scored matrices kept on the GPU."""
    mod = _device.require_cuda()
    stats = None
    results = []
    for name, A in zip(("train", "test"), arrays):
        if A is None:
            results.append(None)
            continue
        raw = _device.to_device(A, name)
        if stats is None:
            stats = fit_zscore(raw)
            stats.save(out / "zscore.npz")
        elif raw.shape[0] != stats.mean.size:
            raise ValueError(f"{name} has {raw.shape[0]} neurons but the statistics have {stats.mean.size}")
        # An array of the output's shape and element order that is never touched (no memory used)
        like = np.empty(raw.shape[::-1], dtype=dtype).T if raw.strides[0] == 1 else np.empty(raw.shape, dtype=dtype)
        z = mod.DeviceArray.empty(like, raw.device)
        raw.zscore_into(z, stats.mean, stats.std)
        del raw
        _device.write_npy_transposed(z, out / f"{name}.npy")
        results.append(_device.GpuActivations(z))
    return stats, results[0], results[1]


def _write_zscored(stats: ZScore, A: np.ndarray, path: Path, dtype) -> None:
    """z-scored A (neurons x samples) to the .npy file `path`, stored samples x neurons."""
    if not _device.is_cuda_array(A):
        A = check_activations(A)
    if _device.is_cuda_array(A) or not _sample_major(A):  # on a GPU, or the file's rows spread over A
        z = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(A.shape[1], A.shape[0]))
        stats.apply(A, out=z.T)
        z.flush()
        return
    if A.shape[0] != stats.mean.size:
        raise ValueError(f"A has {A.shape[0]} neurons but the statistics have {stats.mean.size}")
    mean, std = stats.mean[:, None], stats.std[:, None]
    with open(path, "wb") as f:
        write_npy_header(f, (A.shape[1], A.shape[0]), dtype)
        for c0, c1 in row_blocks(A.shape[1], A.shape[0] * _WIDE, _BLOCK_BYTES):
            f.write(np.ascontiguousarray(_standardised(A[:, c0:c1], mean, std).T, dtype=dtype).data)
