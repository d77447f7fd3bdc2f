"""The worker side of IterD on a Dask cluster: one row range of A and its part of the tables.

A :class:`Part` lives on a worker as a ``distributed`` Actor. It holds its rows of A (computed
on that worker from the dask array's graph: memory-mapped slices of shard files, read in place),
copies of its neurons' labels and of every sample's label, and its rows of the neuron table
``R_w = build_table(A_w, s, K)`` (float64). The client sends it only label changes and the move
rule of each round, and receives only candidate rows and M x K sample-table changes, so no
message grows with the number of neurons (see :mod:`ulcmod.distributed.backend`).
"""

from __future__ import annotations

import numpy as np

from .. import _core


class BlockGraph:
    """The dask graph of consecutive row blocks of A, shipped as it is to the worker computing it.

    Dask would compute a dask collection given as a task's argument somewhere on the cluster
    and move the result; wrapped in this object, the graph reaches the part's worker, which
    computes it itself (reading shard files or zarr chunks from storage). A lost part is then
    rebuilt anywhere from the same graph.
    """

    def __init__(self, blocks):
        import dask

        self.blocks = dask.optimize(*blocks)  # culled: only what these blocks need

    def compute(self) -> list:
        """The row blocks (arrays, rows_b x M), computed in this process."""
        import dask

        return list(dask.compute(*self.blocks, scheduler="sync"))


class Part:
    """Consecutive rows of A on one worker, with its label copies and its rows of R.

    Parameters
    ----------
    graph : BlockGraph
        The part's row blocks of A (rows_b x M each), computed on this worker.
    K : int
        The number of modules.
    """

    def __init__(self, graph, K):
        self.blocks = graph.compute()
        self.bounds = np.concatenate([[0], np.cumsum([b.shape[0] for b in self.blocks])]).astype(np.int64)
        self.M = self.blocks[0].shape[1]
        self.K = K
        self.u = None      # labels of this part's neurons
        self.s = None      # labels of every sample
        self.R = None      # this part's rows of the neuron table; None: rebuild when needed
        self.moved = []    # neuron moves (local index, from, to) not yet reported to the sample table
        self.rows_built = 0  # rows of A read by full builds of R or of the sample-table partial
        self.update_reads = 0  # elements of A read by incremental updates of R

    def _blocks(self):
        """(first local row, last local row + 1, block) of every row block."""
        return zip(self.bounds[:-1], self.bounds[1:], self.blocks)

    def sync(self, u, s):
        """Replace both label copies (a new or recovered part); R is rebuilt when next needed.

        None stands for labels the client does not know yet (before the core sets them).
        """
        self.set_neurons(u)
        if s is not None:
            self.set_samples(s)

    def set_neurons(self, u):
        """Replace this part's neuron labels (None: not known yet)."""
        self.u = None if u is None else np.array(u, dtype=np.int32)
        self.moved = []

    def set_samples(self, s):
        """Replace the sample labels; R is rebuilt when next needed."""
        self.s = np.array(s, dtype=np.int32)
        self.R = None

    def table(self):
        """This part's rows of R (rows x K float64), built from the sample labels if stale."""
        if self.R is None:
            self.R = np.empty((int(self.bounds[-1]), self.K))
            for r0, r1, block in self._blocks():
                self.R[r0:r1] = _core.build_table(block, self.s, self.K)
            self.rows_built += self.R.shape[0]
        return self.R

    def refresh(self, index, from_, to):
        """Apply sample moves to the sample labels and R; return this part's share of D.

        The moves update R in place when that reads less of A than a rebuild (the core's cost
        model), otherwise R is rebuilt. The share of D is ``sum_r R[r, u[r]]``, or None while
        the neuron labels are not known (the core derives them from R at initialisation).
        """
        if index.size:
            self.s[index] = to
            if self.R is not None:
                if all(_core.update_is_cheaper(b, index.size) for b in self.blocks):
                    for r0, r1, block in self._blocks():
                        _core.update_table(block, index, from_, to, self.R[r0:r1])
                    self.update_reads += index.size * int(self.bounds[-1])
                else:
                    self.R = None
        return self.diagonal() if self.u is not None else None

    def diagonal(self):
        """This part's share of the neuron sweep's D: ``sum_r R[r, u[r]]``."""
        R = self.table()
        return float(R[np.arange(R.shape[0]), self.u].sum())

    def _apply_neuron_moves(self, index, from_, to):
        if index.size:
            self.u[index] = to
            self.moved.append((index, from_, to))

    def candidates(self, index, from_, to, rule):
        """Apply the neuron moves of the last round, then scan R under the round's move rule
        (a ``_core.MoveRule``) with the core's own scan.

        Returns the local indices of the rows that may improve and their R entries.
        """
        self._apply_neuron_moves(index, from_, to)
        return _core.scan_table(self.table(), self.u, rule)

    def sample_change(self, index, from_, to):
        """Apply neuron moves, then report every move not yet reported, for the sample table.

        Returns None (no moves), ``("rows", A_moved, from, to)`` with the moved neurons' rows of
        A (moves x M, A's dtype) when that is smaller than the alternative, or
        ``("delta", D)`` with D (M x K float64) the change of this part's sample-table partial.
        Both are independent of the number of neurons.
        """
        self._apply_neuron_moves(index, from_, to)
        if not self.moved:
            return None
        idx, frm, dst = (np.concatenate(x) for x in zip(*self.moved))
        self.moved = []
        itemsize = self.blocks[0].itemsize
        if idx.size * itemsize < 8 * self.K:
            block_of = np.searchsorted(self.bounds, idx, side="right") - 1
            rows = np.stack([self.blocks[b][i - self.bounds[b]] for b, i in zip(block_of, idx)])
            return ("rows", rows, frm, dst)
        delta = np.zeros((self.M, self.K))
        for r0, r1, block in self._blocks():
            inside = (idx >= r0) & (idx < r1)
            if inside.any():
                _core.update_table(block.T, idx[inside] - r0, frm[inside], dst[inside], delta)
        return ("delta", delta)

    def sample_partial(self, index, from_, to):
        """Apply neuron moves, then return this part's whole sample-table partial (M x K)."""
        self._apply_neuron_moves(index, from_, to)
        self.moved = []
        C = np.zeros((self.M, self.K))
        for r0, r1, block in self._blocks():
            C += _core.build_table(block.T, self.u[r0:r1], self.K)
        self.rows_built += int(self.bounds[-1])
        return C

    def stats(self):
        """(rows of A read by full table builds, elements read by incremental updates)."""
        return self.rows_built, self.update_reads
