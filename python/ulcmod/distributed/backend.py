"""IterD on a Dask cluster: a backend whose neuron table lives on the workers.

:class:`ClusterActivations` places the row blocks of a dask array of activations (neurons x
samples) on the workers of a ``distributed`` cluster, grouped into contiguous row ranges, one
*part* per worker. :class:`DaskBackend` implements the core's backend protocol
(:mod:`ulcmod.core._backend`) on top of them; the core's sweep (its default, parallel order) then runs
unchanged on the client:

* the neuron table R (N x K) is sharded: each part (a ``distributed`` Actor,
  :class:`~ulcmod.distributed._part.Part`) holds its rows of A and of R, and copies of its
  neurons' and of all samples' labels. A neuron-sweep round sends each part the moves of its
  own neurons and the round's move rule, and each part returns only its candidate rows (those
  whose padded margin is positive), with their K entries;
* the sample table C (M x K) lives on the client, as the sum of the parts' partials; after a
  neuron sweep each part that moved neurons sends its change of C (M x K, or the moved rows of
  A when fewer bytes), and the sample sweep runs on the client;
* D of the neuron sweep is the sum of the parts' shares, returned with the refresh that sends
  them the last sample sweep's moves.

Traffic of one iteration, with W parts, K modules, M samples, rho rounds of the neuron sweep,
m sample moves, n neuron moves and c candidate rows reported (bytes, arrays only)::

    to the parts     W * 16 m  +  16 n  +  rho * W * (8 K^2 + K + 8)
    from the parts   W * 8  +  c * 8 (K + 1)  +  sum over parts with moves of min(8 M K, n_w M b)

(b: bytes per element of A). Nothing grows with N except through n and c, the neurons that
move or nearly move, whose K table entries the core must see to re-score them exactly. The
initialisation moves more: the neurons' labels (4 N bytes) once, and R itself (8 N K bytes)
once when the core derives the neuron labels from it and checks it for NaN/inf. The "random"
and "sequential" orders visit every neuron on the client and gather R every iteration: they
run, but only the parallel order is distributed.

Faults: a part whose worker is lost (its Actor's future errs, or a call fails with a comm error)
is rebuilt: a new Actor, placed by the scheduler on a live worker, computes the part's rows of A
again from their graph (re-reading the shard files), receives the current labels (known on the
client) and rebuilds its R from them; then the failed call is retried, and C is rebuilt from all
parts' partials, since the lost part's unreported moves are gone. The sweep carries on from the
same state, so the run ends with a certified result.
"""

from __future__ import annotations

import numpy as np

from .. import _core
from ..core._backend import Backend
from ..core._validation import check_activations
from ._part import BlockGraph, Part

_MAX_RECOVERIES = 3  # times in a row one part may be rebuilt before the call gives up
_NO_MOVES = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32))


def default_client():
    """The current ``distributed`` client, or a ValueError saying how to start one."""
    try:
        from distributed import get_client
    except ImportError as err:
        raise ImportError("running on a Dask cluster needs dask.distributed: pip install 'ulcmod[dask]'") from err
    try:
        return get_client()
    except ValueError as err:
        raise ValueError(
            "A is a dask array, which IterD runs on a Dask cluster, but no Dask client is running; "
            "start one first: `from dask.distributed import Client, LocalCluster; "
            "client = Client(LocalCluster())` on this machine, or `client = Client('tcp://scheduler:8786')` "
            "for an existing cluster (or pass numpy.asarray(A) to run in memory)"
        ) from err


def payload_nbytes(obj) -> int:
    """Bytes of the arrays in a call's arguments or result (8 per scalar, 0 for None; a move
    rule counts its K x K matrix, its K flags and its slack)."""
    if obj is None:
        return 0
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, _core.MoveRule):
        return obj.c.nbytes + obj.leave.nbytes + 8
    if isinstance(obj, (tuple, list)):
        return sum(payload_nbytes(x) for x in obj)
    return 0 if isinstance(obj, str) else 8


def _split_rows(chunks, n_parts):
    """Contiguous groups of row chunks, at most n_parts, of about equal numbers of rows."""
    bounds = np.concatenate([[0], np.cumsum(chunks)])
    n_parts = max(1, min(n_parts, len(chunks)))
    cuts = [0]
    for p in range(1, n_parts):
        cut = int(np.abs(bounds - bounds[-1] * p / n_parts).argmin())
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(len(chunks))
    return [(cuts[i], cuts[i + 1]) for i in range(len(cuts) - 1) if cuts[i + 1] > cuts[i]]


def _concat_moves(moves):
    """One (index, from, to) triple of arrays from a list of them, in order."""
    if not moves:
        return _NO_MOVES
    return tuple(np.concatenate(x) for x in zip(*moves))


class ClusterActivations:
    """A dask array of activations (neurons x samples), split into parts for the workers.

    Each part is a contiguous group of row chunks (about one part per worker), whose graph the
    part's worker computes itself: shard files and zarr chunks are read where they are used, and
    nothing is shipped from the client (except by a dask array made from an in-memory array,
    whose graph carries the part's rows). ``shape``, ``dtype`` and indexing (which gathers the
    selected rows to the client, for the initialisation's PCA) let :func:`ulcmod.iterd` treat it
    like an array.

    Parameters
    ----------
    A : dask.array.Array of shape (n_neurons, n_samples)
        float16, float32 or float64. Its row chunks (e.g. one per shard file or layer) are the
        units placed on workers.
    client : distributed.Client, optional
        Default: the current client (:func:`distributed.get_client`).
    """

    def __init__(self, A, client=None):
        check_activations(np.broadcast_to(np.zeros((), dtype=A.dtype), A.shape))
        self.client = default_client() if client is None else client
        self.array = A.rechunk({1: -1})
        self.shape, self.dtype, self.ndim = self.array.shape, self.array.dtype, 2
        workers = self.client.nthreads()  # every worker (scheduler_info may list only a few)
        if not workers:
            raise ValueError("the Dask cluster has no workers; start some (e.g. cluster.scale(2)) and retry")
        chunks = self.array.chunks[0]
        blocks = self.array.to_delayed()[:, 0]
        bounds = np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)
        self.parts = [(int(bounds[c0]), int(bounds[c1]), BlockGraph(list(blocks[c0:c1])))
                      for c0, c1 in _split_rows(chunks, len(workers))]

    def __getitem__(self, key) -> np.ndarray:
        """The selected entries, computed on the cluster and gathered to the client."""
        return np.asarray(self.client.compute(self.array[key]).result())

    def backend(self, K: int) -> DaskBackend:
        """A fresh IterD backend over these activations (one per IterD run)."""
        return DaskBackend(self, K)


class _PartHandle:
    """The client's view of one part: its rows, its Actor, and the label changes it has not seen."""

    def __init__(self, start, stop, graph):
        self.start, self.stop, self.graph = start, stop, graph
        self.future = self.actor = None
        self.neuron_moves = []  # (local index, from, to), not yet sent
        self.sample_moves = []  # (index, from, to), not yet sent
        self.reported = True    # every neuron move of this part is in the client's sample table

    def lost(self) -> bool:
        return self.future is None or self.future.status != "finished"


class DaskBackend(Backend):
    """The IterD backend protocol (:mod:`ulcmod.core._backend`) on a Dask cluster.

    Made by :meth:`ClusterActivations.backend`; pass it to ``_core.IterDState`` in place of A.
    ``bytes_sent`` and ``bytes_received`` count the array payload of every call (see the module
    docstring for their formula), ``candidate_rows`` the neuron rows the parts reported and
    ``recoveries`` the parts rebuilt after a lost worker.
    """

    def __init__(self, source: ClusterActivations, K: int):
        self.source, self._K = source, K
        self.client = source.client
        self.parts = [_PartHandle(start, stop, graph) for start, stop, graph in source.parts]
        self._stops = np.array([p.stop for p in self.parts])
        self.u = self.s = self.C = None
        self._c_stale = True   # C must be rebuilt from every part's partial
        self._diagonal = None  # D of the neuron table, when known for the current labels
        self.bytes_sent = self.bytes_received = self.candidate_rows = 0
        self.recoveries = 0
        self._full_scans = 0
        # Unrestricted: the scheduler spreads actors over the workers (fewest actors first).
        futures = [self.client.submit(Part, p.graph, K, actor=True, pure=False) for p in self.parts]
        for p, future in zip(self.parts, futures):
            p.future, p.actor = future, future.result()

    def name(self) -> str:
        return "dask"

    def K(self) -> int:  # noqa: N802 - the protocol's name
        return self._K

    def rows(self, side: str) -> int:
        return self.source.shape[0 if side == "neurons" else 1]

    # -- calls to the parts, with recovery -------------------------------------------------

    def _call(self, method, parts, args_of=lambda p: ()):
        """Call ``method`` on every part in `parts` at once; results in the same order.

        ``args_of(part)`` gives each part's arguments when its call is made (again after a
        recovery, when the rebuilt part has already been given every label change).
        """
        results, todo = {}, list(parts)
        for _ in range(_MAX_RECOVERIES + 1):
            calls = {}
            for p in todo:
                if p.lost():
                    self._recover(p)
                args = args_of(p)
                self.bytes_sent += payload_nbytes(args)
                calls[p] = getattr(p.actor, method)(*args)
            failed = []
            for p, call in calls.items():
                try:
                    results[p] = call.result()
                except Exception as err:  # noqa: BLE001 - sorted into lost workers and errors below
                    if not (isinstance(err, OSError) or p.lost()):
                        raise
                    failed.append((p, err))
            for p, _ in failed:
                self._recover(p)
            todo = [p for p, _ in failed]
            if not todo:
                out = [results[p] for p in parts]
                self.bytes_received += payload_nbytes(out)
                return out
        raise RuntimeError(
            f"the workers holding rows {[(p.start, p.stop) for p in todo]} of A were lost "
            f"{_MAX_RECOVERIES + 1} times in a row during {method!r}; check the cluster's health"
        ) from failed[-1][1]

    def _recover(self, p: _PartHandle) -> None:
        """Rebuild a lost part from its row blocks and the client's current labels."""
        for _ in range(_MAX_RECOVERIES + 1):
            if p.future is not None:
                p.future.release()
            p.future = self.client.submit(Part, p.graph, self._K, actor=True, pure=False)
            try:
                p.actor = p.future.result()
                u = None if self.u is None else self.u[p.start:p.stop]
                p.actor.sync(u, self.s).result()
                break
            except OSError:
                continue
        else:
            raise RuntimeError(f"rows {p.start}-{p.stop} of A could not be placed on a live worker")
        p.neuron_moves, p.sample_moves, p.reported = [], [], True
        self._c_stale = True
        self.recoveries += 1

    # -- the protocol ----------------------------------------------------------------------

    def set_labels(self, side: str, labels) -> None:
        labels = np.array(labels, dtype=np.int32)
        if side == "neurons":
            self.u = labels
            self._call("set_neurons", self.parts, lambda p: (labels[p.start:p.stop],))
            for p in self.parts:
                p.neuron_moves = []
            self._c_stale = True
        else:
            self.s = labels
            self._call("set_samples", self.parts, lambda p: (labels,))
            for p in self.parts:
                p.sample_moves = []
        self._diagonal = None

    def move(self, side: str, index, from_, to) -> None:
        index = np.asarray(index, dtype=np.int64)
        from_, to = np.asarray(from_, dtype=np.int32), np.asarray(to, dtype=np.int32)
        if side == "samples":
            self.s[index] = to
            for p in self.parts:
                p.sample_moves.append((index, from_, to))
            return
        self.u[index] = to
        self._diagonal = None
        owner = np.searchsorted(self._stops, index, side="right")
        for k in np.unique(owner):
            p, mine = self.parts[k], owner == k
            p.neuron_moves.append((index[mine] - p.start, from_[mine], to[mine]))
            p.reported = False

    def refresh(self, side: str) -> None:
        if side == "neurons":
            shares = self._call("refresh", self.parts, lambda p: _concat_moves(p.sample_moves))
            for p in self.parts:
                p.sample_moves = []
            self._diagonal = None if any(d is None for d in shares) else float(sum(shares))
            return
        while True:
            if self.C is None or self._c_stale:
                self._c_stale = False
                partials = self._call("sample_partial", self.parts, lambda p: _concat_moves(p.neuron_moves))
                if not self._c_stale:
                    self.C = np.sum(partials, axis=0)
            else:
                changed = [p for p in self.parts if not p.reported]
                changes = self._call("sample_change", changed, lambda p: _concat_moves(p.neuron_moves))
                if not self._c_stale:
                    for change in changes:
                        self._apply_sample_change(change)
            for p in self.parts:
                p.neuron_moves, p.reported = [], True
            if not self._c_stale:
                return

    def _apply_sample_change(self, change) -> None:
        if change is None:
            return
        if change[0] == "delta":
            self.C += change[1]
        else:
            _, rows, frm, dst = change
            _core.update_table(rows.T, np.arange(rows.shape[0], dtype=np.int64), frm, dst, self.C)

    def diagonal(self, side: str) -> float:
        if side == "samples":
            return float(self.C[np.arange(self.C.shape[0]), self.s].sum())
        if self._diagonal is None:
            self._diagonal = float(sum(self._call("diagonal", self.parts)))
        return self._diagonal

    def candidates(self, side: str, rule, full: bool):
        self._full_scans += 1
        if side == "samples":
            return _core.scan_table(self.C, self.s, rule)
        found = self._call("candidates", self.parts, lambda p: (*_concat_moves(p.neuron_moves), rule))
        for p in self.parts:
            p.neuron_moves = []
        rows = np.concatenate([r + p.start for p, (r, _) in zip(self.parts, found)])
        self.candidate_rows += rows.size
        return rows, np.concatenate([e for _, e in found]).reshape(-1, self._K)

    def host_table(self, side: str) -> np.ndarray:
        if side == "samples":
            return self.C
        return np.ascontiguousarray(np.vstack(self._call("table", self.parts)))

    def stats(self) -> dict:
        per_part = self._call("stats", self.parts)
        return {
            "builds": sum(rows for rows, _ in per_part) // self.source.shape[0],
            "update_reads": sum(reads for _, reads in per_part),
            "full_scans": self._full_scans,
        }
