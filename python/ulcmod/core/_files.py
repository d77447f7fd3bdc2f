"""Reading and writing the arrays ulcmod stores: atomic writes, and reads that name the file.

A write goes to a temporary file in the same folder (named after the process, so two writers
never share one), is flushed to disk, then renamed over the target: a reader, or a run
interrupted at any moment, sees the old file or the new one, never half of one. A read that
fails says which file is damaged and how; it never suggests ``allow_pickle`` (ulcmod stores no
pickles, and loading one from a damaged or foreign file is unsafe).
"""

from __future__ import annotations

import json
import os
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def atomic_file(path, mode: str = "wb"):
    """An open temporary file that replaces `path` when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_npy(path, array) -> None:
    """``np.save`` to `path`, atomically."""
    with atomic_file(path) as f:
        np.save(f, np.asanyarray(array), allow_pickle=False)


def save_npz(path, **arrays) -> None:
    """``np.savez`` to `path`, atomically."""
    with atomic_file(path) as f:
        np.savez(f, **arrays)


def write_text(path, text: str) -> None:
    """Write `text` (UTF-8) to `path`, atomically."""
    with atomic_file(path, "w") as f:
        f.write(text)


def npy_header(path) -> tuple:
    """``(shape, fortran_order, dtype, data offset)`` of a ``.npy`` file; ValueError naming it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            return shape, fortran, dtype, f.tell()
    except FileNotFoundError:
        raise ValueError(f"{path} is missing") from None
    except (ValueError, OSError, EOFError, SyntaxError) as err:
        raise ValueError(f"{path} is not a valid .npy file ({_reason(err)}); it is damaged or was not written by "
                         f"ulcmod") from None


def read_npy(path, *, mmap_mode=None, dtype=None, shape=None) -> np.ndarray:
    """The array in `path` (memory-mapped with `mmap_mode`), checked against the `dtype` and
    `shape` expected; ValueError naming the file when it is missing, damaged or truncated."""
    path = Path(path)
    want_shape, fortran, stored, offset = npy_header(path)
    if stored.hasobject:
        raise ValueError(f"{path} holds Python objects, not numbers; it was not written by ulcmod")
    size, need = path.stat().st_size, offset + int(np.prod(want_shape)) * stored.itemsize
    if size < need:
        raise ValueError(f"{path} is truncated: {size} bytes where its header announces {need} "
                         f"(a {want_shape} {stored} array)")
    if dtype is not None and stored != np.dtype(dtype):
        raise ValueError(f"{path} holds {stored} values, expected {np.dtype(dtype)}")
    if shape is not None and tuple(want_shape) != tuple(shape):
        raise ValueError(f"{path} holds an array of shape {tuple(want_shape)}, expected {tuple(shape)}")
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path} cannot be read ({_reason(err)}); it is damaged") from None


@contextmanager
def read_npz(path):
    """The open ``.npz`` archive in `path`; ValueError naming the file when it is damaged."""
    path = Path(path)
    try:
        fid = open(path, "rb")  # ours to close: np.load leaks it when the archive is damaged
    except FileNotFoundError:
        raise ValueError(f"{path} is missing") from None
    with fid:
        try:
            f = np.load(fid, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path} is not a valid .npz file ({_reason(err)}); it is damaged or truncated") from None
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError(f"{path} is a .npy array, not a .npz archive")
        try:
            yield _CheckedNpz(f, path)
        finally:
            f.close()


class _CheckedNpz:
    """An NpzFile whose member reads name the file when a member is damaged or missing."""

    def __init__(self, f, path):
        self._f, self._path = f, path
        self.files = f.files

    def __contains__(self, key) -> bool:
        return key in self._f.files

    def __getitem__(self, key):
        if key not in self._f.files:
            raise ValueError(f"{self._path} has no array {key!r} (it has {self._f.files})")
        try:
            return self._f[key]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{self._path}: array {key!r} cannot be read ({_reason(err)}); the file is damaged or "
                             f"truncated") from None


def read_json(path):
    """The JSON value in `path`; ValueError naming the file (and line) when it is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} is missing") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 text file; it is damaged") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}, line {err.lineno}: not valid JSON ({err.msg}); the file is damaged or was "
                         f"edited") from None


def _reason(err) -> str:
    """An error's text, without NumPy's advice to allow pickles (never safe for a damaged file)."""
    text = str(err)
    if "pickle" in text:
        return "it does not start with the .npy magic bytes"
    return text or type(err).__name__
