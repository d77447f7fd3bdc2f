"""An extraction folder on disk: creating it, resuming it, checking it, writing its rows.

Files: ``activations.npy`` (samples x neurons, written in place through a memory map),
``done.npy`` (which samples are finished), ``rows_crc32.npy`` (the CRC-32 of every finished
row as stored), ``neurons.npz`` (layer and position of each neuron) and ``meta.json`` (what was
extracted, from what: settings, texts and the model's weights and tokenizer by digest).

Rows are written before their checksums and flags, and the flags and checksums are replaced
atomically after every batch, so an interruption at any moment leaves a folder whose finished
rows are exactly the flagged ones. A resume checks that: rows that a truncated or altered
``activations.npy`` lost are found (size, checksums), flagged unfinished and extracted again,
with a warning; a folder whose flags cannot be trusted is refused with an error naming the file.
"""

from __future__ import annotations

import json
import warnings
import zlib
from pathlib import Path

import numpy as np

from ..core._files import npy_header, read_json, read_npy, save_npy, save_npz, write_text

ACTIVATIONS, DONE, CRC, NEURONS, META = "activations.npy", "done.npy", "rows_crc32.npy", "neurons.npz", "meta.json"
STORAGE_DTYPES = ("float16", "bfloat16", "float32")  # of activations.npy
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
# Settings that may differ on a resume: the model's path (its weights and tokenizer are compared by digest).
RESUME_FREE = ("model",)


def stored_dtype(name: str) -> np.dtype:
    """The dtype in activations.npy for a storage dtype name (bfloat16 as its raw 16 bits)."""
    return np.dtype(np.uint16 if name == "bfloat16" else name)


def as_values(stored: np.ndarray, name: str) -> np.ndarray:
    """The activations as values: the stored array, or its bfloat16 view."""
    if name == "bfloat16":
        import ml_dtypes

        return stored.view(ml_dtypes.bfloat16)
    return stored


def to_stored(rows: np.ndarray, name: str) -> np.ndarray:
    """float32 rows converted to the storage dtype (bfloat16 as its raw 16 bits)."""
    if name == "bfloat16":
        import ml_dtypes

        return rows.astype(ml_dtypes.bfloat16).view(np.uint16)
    return rows.astype(name)


def check_rows(rows: np.ndarray, sample_ids, name: str) -> None:
    """Refuse rows that storage would corrupt: NaN/inf from the model, or float16 overflow."""
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        j = int(sample_ids[int(np.argmin(finite))])
        raise ValueError(f"the model gave NaN or infinite activations for sample {j}; check the model's weights "
                         f"and dtype (float16 weights overflow easily: load it in float32 or bfloat16)")
    if name == "float16":
        peak = np.abs(rows).max(axis=1)
        if (peak > FLOAT16_MAX).any():
            k = int(np.argmax(peak))
            raise ValueError(f"activations of sample {int(sample_ids[k])} reach {peak[k]:.4g}, above float16's largest "
                             f"value {FLOAT16_MAX:.0f}, so storing them as float16 would give inf; store them as "
                             f"float32 or bfloat16 (extract_activations(dtype='float32'), or ulcmod discover "
                             f"--storage-dtype float32)")


def row_checksums(stored: np.ndarray, rows=None) -> np.ndarray:
    """CRC-32 of the listed rows (default all) of a (rows x neurons) stored array, read one row at
    a time (a memory map's finished rows are never copied out together)."""
    rows = range(len(stored)) if rows is None else rows
    return np.fromiter((zlib.crc32(np.ascontiguousarray(stored[i]).data) for i in rows), dtype=np.uint32,
                       count=len(rows))


def _read_state(out: Path, n: int):
    """``(done flags, row checksums or None)`` of a folder; done must be n bools."""
    done = np.array(read_npy(out / DONE))
    if done.dtype != bool or done.shape != (n,):
        raise ValueError(f"{out / DONE} holds {done.dtype} flags of shape {done.shape} for {n} samples, so which "
                         f"samples are finished is unknown; delete the folder {out} (or pass resume=False) to "
                         f"extract again")
    if not (out / CRC).is_file():
        return done, None  # written by an ulcmod without row checksums
    crc = np.array(read_npy(out / CRC))
    if crc.dtype != np.uint32 or crc.shape != (n,):
        raise ValueError(f"{out / CRC} holds {crc.dtype} checksums of shape {crc.shape} for {n} samples; delete "
                         f"the folder {out} (or pass resume=False) to extract again")
    return done, crc


class Store:
    """The writable arrays of an extraction folder: activations (memory-mapped), flags, checksums."""

    def __init__(self, out: Path, meta: dict, acts, done, crc):
        self.out, self.meta, self.acts, self.done, self.crc = out, meta, acts, done, crc

    def write(self, sample_ids, rows: np.ndarray) -> None:
        """Store the float32 `rows` of samples `sample_ids`: rows, then checksums, then flags."""
        name = self.meta["dtype"]
        check_rows(rows, sample_ids, name)
        stored = to_stored(rows, name)
        self.acts[sample_ids] = stored
        self.acts.flush()
        self.crc[sample_ids] = row_checksums(stored)
        self.done[sample_ids] = True
        self.save_state()

    def save_state(self) -> None:
        save_npy(self.out / CRC, self.crc)  # checksums first: a flag never names a row without one
        save_npy(self.out / DONE, self.done)


def create(out: Path, meta: dict, layer_of: np.ndarray, position: np.ndarray) -> Store:
    """A new extraction folder in `out` (replacing any extraction there)."""
    out.mkdir(parents=True, exist_ok=True)
    n = meta["n_samples"]
    (out / META).unlink(missing_ok=True)  # written last: a folder without it is no extraction yet
    acts = np.lib.format.open_memmap(out / ACTIVATIONS, mode="w+", dtype=stored_dtype(meta["dtype"]),
                                     shape=(n, meta["n_neurons"]))
    store = Store(out, meta, acts, np.zeros(n, dtype=bool), np.zeros(n, dtype=np.uint32))
    store.save_state()
    save_npz(out / NEURONS, layer=layer_of, position=position)
    write_text(out / META, json.dumps(meta, indent=1))
    return store


def open_folder(out: Path, meta: dict, layer_of: np.ndarray, position: np.ndarray, resume: bool) -> Store:
    """The extraction folder `out` for `meta`: resumed when it holds the same extraction (checked,
    see :func:`resume_folder`) and `resume` is true, otherwise created."""
    if resume and (out / META).is_file():
        return resume_folder(out, meta, layer_of, position)
    return create(out, meta, layer_of, position)


def resume_folder(out: Path, meta: dict, layer_of, position) -> Store:
    """The extraction in `out`, checked: the same meta (else ValueError), and every finished row
    intact; rows that a truncated or altered activations file lost are flagged unfinished."""
    old = read_json(out / META)
    differ = sorted(k for k in set(meta) | set(old) if k not in RESUME_FREE and old.get(k) != meta.get(k))
    if differ:
        raise ValueError(f"{out} holds a different extraction (differs in {differ}); use another folder or "
                         f"resume=False to overwrite it")
    n, width = meta["n_samples"], meta["n_neurons"]
    done, crc = _read_state(out, n)
    path, dtype = out / ACTIVATIONS, stored_dtype(meta["dtype"])
    row_bytes = width * dtype.itemsize
    try:
        shape, fortran, stored, offset = npy_header(path)
        if tuple(shape) != (n, width) or stored != dtype or fortran:
            raise ValueError(f"{path} holds a {shape} {stored} array, expected ({n}, {width}) {dtype}")
    except ValueError as err:  # the header is gone: every row is lost
        _lost(path, done, done.copy(), f"it is unreadable ({err})")
        return create(out, meta, layer_of, position)
    size, need = path.stat().st_size, offset + n * row_bytes
    if size != need:
        whole = max(0, (size - offset) // row_bytes)
        _lost(path, done, done & (np.arange(n) >= whole), f"it is truncated ({size} of {need} bytes)")
        done[whole:] = False
        with open(path, "r+b") as f:
            f.truncate(need)  # the missing rows come back as zeros, flagged unfinished
    acts = np.lib.format.open_memmap(path, mode="r+")
    if crc is None:
        crc = np.zeros(n, dtype=np.uint32)
        crc[done] = row_checksums(acts, np.flatnonzero(done))  # trust a folder from before row checksums
    else:
        bad = done.copy()
        bad[done] = row_checksums(acts, np.flatnonzero(done)) != crc[done]
        _lost(path, done, bad, "their rows do not match their checksums")
    store = Store(out, meta, acts, done, crc)
    store.save_state()
    return store


def _lost(path: Path, done: np.ndarray, lost: np.ndarray, why: str) -> None:
    """Flag the finished samples `lost` unfinished, with a warning saying why."""
    if lost.any():
        first = int(np.flatnonzero(lost)[0])
        warnings.warn(f"{path}: {int(lost.sum())} finished sample(s) are lost because {why} (first: sample "
                      f"{first}); extracting them again", UserWarning, stacklevel=4)
        done[lost] = False


def check_folder(path: Path, meta: dict) -> None:
    """Cheap structural checks of a finished-or-not extraction folder (headers, sizes, flags)."""
    n, width = meta["n_samples"], meta["n_neurons"]
    read_npy(path / ACTIVATIONS, mmap_mode="r", dtype=stored_dtype(meta.get("dtype", "float16")),
             shape=(n, width))
    _read_state(path, n)
