"""Row blocks for passes that stream a large (possibly memory-mapped) matrix."""

from __future__ import annotations


def row_blocks(n_rows: int, row_bytes: int, block_bytes: int):
    """``(start, stop)`` of consecutive row blocks of about `block_bytes` each (at least one row)."""
    step = max(1, block_bytes // max(1, row_bytes))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)
