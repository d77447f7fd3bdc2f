"""Sharded activations: ``.npy`` blocks of the neurons x samples matrix listed by a manifest.

A folder of sharded activations holds ``manifest.json`` and the shard files it names::

    {
      "format": "ulcmod.sharded-activations", "version": 1,
      "shape": [N, M],                 # neurons x samples
      "dtype": "float16",              # of every shard: float16, bfloat16, float32 or float64
      "row_chunks": [1536, 1536, ...], # optional neuron blocks (e.g. layers) to split rows at
      "shards": [{"file": "part-0000/activations.npy", "layout": "samples_x_neurons",
                  "rows": [0, N], "cols": [0, 250]}, ...],
      "neurons": "part-0000/neurons.npz"   # optional: layer and position of every neuron
    }

Each shard holds the rectangle ``rows x cols`` of A, stored as ``neurons_x_samples`` (an array
of shape (rows, cols), what :func:`write_sharded` writes: one row block per file) or
``samples_x_neurons`` (shape (cols, rows), what an extraction folder stores:
:func:`ulcmod.distributed.extract_sharded` writes one per block of samples). The shards tile A
as a grid. ``.npy`` has no bfloat16, so bfloat16 shards hold the uint16 bit patterns of the
values, read back as ``ml_dtypes.bfloat16``. Paths are relative to the manifest's folder, which
every worker must be able to read (a shared file system); data on object storage is better kept
as zarr, whose dask arrays :func:`ulcmod.iterd` takes as they are.

:func:`load_sharded` gives a dask array with one chunk per grid cell and per row chunk, each
a memory-mapped slice of its shard read on the worker that needs it, so nothing is shipped from
the client.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from ..core._validation import check_int, is_bfloat16
from ..core.zscore import MIN_STD, ZScore

FORMAT = "ulcmod.sharded-activations"
VERSION = 1
MANIFEST = "manifest.json"
DTYPES = ("float16", "bfloat16", "float32", "float64")
LAYOUTS = ("neurons_x_samples", "samples_x_neurons")


def _import_dask_array():
    try:
        import dask.array as da
    except ImportError as err:
        raise ImportError("sharded activations need dask: pip install 'ulcmod[dask]'") from err
    return da


def _array_dtype(dtype) -> np.dtype:
    """The dtype of activations given by name (a manifest's "bfloat16" is ml_dtypes') or dtype."""
    return np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)


def _stored(a: np.ndarray) -> np.ndarray:
    """What a shard file holds for activations `a`: bfloat16 as its uint16 bit patterns."""
    return a.view(np.uint16) if is_bfloat16(a.dtype) else a


def _boundaries(spans, extra, total, what):
    """Sorted cut points of [0, total) from shard spans and extra chunk sizes."""
    cuts = {0, total}
    for lo, hi in spans:
        if not 0 <= lo < hi <= total:
            raise ValueError(f"a shard's {what} [{lo}, {hi}) lies outside [0, {total})")
        cuts.update((lo, hi))
    cuts.update(np.cumsum(extra).tolist() if extra else ())
    return np.array(sorted(cuts), dtype=np.int64)


def _check_manifest(meta, path):
    """Raise a ValueError naming what is wrong with a manifest read from `path`."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an ulcmod sharded-activations manifest (format != {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path} has manifest version {meta.get('version')!r}; this ulcmod reads {VERSION}")
    shape = meta.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(x, int) and x > 0 for x in shape)):
        raise ValueError(f"{path}: shape must be [n_neurons, n_samples] (positive integers), got {shape!r}")
    if meta.get("dtype") not in DTYPES:
        raise ValueError(f"{path}: dtype must be one of {list(DTYPES)}, got {meta.get('dtype')!r}")
    row_chunks = meta.get("row_chunks") or []
    if row_chunks and sum(row_chunks) != shape[0]:
        raise ValueError(f"{path}: row_chunks add up to {sum(row_chunks)}, not the {shape[0]} neurons")
    shards = meta.get("shards")
    if not shards:
        raise ValueError(f"{path} lists no shards")
    for sh in shards:
        spans = [sh.get(k) for k in ("rows", "cols")]
        if not (isinstance(sh.get("file"), str)
                and all(isinstance(x, list) and len(x) == 2 and all(isinstance(v, int) for v in x) for x in spans)):
            raise ValueError(f"{path}: every shard needs a file and rows/cols as [start, stop] integers, got {sh!r}")
        if sh.get("layout") not in LAYOUTS:
            raise ValueError(
                f"{path}: shard {sh['file']!r} has layout {sh.get('layout')!r}, not one of {list(LAYOUTS)}")
    rows = _boundaries([sh["rows"] for sh in shards], row_chunks, shape[0], "rows")
    cols = _boundaries([sh["cols"] for sh in shards], [], shape[1], "cols")
    cover = np.zeros((rows.size - 1, cols.size - 1), dtype=np.int64)
    for sh in shards:
        r = slice(*np.searchsorted(rows, sh["rows"]))
        c = slice(*np.searchsorted(cols, sh["cols"]))
        cover[r, c] += 1
    if (cover != 1).any():
        i, j = np.argwhere(cover != 1)[0]
        raise ValueError(
            f"{path}: the shards must cover A exactly once; rows [{rows[i]}, {rows[i + 1]}) x cols "
            f"[{cols[j]}, {cols[j + 1]}) are covered {cover[i, j]} times"
        )
    return rows, cols


def _read_cell(shards, rows, cols, folder, dtype_name, block_id=None):
    """The chunk of A at grid cell `block_id`: a memory-mapped slice of the shard holding it."""
    r0, r1 = rows[block_id[0]], rows[block_id[0] + 1]
    c0, c1 = cols[block_id[1]], cols[block_id[1] + 1]
    for sh in shards:
        (sr0, sr1), (sc0, sc1) = sh["rows"], sh["cols"]
        if sr0 <= r0 and r1 <= sr1 and sc0 <= c0 and c1 <= sc1:
            break
    file = os.path.join(folder, sh["file"])
    arr = np.load(file, mmap_mode="r")
    neuron_major = sh["layout"] == "neurons_x_samples"
    expected = (sr1 - sr0, sc1 - sc0) if neuron_major else (sc1 - sc0, sr1 - sr0)
    dtype = _array_dtype(dtype_name)
    if arr.shape != expected or arr.dtype != _stored(np.empty(0, dtype)).dtype:
        raise ValueError(f"shard {file} holds {arr.dtype} {arr.shape}; the manifest says {dtype_name} {expected}")
    arr = arr.view(dtype)
    if neuron_major:
        return arr[r0 - sr0:r1 - sr0, c0 - sc0:c1 - sc0]
    return arr[c0 - sc0:c1 - sc0, r0 - sr0:r1 - sr0].T


@dataclass(frozen=True)
class ShardedActivations:
    """A folder of sharded activations, opened (see :func:`open_sharded`)."""

    path: Path
    meta: dict

    @property
    def shape(self) -> tuple:
        """(n_neurons, n_samples)."""
        return tuple(self.meta["shape"])

    @property
    def dtype(self) -> np.dtype:
        """The activations' dtype (``ml_dtypes.bfloat16`` for bfloat16)."""
        return _array_dtype(self.meta["dtype"])

    @property
    def A(self):
        """The activations as a dask array (neurons x samples), one chunk per shard cell."""
        da = _import_dask_array()
        from dask.base import tokenize

        rows, cols = _check_manifest(self.meta, self.path)
        name = "ulcmod-shards-" + tokenize(str(self.path.resolve()), self.meta)
        return da.map_blocks(
            _read_cell, chunks=(tuple(np.diff(rows).tolist()), tuple(np.diff(cols).tolist())),
            dtype=self.dtype, meta=np.empty((0, 0), dtype=self.dtype), name=name,
            shards=self.meta["shards"], rows=rows.tolist(), cols=cols.tolist(),
            folder=str(self.path.resolve()), dtype_name=self.meta["dtype"],
        )

    def _neurons(self, key):
        if "neurons" not in self.meta:
            raise ValueError(f"{self.path / MANIFEST} names no neurons file (layer and position of each neuron)")
        with np.load(self.path / self.meta["neurons"]) as f:
            return f[key]

    @property
    def neuron_layer(self) -> np.ndarray:
        """Layer of every neuron (for activations written by extraction)."""
        return self._neurons("layer")

    @property
    def neuron_position(self) -> np.ndarray:
        """Position of every neuron within its layer (for activations written by extraction)."""
        return self._neurons("position")


def open_sharded(path) -> ShardedActivations:
    """Open sharded activations: a folder holding ``manifest.json``, or the manifest itself."""
    path = Path(path)
    folder = path.parent if path.name == MANIFEST and path.is_file() else path
    if not (folder / MANIFEST).is_file():
        raise ValueError(f"{path} holds no {MANIFEST}; write sharded activations with write_sharded or extract_sharded")
    meta = json.loads((folder / MANIFEST).read_text())
    _check_manifest(meta, folder / MANIFEST)
    return ShardedActivations(folder, meta)


def load_sharded(path):
    """Sharded activations as a dask array (neurons x samples); see :func:`open_sharded`.

    Examples
    --------
    >>> import numpy as np, tempfile, ulcmod.distributed as ud
    >>> A = np.arange(12, dtype=np.float32).reshape(4, 3)
    >>> folder = tempfile.mkdtemp()
    >>> _ = ud.write_sharded(A, folder, rows_per_shard=2)
    >>> ud.load_sharded(folder).chunks
    ((2, 2), (3,))
    """
    return open_sharded(path).A


def write_manifest(folder, shape, dtype, shards, *, row_chunks=None, **extra) -> ShardedActivations:
    """Write ``manifest.json`` for shard files already in `folder`, check it and open it."""
    folder = Path(folder)
    meta = {"format": FORMAT, "version": VERSION, "shape": [int(x) for x in shape], "dtype": _array_dtype(dtype).name,
            "row_chunks": [int(x) for x in row_chunks] if row_chunks is not None else [], "shards": shards, **extra}
    _check_manifest(meta, folder / MANIFEST)
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, folder / MANIFEST)
    return ShardedActivations(folder, meta)


def _write_shard(block, file, dtype):
    """Write one row block (neurons x samples) as an .npy file; returns its row count."""
    block = _stored(np.asarray(block).astype(dtype, copy=False))
    out = np.lib.format.open_memmap(file, mode="w+", dtype=block.dtype, shape=block.shape)
    out[:] = block
    out.flush()
    return block.shape[0]


def write_sharded(A, out_dir, rows_per_shard: int, *, dtype=None) -> ShardedActivations:
    """Write A (neurons x samples) as row shards of `rows_per_shard` neurons, with a manifest.

    Parameters
    ----------
    A : array or dask array of shape (n_neurons, n_samples)
        A dask array is written by the cluster, each shard by the worker that computes it (the
        folder must be on storage the workers share); arrays and memmaps are written here.
    out_dir : path
        Folder for ``manifest.json`` and ``shard-00000.npy``, ...; created if needed.
    rows_per_shard : int
        Neurons per shard file (the last one may hold fewer), e.g. one layer.
    dtype : {"float16", "bfloat16", "float32", "float64"}, optional
        Storage dtype (default A's).

    Returns
    -------
    ShardedActivations
    """
    rows_per_shard = check_int(rows_per_shard, "rows_per_shard", minimum=1)
    dtype = _array_dtype(A.dtype if dtype is None else dtype)
    if dtype.name not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype.name!r}")
    if len(A.shape) != 2 or 0 in A.shape:
        raise ValueError(f"A must be a non-empty 2-D array (neurons x samples), got shape {A.shape}")
    N, M = A.shape
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, N, rows_per_shard))
    files = [f"shard-{i:05d}.npy" for i in range(len(starts))]
    blocks = [A[r0:min(N, r0 + rows_per_shard)] for r0 in starts]
    if type(A).__module__.startswith("dask."):
        import dask

        dask.compute(*[dask.delayed(_write_shard)(b, str(out / f), dtype) for b, f in zip(blocks, files)])
    else:
        for b, f in zip(blocks, files):
            _write_shard(b, out / f, dtype)
    shards = [{"file": f, "layout": "neurons_x_samples", "rows": [r0, min(N, r0 + rows_per_shard)], "cols": [0, M]}
              for r0, f in zip(starts, files)]
    return write_manifest(out, (N, M), dtype, shards)


def zscore(A, stats: ZScore | None = None, *, dtype=np.float32):
    """Per-neuron z-scores of a dask array of activations (neurons x samples), lazily.

    The statistics (float64 mean and population std per neuron, a std below 1e-8 counting as 1,
    as :func:`ulcmod.fit_zscore`) are computed on the cluster from `A` unless `stats` (the
    training statistics, for test samples) is given. Returns ``(stats, A_z)`` with ``A_z`` a dask
    array of `dtype`, computed where A's chunks are.
    """
    if stats is None:
        import dask

        mean, var = dask.compute(A.mean(axis=1, dtype=np.float64), A.var(axis=1, dtype=np.float64))
        bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(var)))
        if bad.size:
            raise ValueError(f"A contains NaN or infinity (first in neuron {int(bad[0])})")
        std = np.sqrt(var)
        std[std < MIN_STD] = 1.0
        stats = ZScore(mean, std)
    elif stats.mean.size != A.shape[0]:
        raise ValueError(f"A has {A.shape[0]} neurons but the statistics have {stats.mean.size}")
    return stats, ((A.astype(np.float64) - stats.mean[:, None]) / stats.std[:, None]).astype(dtype)
