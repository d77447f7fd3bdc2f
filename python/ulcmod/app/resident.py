"""The z-scored matrices of the run in progress, kept in GPU memory between the stages of
``ulcmod discover`` when its work runs on a GPU: left there by the z-scoring (or copied up once
on first need), read in place by IterD and by the module features of the evaluation, and freed
when the run ends (:func:`release`). A matrix that does not fit stays on the host, memory-mapped:
IterD then streams it to the GPU for each pass, and the rest of the work on it runs on the CPU.
"""

from __future__ import annotations

from pathlib import Path

from ..core import _device

_held: dict = {}  # (run folder, split) -> GpuActivations


def keep(folder, split: str, array) -> None:
    """Hold `array` (GpuActivations) as the z-scored `split` of the run in `folder`."""
    _held[Path(folder).resolve(), split] = array


def matrix(r, split: str, device: str):
    """The z-scored `split` of run `r` for work on `device`: the copy held in GPU memory (made now
    when there is none and it fits), else the memory-mapped file."""
    key = (Path(r.path).resolve(), split)
    if device != "cuda":
        return getattr(r, split)
    if key in _held:
        return _held[key]
    Z = getattr(r, split)
    if _device.fits_on_gpu(Z.nbytes):
        _held[key] = _device.GpuActivations(_device.to_device(Z, split))
        return _held[key]
    return Z


def release() -> None:
    """Free every held matrix."""
    _held.clear()
