"""Activations computed elsewhere, read block by block (what ``ulcmod discover --activations`` reads).

A source holds samples x neurons, as extraction folders store them, one row per prompt of the
dataset in the dataset's order. It can be

* an extraction folder (:func:`ulcmod.extract_activations`), or any folder holding an
  ``activations.npy`` (and optionally ``neurons.npz`` with ``layer`` and ``position`` arrays);
* a ``.npy`` file, memory-mapped;
* an HDF5 dataset (needs h5py): ``FILE.h5`` or ``FILE.h5:GROUP/NAME``;
* a zarr array (needs zarr): ``STORE.zarr`` or ``STORE.zarr:GROUP/NAME``.

Without a name, a file or group holding one 2-D array, or one called ``activations``, gives that
one. An HDF5 or zarr source may carry a layer map as 1-D integer arrays ``layer`` (and
``position``) beside it. Without a layer map every neuron counts as layer 0.

Only the rows asked for are read, a block at a time in the source's order, so a source of any
size is read in bounded memory. ``.npy`` files are read and written with positioned reads and
writes rather than memory maps, so their pages never count in the process's resident memory.
Nothing here needs torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..core._blocks import row_blocks, write_npy_header
from ..core._optional import require

FORMATS = ("extraction", "npy", "hdf5", "zarr")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
_BLOCK_BYTES = 32 << 20  # rows read from a source at a time
_DENSE = 2  # read a contiguous run of rows and select when it is at most this many times the rows wanted


class NpyRows:
    """Rows of a C-ordered ``.npy`` file (samples x neurons) by positioned reads or writes.

    ``array[lo:hi]`` and ``array[index]`` read rows; ``array[positions] = rows`` writes them.
    ``NpyRows.create`` makes a new file of a given shape. Unlike a memory map, the file's pages
    stay in the page cache only, out of the process's resident memory.
    """

    def __init__(self, path, mode: str = "r"):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read(f)
            self.offset = f.tell()
        if fortran_order or len(shape) != 2:
            raise ValueError(f"{self.path} is not a C-ordered 2-D array")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_bytes = self.shape[1] * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY if mode == "r" else os.O_RDWR)

    @classmethod
    def create(cls, path, shape, dtype) -> NpyRows:
        """A new .npy file of `shape` and `dtype` (zeros), open for writing rows."""
        with open(path, "wb") as f:
            write_npy_header(f, shape, dtype)
            f.truncate(f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)
        return cls(path, mode="r+")

    def _read(self, lo: int, hi: int) -> np.ndarray:
        size = (hi - lo) * self.row_bytes
        data = bytearray(size)
        view, done = memoryview(data), 0
        while done < size:  # pread may return less than asked
            n = os.preadv(self._fd, [view[done:]], self.offset + lo * self.row_bytes + done)
            if n <= 0:
                raise OSError(f"{self.path} ends before row {hi}")
            done += n
        return np.frombuffer(data, dtype=self.dtype).reshape(hi - lo, self.shape[1])

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            lo, hi, _ = key.indices(self.shape[0])
            return self._read(lo, max(lo, hi))
        index = np.asarray(key, dtype=np.int64)
        out = np.empty((index.size, self.shape[1]), dtype=self.dtype)
        for k, row in enumerate(index):
            out[k] = self._read(int(row), int(row) + 1)[0]
        return out

    def __setitem__(self, positions, rows) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        for row, values in zip(np.asarray(positions, dtype=np.int64), rows):
            os.pwrite(self._fd, values.data, self.offset + int(row) * self.row_bytes)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _rows_of(path: Path):
    """The .npy file at `path` for reading rows: positioned reads where the platform has them."""
    try:
        return NpyRows(path) if hasattr(os, "preadv") else np.load(path, mmap_mode="r")
    except ValueError:  # Fortran order: a memory map reads it
        return np.load(path, mmap_mode="r")


def _split_spec(spec: str):
    """(path, name inside the file or None) of ``PATH[:NAME]``."""
    if os.path.exists(spec):
        return Path(spec), None
    path, sep, name = spec.rpartition(":")
    if sep and path and os.path.exists(path):
        return Path(path), name.strip("/") or None
    raise ValueError(f"activations {spec!r} do not exist; give an extraction folder, a .npy file, an HDF5 file "
                     f"(FILE.h5[:DATASET]) or a zarr store (STORE.zarr[:ARRAY])")


def _format_of(path: Path) -> str:
    if path.is_dir():
        if (path / "activations.npy").is_file():
            return "extraction"
        if any((path / f).exists() for f in (".zgroup", ".zarray", "zarr.json")) or path.suffix == ".zarr":
            return "zarr"
    elif path.suffix == ".npy":
        return "npy"
    elif path.suffix.lower() in _HDF5_SUFFIXES:
        return "hdf5"
    raise ValueError(f"cannot tell the format of activations {str(path)!r}: expected a folder with "
                     f"activations.npy, a .npy file, an HDF5 file ({', '.join(_HDF5_SUFFIXES)}) or a zarr store")


def _pick(arrays: dict, where: str):
    """The name of the activations among `arrays` (name -> ndim): 'activations', or the only 2-D one."""
    two_d = [k for k, ndim in arrays.items() if ndim == 2]
    if "activations" in two_d:
        return "activations"
    if len(two_d) == 1:
        return two_d[0]
    raise ValueError(f"{where} holds {len(two_d)} 2-D arrays ({sorted(two_d)}); name one as {where}:NAME")


class ActivationSource:
    """An activation array opened for reading rows; see :func:`open_activations`.

    Attributes: ``path``, ``format`` (one of :data:`FORMATS`), ``name`` (inside an HDF5 or zarr
    file), ``shape`` (samples, neurons), ``dtype``, ``layer`` and ``position`` (per neuron, or
    None), ``meta`` (an extraction folder's meta.json, else {}).
    """

    def __init__(self, path: Path, fmt: str, name, array, layer=None, position=None, meta=None, handle=None):
        self.path, self.format, self.name = path, fmt, name
        self._array, self._handle = array, handle
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.layer, self.position, self.meta = layer, position, meta or {}
        if len(self.shape) != 2:
            raise ValueError(f"activations {self.where} have shape {self.shape}; expected (samples, neurons)")
        if self.dtype.kind != "f":
            raise ValueError(f"activations {self.where} have dtype {self.dtype}; expected float16, float32 or "
                             f"float64")
        for what, values in (("layer", layer), ("position", position)):
            if values is not None and np.shape(values) != (self.shape[1],):
                raise ValueError(f"the {what} map of {self.where} has {np.size(values)} entries for "
                                 f"{self.shape[1]} neurons")

    @property
    def where(self) -> str:
        return f"{self.path}:{self.name}" if self.name else str(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        """Close the file behind the source."""
        for handle in (self._handle, self._array):
            if hasattr(handle, "close"):
                handle.close()
        self._handle = None

    def rows(self, index) -> np.ndarray:
        """The rows `index` (increasing sample indices) as an in-memory array."""
        index = np.asarray(index, dtype=np.int64)
        if index.size == 0:
            return np.empty((0, self.shape[1]), dtype=self.dtype)
        lo, hi = int(index[0]), int(index[-1]) + 1
        if hi - lo <= _DENSE * index.size:  # one contiguous read, then the rows wanted
            return np.asarray(self._array[lo:hi])[index - lo]
        if self.format == "zarr":
            return np.asarray(self._array.get_orthogonal_selection((index, slice(None))))
        return np.asarray(self._array[index])

    def neuron_map(self):
        """(layer, position) of every neuron: the source's map, or layer 0 for every neuron."""
        n = self.shape[1]
        layer = np.zeros(n, dtype=np.int32) if self.layer is None else np.asarray(self.layer, dtype=np.int32)
        if self.position is not None:
            return layer, np.asarray(self.position, dtype=np.int32)
        position = np.empty(n, dtype=np.int32)
        for lay in np.unique(layer):  # rank within its layer
            where = np.flatnonzero(layer == lay)
            position[where] = np.arange(where.size)
        return layer, position

    def describe(self) -> dict:
        """What the manifest records about the source."""
        return {"path": str(self.path.resolve()), "format": self.format, "name": self.name,
                "shape": list(self.shape), "dtype": str(self.dtype),
                "layer_map": self.layer is not None}


def _open_extraction_folder(path: Path, fmt: str) -> ActivationSource:
    array = _rows_of(path / "activations.npy")
    meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").is_file() else {}
    layer = position = None
    if (path / "neurons.npz").is_file():
        with np.load(path / "neurons.npz") as f:
            layer = f["layer"] if "layer" in f.files else None
            position = f["position"] if "position" in f.files else None
    if (path / "done.npy").is_file() and not np.load(path / "done.npy").all():
        raise ValueError(f"the extraction in {path} is not finished; rerun it to complete it first")
    return ActivationSource(path, fmt, None, array, layer, position, meta)


def _open_hdf5(path: Path, name) -> ActivationSource:
    h5py = require("h5py", "reading HDF5 activations", "pip install h5py")
    f = h5py.File(path, "r")
    try:
        if name is None:
            name = _pick({k: v.ndim for k, v in f.items() if isinstance(v, h5py.Dataset)}, str(path))
        if name not in f or not isinstance(f[name], h5py.Dataset):
            raise ValueError(f"{path} has no dataset {name!r}")
        group = f[name].parent
        maps = {k: group[k][()] for k in ("layer", "position") if k in group and group[k].ndim == 1}
        return ActivationSource(path, "hdf5", name, f[name], maps.get("layer"), maps.get("position"), handle=f)
    except BaseException:
        f.close()
        raise


def _open_zarr(path: Path, name) -> ActivationSource:
    zarr = require("zarr", "reading zarr activations", "pip install zarr")
    root = zarr.open(str(path), mode="r")
    if hasattr(root, "shape"):  # the store is one array
        if name is not None:
            raise ValueError(f"{path} is a single zarr array; drop ':{name}'")
        return ActivationSource(path, "zarr", None, root)
    if name is None:
        name = _pick({k: v.ndim for k, v in root.arrays()}, str(path))
    try:
        array = root[name]
    except KeyError:
        raise ValueError(f"{path} has no array {name!r}") from None
    parent = root[name.rpartition("/")[0]] if "/" in name else root
    siblings = dict(parent.arrays())
    maps = {k: np.asarray(siblings[k]) for k in ("layer", "position") if k in siblings and siblings[k].ndim == 1}
    return ActivationSource(path, "zarr", name, array, maps.get("layer"), maps.get("position"))


def open_activations(spec) -> ActivationSource:
    """Open the activations named by `spec` (see the module's description) for reading rows.

    Raises ``ValueError`` naming what was expected when `spec` does not exist, has an unknown
    format, holds no single 2-D array, or is not floating point; ``ImportError`` naming the
    package when h5py or zarr is needed but missing.
    """
    path, name = _split_spec(str(spec))
    fmt = _format_of(path)
    if fmt == "extraction":
        if name is not None:
            raise ValueError(f"{path} is a folder; drop ':{name}'")
        return _open_extraction_folder(path, fmt)
    if fmt == "npy":
        return ActivationSource(path, fmt, None, _rows_of(path))
    return _open_hdf5(path, name) if fmt == "hdf5" else _open_zarr(path, name)


def copy_rows(source: ActivationSource, index, out, progress: bool = False) -> None:
    """``out[k] = source row index[k]`` for every k, reading the source in increasing row order
    a block at a time (`out` is an array or memmap of shape (len(index), neurons))."""
    from tqdm.auto import tqdm

    index = np.asarray(index, dtype=np.int64)
    bad = index[(index < 0) | (index >= source.shape[0])]
    if bad.size:
        raise ValueError(f"row {int(bad[0])} is outside the {source.shape[0]} rows of {source.where}")
    order = np.argsort(index, kind="stable")
    row_bytes = source.shape[1] * max(source.dtype.itemsize, np.dtype(out.dtype).itemsize)
    with tqdm(total=int(index.size), desc="activations", unit="sample", disable=not progress) as bar:
        for b0, b1 in row_blocks(index.size, row_bytes, _BLOCK_BYTES):
            picked = order[b0:b1]
            wanted = index[picked]
            unique, inverse = np.unique(wanted, return_inverse=True)  # a row asked for twice is read once
            block = source.rows(unique)
            out[picked] = block if unique.size == wanted.size else block[inverse]
            bar.update(picked.size)


def write_extraction(source: ActivationSource, index, out_dir, *, progress: bool = False, **meta) -> None:
    """Rows `index` of `source`, in that order, as an extraction folder in `out_dir` (the layout
    :func:`~ulcmod.lm.activations.load_activations` reads): float16 sources stay float16, others
    become float32; `meta` is added to meta.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = np.asarray(index, dtype=np.int64)
    dtype = "float16" if source.dtype == np.float16 else "float32"
    acts = NpyRows.create(out / "activations.npy", (index.size, source.shape[1]), dtype)
    try:
        copy_rows(source, index, acts, progress=progress)
    finally:
        acts.close()
    layer, position = source.neuron_map()
    np.savez(out / "neurons.npz", layer=layer, position=position)
    np.save(out / "done.npy", np.ones(index.size, dtype=bool))
    layers, widths = np.unique(layer, return_counts=True)
    info = {"source": source.describe(), "layers": layers.tolist(), "widths": widths.tolist(),
            "dtype": dtype, "n_samples": int(index.size), "n_neurons": int(source.shape[1]), **meta}
    (out / "meta.json").write_text(json.dumps(info, indent=1))
