"""Row blocks for passes that stream a large (possibly memory-mapped) matrix, and the header of a
.npy file whose rows are then written block by block."""

from __future__ import annotations

import numpy as np


def row_blocks(n_rows: int, row_bytes: int, block_bytes: int):
    """``(start, stop)`` of consecutive row blocks of about `block_bytes` each (at least one row)."""
    step = max(1, block_bytes // max(1, row_bytes))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


def write_npy_header(f, shape, dtype) -> None:
    """Write the header of a C-ordered .npy array of `shape` and `dtype` to the open binary file `f`;
    its data, row after row, follows from ``f.tell()``."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(int(n) for n in shape)}
    np.lib.format.write_array_header_1_0(f, header)
