"""The IterD backend protocol, for backends written in Python.

``_core.IterDState(backend, K, ...)`` accepts, in place of an activation array, any object with
the methods below (the C++ seam ``cpp/backend.hpp`` forwards each call to it under the GIL).
A backend holds the activations ``A`` (neurons x samples) wherever it likes (on cluster
workers, for example), a copy of both sides' labels, and the two block-sum tables

    table("neurons") = R, N x K: R[i, k] = sum of A[i, j] over samples j in module k
    table("samples") = C, M x K: C[j, k] = sum of A[i, j] over neurons i in module k

The sweep itself, the module sizes and the exact acceptance of every move stay in the core, so
a backend only computes sums and scores rows; it can over-report candidate rows (the core
re-scores each one exactly) but must never miss one.
"""

from __future__ import annotations

import numpy as np

SIDES = ("neurons", "samples")


def other_side(side: str) -> str:
    """The side whose labels the table of ``side`` is summed over."""
    return "samples" if side == "neurons" else "neurons"


class Backend:
    """Base class documenting the protocol; subclasses implement every method."""

    def name(self) -> str:
        """A short name, reported by results (e.g. ``"dask"``)."""
        raise NotImplementedError

    def K(self) -> int:  # noqa: N802 - the number of modules, named as in the paper
        """The number of modules."""
        raise NotImplementedError

    def rows(self, side: str) -> int:
        """N for ``"neurons"``, M for ``"samples"``."""
        raise NotImplementedError

    def set_labels(self, side: str, labels: np.ndarray) -> None:
        """Replace one side's labels (int32); the other side's table is rebuilt when refreshed."""
        raise NotImplementedError

    def move(self, side: str, index: np.ndarray, from_: np.ndarray, to: np.ndarray) -> None:
        """Rows ``index`` of ``side`` moved from ``from_`` to ``to`` (in this order): update the
        label copy and queue the change for the other side's table."""
        raise NotImplementedError

    def refresh(self, side: str) -> None:
        """Bring ``table(side)`` up to date with the other side's labels."""
        raise NotImplementedError

    def diagonal(self, side: str) -> float:
        """After refresh: ``sum_r table(side)[r, label(r)]`` in float64."""
        raise NotImplementedError

    def candidates(self, side: str, rule, full: bool):
        """After refresh: ``(rows, entries)``, the rows of ``side`` that may improve under
        ``rule`` (a ``_core.MoveRule``) in ascending order, and their table rows
        (``len(rows) x K`` float64). ``_core.scan_table(table, labels, rule)`` computes this for
        a table held in memory. ``full`` says the table changed since the last call."""
        raise NotImplementedError

    def host_table(self, side: str) -> np.ndarray:
        """After refresh: ``table(side)`` as a C-contiguous float64 array (rows x K)."""
        raise NotImplementedError

    def stats(self) -> dict:
        """Work done: ``builds`` (full passes over A), ``update_reads`` (elements read by
        incremental updates), ``full_scans``, ``partial_scans``; missing keys count as 0."""
        return {}
